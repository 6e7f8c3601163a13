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

   Where only the norms are needed (one process), :meth:`LastLayer.squared_norms` may take them
   without forming the gradients, by a Gram identity, when that needs fewer operations.

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


class SavedTensorsUnavailable(RuntimeError):
    """A tensor or value that autograd saved for a layer's backward is missing or not as expected.

    The fast routes read autograd's saved tensors (``_saved_*`` attributes of graph nodes), which other
    torch versions may name or lay out differently; GradNorm then takes an exact route instead (one
    warning), never a crash and never a wrong number."""


def saved(node: Node, name: str, kind: type | tuple[type, ...] | None = None):
    """``node.<name>`` (a ``_saved_*`` attribute), checked to be a ``kind``; else SavedTensorsUnavailable."""
    try:
        value = getattr(node, name)
    except (AttributeError, RuntimeError) as err:
        raise SavedTensorsUnavailable(f"{node.name()}.{name} is not available ({type(err).__name__})") from None
    if kind is not None and not isinstance(value, kind):
        raise SavedTensorsUnavailable(f"{node.name()}.{name} is a {type(value).__name__}, not a {kind}")
    return value


@dataclass
class LayerGrads:
    """The T tasks' gradients at W's layer, kept as the factors they come from (taken while the backward
    pass was under way): the layer's input and the T gradients at its output. :meth:`squared_norms`
    and :meth:`weight_grads` evaluate them later, after the backward pass, also after saved tensors
    were freed (this object holds its own references). Both divide out the loss scale ``scale``."""

    kind: str  # "linear" or "conv"
    inputs: Tensor  # linear: a (N, in); convolution: the layer's input
    out_grads: Tensor | list[Tensor]  # linear: (N, T, out); convolution: T tensors
    conv: tuple | None = None  # convolution: (weight, stride, padding, dilation, transposed, output_padding, groups)
    scale: Tensor | float = 1.0

    @torch.no_grad()
    def weight_grads(self) -> Tensor:
        """∇_W L_i for every task, shape (T, *W.shape)."""
        if self.kind == "linear":
            grads = _linear_weight_grads(self.inputs, self.out_grads)
        else:
            grads = _conv_weight_grads(self.inputs, self.conv, self.out_grads)
        return grads if isinstance(self.scale, float) else grads / self.scale.to(grads.dtype)

    @torch.no_grad()
    def squared_norms(self) -> Tensor:
        """||∇_W L_i||² for every task, shape (T,), float32.

        Takes the cheaper of two exact routes: the T gradients at W themselves, or the Gram identity
        ||Gᵢᵀ A||² = Σ_pq (A Aᵀ)_pq (Gᵢ Gᵢᵀ)_pq, with A the layer's input rows (P × fan-in: one row
        per sample, or per sample and output pixel for a convolution, as im2col patches) and Gᵢ task
        i's gradient at the layer's output (P × out). The first costs T·P·fan-in·out, the second
        P²·(fan-in + T·out): the Gram route wins when P is small against W, e.g. FCN's 3×3 conv
        2048→512 at a reduced resolution.
        """
        squared = self._gram_squared_norms()
        if squared is None:
            return squared_norm(self.weight_grads().flatten(1), dim=1)
        return squared if isinstance(self.scale, float) else squared / (self.scale.float() ** 2)

    def _gram_squared_norms(self) -> Tensor | None:
        num_tasks = len(self.out_grads) if self.kind == "conv" else self.out_grads.shape[1]
        if self.kind == "linear":
            if _gram_is_cheaper(self.out_grads.shape[0], self.inputs.shape[1], self.out_grads.shape[2], num_tasks):
                return _gram_squared_norms(self.inputs, self.out_grads.transpose(0, 1))  # G: (T, N, out)
            return None
        weight, out_grad = self.conv[0], self.out_grads[0]
        rows, fan_in = out_grad.shape[0] * out_grad[0, 0].numel(), weight[0].numel()
        if _is_plain_conv2d(self.inputs, self.conv) and _gram_is_cheaper(rows, fan_in, out_grad.shape[1], num_tasks):
            per_task = torch.stack([g.flatten(2).transpose(1, 2).flatten(0, 1) for g in self.out_grads])  # (T, P, out)
            return _gram_squared_norms(_patch_rows(self.inputs, self.conv), per_task)
        return None


