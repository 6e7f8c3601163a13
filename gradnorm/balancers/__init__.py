"""Loss balancers: one class per file, all behind :class:`Balancer` (see ``base.py``)."""

from gradnorm.balancers.base import Balancer
from gradnorm.balancers.equal import EqualWeights
from gradnorm.balancers.fixed import FixedWeights
from gradnorm.balancers.gradnorm import GradNorm
from gradnorm.balancers.grid import GridWeights
from gradnorm.balancers.static import GradNormStatic
from gradnorm.balancers.uncertainty import Uncertainty

__all__ = [
    "Balancer", "EqualWeights", "FixedWeights", "GradNorm", "GradNormStatic", "GridWeights", "Uncertainty",
]
