"""Loss balancers: one class per file, all behind :class:`Balancer` (see ``base.py``).

Importing the package imports every module in it, so :data:`METHODS` (conf/balancer name -> class),
the one table of methods, lists every balancer that sets a ``name``: a new balancer is its file, its
``conf/balancer/<name>.yaml`` (``_target_: gradnorm.balancers.<file>.<Class>``) and its test.
"""

import importlib
import pkgutil

from gradnorm.balancers.base import METHODS, Balancer
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

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "METHODS", "Balancer", "CAGrad", "DWA", "EqualWeights", "FAMO", "FixedWeights", "GradNorm", "GradNormStatic",
    "GradientBalancer", "GridWeights", "IMTL", "MGDA", "NashMTL", "PCGrad", "RLW", "Uncertainty",
]
