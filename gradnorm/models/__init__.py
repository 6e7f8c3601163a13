"""Backbones: shared trunk + one head per task, each chosen by its ``conf/model/<name>.yaml`` (``_target_``)."""

from gradnorm.models.base import MultiTaskModel
from gradnorm.models.fcn import FCN
from gradnorm.models.mlp import MLP
from gradnorm.models.mtan import MTAN
from gradnorm.models.multilenet import MultiLeNet
from gradnorm.models.resnet import ThinResNet
from gradnorm.models.segnet import SegNet

__all__ = ["FCN", "MLP", "MTAN", "MultiLeNet", "MultiTaskModel", "SegNet", "ThinResNet"]
