"""Which way is better for each metric of the measured tasks (metric name -> True when higher is better).

The metrics themselves (``DepthMetrics``, ``NormalsMetrics``, ``SegmentationMetrics``, ``AccuracyMetric``) are
torchmetrics ``Metric`` classes, and torchmetrics takes seconds to import; the reports need only the names and
directions (Δm, the published rows of ``gradnorm/report/literature.yaml``), so they live here, and each metric
class's ``directions`` is the function below.
"""

from __future__ import annotations

#: the angle thresholds of the surface-normal "within t°" accuracies, in degrees
NORMAL_THRESHOLDS = (11.25, 22.5, 30.0)


def segmentation(prefix: str) -> dict[str, bool]:
    return {f"{prefix}/miou": True, f"{prefix}/pix_acc": True, f"{prefix}/err": False}


def depth(prefix: str) -> dict[str, bool]:
    return {f"{prefix}/rmse": False, f"{prefix}/abs_err": False, f"{prefix}/rel_err": False}


def normals(prefix: str) -> dict[str, bool]:
    return {f"{prefix}/err": False, f"{prefix}/mean_angle": False, f"{prefix}/median_angle": False,
            **{f"{prefix}/within_{t:g}": True for t in NORMAL_THRESHOLDS}}


def accuracy(prefix: str) -> dict[str, bool]:
    return {f"{prefix}/acc": True}
