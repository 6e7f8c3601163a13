"""Tasks: one small module per task with its loss and metrics."""

from gradnorm.tasks.base import DELTA_M_CONVENTIONS, Task, WeightedMean, delta_m, delta_m_all, delta_m_by_task
from gradnorm.tasks.classification import Classification
from gradnorm.tasks.depth import Depth
from gradnorm.tasks.normals import Normals
from gradnorm.tasks.regression import Regression
from gradnorm.tasks.segmentation import Segmentation

__all__ = ["DELTA_M_CONVENTIONS", "Classification", "Depth", "Normals", "Regression", "Segmentation", "Task", "WeightedMean", "delta_m", "delta_m_all", "delta_m_by_task"]
