"""Equal weights: w_i = 1 for every task, the paper's main baseline."""

from __future__ import annotations

from gradnorm.balancers.base import Balancer


class EqualWeights(Balancer):
    """L = Σ_i L_i. The base class already implements it; this names it."""

    name = "equal"
    label = "Equal weights"
    color = "#555555"
