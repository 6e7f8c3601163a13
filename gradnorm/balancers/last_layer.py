"""Per-task gradients at the last shared layer's weights W, from per-task gradients at z.

GradNorm (paper §3) needs ∇_W L_i for every task i. One backward pass of Σ_i w_i L_i hands each
task's gradient g_i at the shared representation z to :class:`gradnorm.balancers.GradNorm`; this
module turns them into the T gradients at W while that backward pass is under way, from the tensors
the forward pass saved, without a backward pass through the network per task:

1. From z down to the layer's output y: ReLUs are applied directly, g ↦ g · [z > 0] (what ReLU's
   own backward computes); anything else (e.g. BatchNorm, whose gradient mixes the batch) by one
   backward pass per task from z to y, which runs only the operations in between.
2. From y to W, by the layer's own weight-gradient formula:

   * Linear, y = a Wᵀ + b:  ∇_W L_i = (∂L_i/∂y)ᵀ a; with the T gradients side by side
     (N × T·out), one matrix product gives all of them;
   * convolution: the weight-gradient convolution of the layer, once per task (only the weight
     gradient: the gradient of the layer's input is not computed).

:func:`find_last_layer` returns ``None`` for any other graph (another layer type, several
parameters); the caller then batches a backward pass down to W instead. Either way the result is
∇_W L_i, up to float rounding. W must be used by that one layer only (no weight tying).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge, Node

#: how far below z the layer that owns W may sit (ReLU, BatchNorm, dropout, ... in between)
MAX_DEPTH = 8


@dataclass
class LastLayer:
    """The autograd node of the layer that owns W, and what lies between its output and z."""

    top: Node  # the node that produced z
    node: Node
    kind: str  # "linear" or "conv"
    relu_chain: bool  # only ReLUs between the layer's output and z

    @torch.no_grad()
    def weight_grads(self, z: Tensor, grads_at_z: list[Tensor]) -> Tensor:
        """∇_W L_i for every task, shape (T, *W.shape), from the T gradients at ``z`` (or a view of it).

        Call it while the backward pass is under way, before ``node`` has run (its saved tensors
        are freed once it has), e.g. from a pre-hook on ``top``.
        """
        if self.kind == "linear" and self.relu_chain:
            # All tasks side by side (N × T·out): one operation per ReLU.
            side_by_side, node = torch.cat(grads_at_z, dim=1), self.top
            while node is not self.node:
                by_task = side_by_side.unflatten(1, (len(grads_at_z), -1))
                side_by_side = torch.ops.aten.threshold_backward(by_task, node._saved_result.unsqueeze(1), 0)
                side_by_side, node = side_by_side.flatten(1, 2), node.next_functions[0][0]
            return _linear_weight_grads(self.node, side_by_side, len(grads_at_z))
        if self.relu_chain:
            grads, node = grads_at_z, self.top
            while node is not self.node:
                grads = [torch.ops.aten.threshold_backward(g, node._saved_result, 0) for g in grads]
                node = node.next_functions[0][0]
        else:
            edge = GradientEdge(self.node, 0)
            grads = [torch.autograd.grad(z, edge, g, retain_graph=True)[0] for g in grads_at_z]
        if self.kind == "linear":
            return _linear_weight_grads(self.node, torch.cat(grads, dim=1), len(grads))
        return _conv_weight_grads(self.node, grads)


def find_last_layer(top: Node, params: list[Tensor]) -> LastLayer | None:
    """The Linear or convolution node at or below ``top`` (the node that produced z) whose weight
    is the only tensor in ``params``, looked for along first inputs."""
    if len(params) != 1:
        return None
    (weight,) = params
    node, relu_chain = top, True
    for _ in range(MAX_DEPTH):
        kind = _layer_kind(node, weight)
        if kind is not None:
            return LastLayer(top, node, kind, relu_chain)
        if not node.next_functions or node.next_functions[0][0] is None:
            return None
        relu_chain = relu_chain and node.name() == "ReluBackward0"
        node = node.next_functions[0][0]
    return None


def _layer_kind(node: Node, weight: Tensor) -> str | None:
    name = node.name()
    if name == "AddmmBackward0" and node._saved_alpha == 1:  # nn.Linear: bias + mat1 @ Wᵀ
        return "linear" if _reaches(node.next_functions[2][0], weight, transposed=True) else None
    if name == "MmBackward0":  # nn.Linear without bias
        return "linear" if _reaches(node.next_functions[1][0], weight, transposed=True) else None
    if name == "ConvolutionBackward0":
        return "conv" if _reaches(node.next_functions[1][0], weight, transposed=False) else None
    return None


def _reaches(node: Node | None, weight: Tensor, transposed: bool) -> bool:
    """``node`` leads to W's accumulator through one transpose (Linear) and casts (autocast) only."""
    transposes = 0
    while node is not None:
        name = node.name()
        if name == "torch::autograd::AccumulateGrad":
            return node.variable is weight and transposes == int(transposed)
        if name == "TBackward0":
            transposes += 1
        elif name != "ToCopyBackward0":
            return False
        node = node.next_functions[0][0]
    return False


def _linear_weight_grads(node: Node, side_by_side: Tensor, num_tasks: int) -> Tensor:
    """(T, out, in) from the gradients at the layer's output side by side, (N, T·out)."""
    inputs = node._saved_mat1 if node.name() == "AddmmBackward0" else node._saved_self  # a: (N, in)
    return (side_by_side.to(inputs.dtype).t() @ inputs).unflatten(0, (num_tasks, -1))


def _conv_weight_grads(node: Node, grads: list[Tensor]) -> Tensor:
    inputs, weight = node._saved_input, node._saved_weight
    return torch.stack([torch.ops.aten.convolution_backward(
        g.to(inputs.dtype), inputs, weight, None, node._saved_stride, node._saved_padding,
        node._saved_dilation, node._saved_transposed, node._saved_output_padding, node._saved_groups,
        [False, True, False])[1] for g in grads])
