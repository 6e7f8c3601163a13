"""Data sets: each yields (inputs, {task: target}) batches and names its tasks.

NYUv2 and MultiMNIST are imported when first named (``from gradnorm.data import NYUv2``): their tasks'
metrics need torchmetrics, which the toy never imports.
"""

from importlib import import_module

from gradnorm.data.base import InMemoryData, MultiTaskData
from gradnorm.data.toy import ToyRegression

#: name -> the module that defines it, imported on first use
LAZY = {"MultiMNIST": "multimnist", "NYUv2": "nyuv2"}

__all__ = ["InMemoryData", "MultiMNIST", "MultiTaskData", "NYUv2", "ToyRegression"]


def __getattr__(name: str):
    if name in LAZY:
        return getattr(import_module(f"{__name__}.{LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
