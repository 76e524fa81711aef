"""gradnas: differentiable neural architecture search on one PyTorch core."""
__version__ = "0.1.0"
