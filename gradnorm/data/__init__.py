"""Data sets: each yields (inputs, {task: target}) batches and names its tasks."""

from gradnorm.data.base import InMemoryData, MultiTaskData
from gradnorm.data.multimnist import MultiMNIST
from gradnorm.data.nyuv2 import NYUv2
from gradnorm.data.toy import ToyRegression

__all__ = ["InMemoryData", "MultiMNIST", "MultiTaskData", "NYUv2", "ToyRegression"]
