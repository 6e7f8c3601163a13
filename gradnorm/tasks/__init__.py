"""Tasks: one small module per task with its loss and metrics."""

from gradnorm.tasks.base import Task, WeightedMean, delta_m
from gradnorm.tasks.depth import Depth
from gradnorm.tasks.normals import Normals
from gradnorm.tasks.regression import Regression
from gradnorm.tasks.segmentation import Segmentation

__all__ = ["Depth", "Normals", "Regression", "Segmentation", "Task", "WeightedMean", "delta_m"]
