"""Backbones: shared trunk + one head per task, each chosen by its ``conf/model/<name>.yaml`` (``_target_``).

The backbones built on torchvision (FCN, SegNet, ThinResNet), which takes seconds to import, are imported
when first named (``from gradnorm.models import SegNet``), so that the toy's MLP never pays it.
"""

from gradnorm.lazy import lazy_attributes
from gradnorm.models.base import MultiTaskModel
from gradnorm.models.mlp import MLP
from gradnorm.models.mtan import MTAN
from gradnorm.models.multilenet import MultiLeNet

#: name -> the module that defines it, imported on first use
LAZY = {"FCN": "fcn", "SegNet": "segnet", "ThinResNet": "resnet"}

__all__ = ["FCN", "MLP", "MTAN", "MultiLeNet", "MultiTaskModel", "SegNet", "ThinResNet"]

__getattr__ = lazy_attributes(__name__, LAZY)
