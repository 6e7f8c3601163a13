"""Backbones: shared trunk + one head per task, chosen by name or by Hydra ``_target_``."""

from gradnorm.models.base import MODELS, MultiTaskModel, create_model, register_model
from gradnorm.models.fcn import FCN
from gradnorm.models.mlp import MLP
from gradnorm.models.resnet import ThinResNet
from gradnorm.models.segnet import SegNet

__all__ = ["FCN", "MLP", "MODELS", "MultiTaskModel", "SegNet", "ThinResNet", "create_model", "register_model"]
