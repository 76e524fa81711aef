"""gradnas: differentiable neural architecture search on one PyTorch core."""
__version__ = "0.1.0"


def __getattr__(name: str):
    # ``gradnas.load_model`` is imported on first use, so ``import gradnas`` alone stays light
    if name == "load_model":
        from .models.saved import load_model
        return load_model
    raise AttributeError(f"module 'gradnas' has no attribute {name!r}")
