"""Data sets: each yields (inputs, {task: target}) batches and names its tasks."""

from gradnorm.data.base import InMemoryData, MultiTaskData
from gradnorm.data.toy import ToyRegression

__all__ = ["InMemoryData", "MultiTaskData", "ToyRegression"]
