"""Backbones: shared trunk + one head per task, chosen by name or by Hydra ``_target_``."""

from gradnorm.models.base import MODELS, MultiTaskModel, create_model, register_model
from gradnorm.models.mlp import MLP

__all__ = ["MLP", "MODELS", "MultiTaskModel", "create_model", "register_model"]
