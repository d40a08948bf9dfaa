"""Potentials: build from a config, save and load the model file."""
from .builder import build_model, resolve_model_config
from .domain import domain_statistics
from .model_file import ModelFileError, load_model, save_model
from .potential import Potential

__all__ = ["Potential", "build_model", "resolve_model_config", "load_model", "save_model",
           "ModelFileError", "domain_statistics"]
