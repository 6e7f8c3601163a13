"""Tasks: one small module per task with its loss and metrics."""

from gradnorm.tasks.base import Task, WeightedMean
from gradnorm.tasks.regression import Regression

__all__ = ["Regression", "Task", "WeightedMean"]
