"""Tiny problems with known gradients for the balancers of the later methods (not a test module).

``linear_problem(G, A)``: shared parameter θ ∈ R^P and one head scalar h_i per task, with
L_i = g_i · θ + a_i h_i, so that ∇_θ L_i = g_i (row i of G) and ∇_{h_i} L_i = a_i exactly.
"""

from __future__ import annotations

import torch


def linear_problem(grads, head_grads=None):
    g = torch.tensor(grads, dtype=torch.float64)
    num_tasks, size = g.shape
    a = torch.ones(num_tasks, dtype=torch.float64) if head_grads is None else torch.tensor(head_grads, dtype=torch.float64)
    theta = torch.nn.Parameter(torch.zeros(size, dtype=torch.float64))
    heads = torch.nn.Parameter(torch.zeros(num_tasks, dtype=torch.float64))
    losses = g @ theta + a * heads + 1.0  # positive losses (1 at θ = 0, h = 0)
    return losses, theta, heads, g, a