@dataclass
class LastLayer:
    """The autograd node of the layer that owns W, and what lies between its output and z."""

    top: Node  # the node that produced z
    node: Node
    kind: str  # "linear" or "conv"
    relu_chain: bool  # only ReLUs between the layer's output and z

    @torch.no_grad()
    def capture(self, z: Tensor | GradientEdge, grads_at_z: list[Tensor], scale: Tensor | float = 1.0) -> LayerGrads:
        """The T gradients at W as :class:`LayerGrads`, from the T gradients at ``z`` (or a view of it, or
        the gradient edge of ``top``'s output), scaled by the loss scale ``scale``.

        Call it while the backward pass is under way, before ``node`` has run (its saved tensors are
        freed once it has), e.g. from a pre-hook on ``top``. Raises :class:`SavedTensorsUnavailable`
        when the saved tensors it reads are not as expected."""
        out_grads = self._output_grads(z, grads_at_z)
        node = self.node
        if self.kind == "linear":
            name = "_saved_mat1" if node.name() == "AddmmBackward0" else "_saved_self"
            inputs = saved(node, name, Tensor)
            if inputs.dim() != 2 or inputs.shape[0] != out_grads.shape[0]:
                raise SavedTensorsUnavailable(f"{node.name()}.{name} has shape {tuple(inputs.shape)}")
            return LayerGrads("linear", inputs, out_grads, scale=scale)
        conv = (saved(node, "_saved_weight", Tensor), *(saved(node, f"_saved_{k}") for k in (
            "stride", "padding", "dilation", "transposed", "output_padding", "groups")))
        return LayerGrads("conv", saved(node, "_saved_input", Tensor), out_grads, conv, scale)

    def weight_grads(self, z: Tensor | GradientEdge, grads_at_z: list[Tensor]) -> Tensor:
        """∇_W L_i for every task, shape (T, *W.shape), from the T gradients at ``z``: :meth:`capture`
        evaluated at once (call it where :meth:`capture` may be called)."""
        return self.capture(z, grads_at_z).weight_grads()

    def squared_norms(self, z: Tensor | GradientEdge, grads_at_z: list[Tensor]) -> Tensor:
        """||∇_W L_i||² for every task, shape (T,), float32: :meth:`capture` evaluated at once."""
        return self.capture(z, grads_at_z).squared_norms()

    def _output_grads(self, z: Tensor | GradientEdge, grads_at_z: list[Tensor]):
        """The T gradients at the layer's output y: Linear (N, T, out); convolution, a list."""
        if self.kind == "linear" and self.relu_chain:
            # All tasks side by side: one operation per ReLU.
            by_task, node = torch.stack(grads_at_z, dim=1), self.top
            while node is not self.node:
                by_task = torch.ops.aten.threshold_backward(by_task, saved(node, "_saved_result", Tensor).unsqueeze(1), 0)
                node = node.next_functions[0][0]
            return by_task
        if self.relu_chain:
            grads, node = grads_at_z, self.top
            while node is not self.node:
                grads = [torch.ops.aten.threshold_backward(g, saved(node, "_saved_result", Tensor), 0) for g in grads]
                node = node.next_functions[0][0]
        else:
            edge = GradientEdge(self.node, 0)
            with torch.enable_grad():
                grads = [torch.autograd.grad(z, edge, g, retain_graph=True)[0] for g in grads_at_z]
        return torch.stack(grads, dim=1) if self.kind == "linear" else grads


def last_layer_at(top: Node, node: Node, weight: Tensor, relu_chain: bool) -> LastLayer | None:
    """The layer at ``node`` when it is a Linear or convolution with weight W and z is produced by
    ``top`` (``relu_chain``: only ReLUs in between, along first inputs); else ``None``."""
    kind = layer_kind(node, weight)
    return None if kind is None else LastLayer(top, node, kind, relu_chain)


