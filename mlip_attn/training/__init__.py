"""Training: config, datasets, loss, EMA, LR schedule, checkpoints, DDP, evaluation."""
from .config import ConfigError, load_config
from .evaluate import evaluate
from .trainer import FitError, FitResult, fit

__all__ = ["ConfigError", "load_config", "evaluate", "FitError", "FitResult", "fit"]
