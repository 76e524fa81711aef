"""Training, evaluating and exporting found architectures (docs/methods.md §1.1, §1.2, §5.3 recipes)."""
from ..models.saved import load_model, read_model
from .evaluate import count_macs, evaluate, evaluate_saved
from .export import FORMATS, export_model
from .recipes import RECIPES, TrainConfig, resolve_train_config
from .trainer import TrainResult, Trainer, train

__all__ = ["FORMATS", "RECIPES", "TrainConfig", "TrainResult", "Trainer", "count_macs", "evaluate", "evaluate_saved",
           "export_model", "load_model", "read_model", "resolve_train_config", "train"]