def find_last_layer(top: Node, params: list[Tensor]) -> LastLayer | None:
    """The Linear or convolution node at or below ``top`` (the node that produced z) whose weight
    is the only tensor in ``params``, looked for along first inputs."""
    if len(params) != 1:
        return None
    (weight,) = params
    node, relu_chain = top, True
    for _ in range(MAX_DEPTH):
        kind = layer_kind(node, weight)
        if kind is not None:
            return LastLayer(top, node, kind, relu_chain)
        if not node.next_functions or node.next_functions[0][0] is None:
            return None
        relu_chain = relu_chain and node.name() == "ReluBackward0"
        node = node.next_functions[0][0]
    return None


def layer_kind(node: Node, weight: Tensor) -> str | None:
    """"linear" or "conv" when ``node`` is a Linear or convolution whose weight is W, else None."""
    name = node.name()
    if name == "AddmmBackward0" and saved(node, "_saved_alpha") == 1:  # nn.Linear: bias + mat1 @ Wᵀ
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


def _full(t: Tensor) -> Tensor:
    """Half-precision tensors (autocast) in float32: the per-task gradients and norms are taken in float32."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _linear_weight_grads(inputs: Tensor, by_task: Tensor) -> Tensor:
    """(T, out, in) from the layer's input a (N, in) and the gradients at its output, (N, T, out): one
    matrix product."""
    inputs, by_task = _full(inputs), _full(by_task)
    return (by_task.flatten(1).to(inputs.dtype).t() @ inputs).unflatten(0, by_task.shape[1:])


def _conv_weight_grads(inputs: Tensor, conv: tuple, grads: list[Tensor]) -> Tensor:
    weight, *args = conv
    inputs, weight = _full(inputs), _full(weight)
    return torch.stack([torch.ops.aten.convolution_backward(
        _full(g).to(inputs.dtype), inputs, weight, None, *args, [False, True, False])[1] for g in grads])


#: the Gram route forms P × P matrices: it is taken only up to this many rows (P)
GRAM_MAX_ROWS = 4096
#: ... and only when it needs at most this share of the direct route's multiply-adds
GRAM_MAX_COST_SHARE = 0.5


def _gram_is_cheaper(rows: int, fan_in: int, out: int, num_tasks: int) -> bool:
    gram = rows * rows * (fan_in + num_tasks * out)
    direct = num_tasks * rows * fan_in * out
    return rows <= GRAM_MAX_ROWS and gram <= GRAM_MAX_COST_SHARE * direct


def _is_plain_conv2d(inputs: Tensor, conv: tuple) -> bool:
    """Not transposed, not grouped, 2-D: the convolutions whose input :func:`_patch_rows` unfolds."""
    _, _, _, _, transposed, _, groups = conv
    return not transposed and groups == 1 and inputs.dim() == 4


def _patch_rows(inputs: Tensor, conv: tuple) -> Tensor:
    """A 2-D convolution's input as im2col rows (N·L × C·kh·kw), matching W's layout."""
    weight, stride, padding, dilation, *_ = conv
    patches = torch.nn.functional.unfold(inputs, weight.shape[2:], dilation=dilation, padding=padding, stride=stride)
    return patches.transpose(1, 2).flatten(0, 1)


def _gram_squared_norms(rows: Tensor, per_task: Tensor) -> Tensor:
    """Σ (Gᵢᵀ A)² for each task from A (P × K) and G (T × P × out), without forming Gᵢᵀ A.

    The Gram matrices are float32 products; their elementwise product is summed in float64, since
    the terms of Σ_pq can cancel."""
    rows = rows.float()
    per_task = per_task.float()
    gram_rows = rows @ rows.t()  # (P, P)
    gram_tasks = per_task @ per_task.transpose(1, 2)  # (T, P, P)
    return (gram_tasks.double() * gram_rows.double()).sum((1, 2)).float()


def squared_norm(t: Tensor, dim=None) -> Tensor:
    """Σ t² in float32 by a summing reduction: on CPU, float32 ``vector_norm`` of a multi-million
    entry gradient (FCN's W has 9.4M) is off by ~4e-4 relative; ``sum`` keeps ~1e-7."""
    t = t.float()
    return (t * t).sum() if dim is None else (t * t).sum(dim)
