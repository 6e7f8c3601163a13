"""Data sets: each yields (inputs, {task: target}) batches and names its tasks.

NYUv2 and MultiMNIST are imported when first named (``from gradnorm.data import NYUv2``): their tasks'
metrics need torchmetrics, which the toy never imports.
"""

from gradnorm.data.base import InMemoryData, MultiTaskData
from gradnorm.data.toy import ToyRegression
from gradnorm.lazy import lazy_attributes

#: name -> the module that defines it, imported on first use
LAZY = {"MultiMNIST": "multimnist", "NYUv2": "nyuv2"}

__all__ = ["InMemoryData", "MultiMNIST", "MultiTaskData", "NYUv2", "ToyRegression"]

__getattr__ = lazy_attributes(__name__, LAZY)
