"""Loss balancers: one class per file, all behind :class:`Balancer` (see ``base.py``)."""

from gradnorm.balancers.base import Balancer
from gradnorm.balancers.cagrad import CAGrad
from gradnorm.balancers.dwa import DWA
from gradnorm.balancers.equal import EqualWeights
from gradnorm.balancers.famo import FAMO
from gradnorm.balancers.fixed import FixedWeights
from gradnorm.balancers.gradients import GradientBalancer
from gradnorm.balancers.gradnorm import GradNorm
from gradnorm.balancers.grid import GridWeights
from gradnorm.balancers.imtl import IMTL
from gradnorm.balancers.mgda import MGDA
from gradnorm.balancers.nash_mtl import NashMTL
from gradnorm.balancers.pcgrad import PCGrad
from gradnorm.balancers.rlw import RLW
from gradnorm.balancers.static import GradNormStatic
from gradnorm.balancers.uncertainty import Uncertainty

__all__ = [
    "Balancer", "CAGrad", "DWA", "EqualWeights", "FAMO", "FixedWeights", "GradNorm", "GradNormStatic",
    "GradientBalancer", "GridWeights", "IMTL", "MGDA", "NashMTL", "PCGrad", "RLW", "Uncertainty",
]
