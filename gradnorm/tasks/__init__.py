"""Tasks: one small module per task with its loss and metrics.

The tasks that measure with torchmetrics (classification, depth, normals, segmentation), which takes
seconds to import, are imported when first named (``from gradnorm.tasks import Depth``), so that the toy
never pays it.
"""

from gradnorm.lazy import lazy_attributes
from gradnorm.tasks.base import (
    DELTA_M_CONVENTIONS,
    NoMetrics,
    Task,
    WeightedMean,
    delta_m,
    delta_m_all,
    delta_m_by_task,
)
from gradnorm.tasks.regression import Regression

#: name -> the module that defines it, imported on first use
LAZY = {"Classification": "classification", "Depth": "depth", "Normals": "normals", "Segmentation": "segmentation"}

__all__ = ["DELTA_M_CONVENTIONS", "Classification", "Depth", "NoMetrics", "Normals", "Regression", "Segmentation",
           "Task", "WeightedMean", "delta_m", "delta_m_all", "delta_m_by_task"]

__getattr__ = lazy_attributes(__name__, LAZY)
