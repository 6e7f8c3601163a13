"""Where the tasks' paths split: the shared representation z in any network's autograd graph.

GradNorm (paper §3) needs ∇_W L_i for every task i. Given only W, this module finds, in the graph
of the T losses, the last node all tasks share above W (its output is the shared representation z)
such that every task's gradient reaches W through z and nowhere else. During the one backward pass
of Σ_i w_i L_i, post-hooks on the first nodes of each task's path (the consumers of z) then catch
each task's gradient at z, w_i ∂L_i/∂z, and the T gradients at W follow from them by the segment of
the graph between z and W alone (:mod:`gradnorm.balancers.last_layer`), never through the heads.

For each node n of the graph let m(n) be the set of tasks whose loss reaches n. With A the nodes
from which W's layer can be reached and F = {n ∈ A : m(n) = all tasks}, the split exists when F has
exactly one node Z with a consumer outside F and every consumer of Z belongs to a single task:

    ∂L_i/∂y = J_segᵀ · Σ_{c consumer of Z, m(c) = {i}} (gradient c sends to Z),

with y W's layer output and J_seg the Jacobian of the nodes of F between y and z. Every path from a
loss to W enters F at Z (any other entry would be a second node of F with a consumer outside F), so
this is exact. Otherwise (tasks that share a sub-head, a skip connection from a head into the
segment, a task that does not reach W, a graph compiled into one node that hides the split inside),
:func:`find_split` says why and the caller differentiates the T losses at W instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor
from torch.autograd.graph import GradientEdge, Node, get_gradient_edge

from gradnorm.balancers.last_layer import LastLayer, last_layer_at

ACCUMULATE = "torch::autograd::AccumulateGrad"


@dataclass
class Split:
    """The split node Z, where each task's gradient arrives, and how to go on from there to W."""

    node: Node  # Z: its outputs are the shared representation z
    outputs: list[int]  # Z's output numbers that receive a gradient from the tasks
    consumers: list[tuple[Node, int, list[tuple[int, int]]]]  # (node, task, [(edge index, output slot)])
    layer: LastLayer | None  # W's layer when it has a formula, else None (batched backward to W)

    def edges(self) -> list[GradientEdge]:
        """z as gradient edges, one per entry of :attr:`outputs`."""
        return [GradientEdge(self.node, out) for out in self.outputs]


def find_split(losses: Tensor, params: Sequence[Tensor]) -> Split | str:
    """The split of ``losses`` (one ``torch.stack`` of the T task losses) above the parameters W,
    or a sentence saying why there is none."""
    root = losses.grad_fn
    num_tasks = losses.shape[0]
    if root is None or root.name() != "StackBackward0" or len(root.next_functions) != num_tasks:
        return "the losses are not one torch.stack of the T task losses"
    if num_tasks < 2:
        return "there is one task only"
    starts = [edge[0] for edge in root.next_functions]
    if any(node is None for node in starts):
        return "a task loss does not depend on the network"
    targets = []
    for param in params:
        node = get_gradient_edge(param).node if param.grad_fn is None else None
        if node is None or node.name() != ACCUMULATE:
            return "a parameter of W is not a leaf tensor"
        targets.append(node)

    # Depth-first post-order from the losses (consumers come after the nodes they feed in reverse).
    children: dict[Node, tuple] = {}
    order: list[Node] = []
    for start in starts:
        if start in children:
            continue
        children[start] = start.next_functions
        stack = [(start, iter(children[start]))]
        while stack:
            node, pending = stack[-1]
            for child, _ in pending:
                if child is not None and child not in children:
                    children[child] = child.next_functions
                    stack.append((child, iter(children[child])))
                    break
            else:
                stack.pop()
                order.append(node)

    # m(n) as bit masks, from the losses down; every node's consumers with the edges they use.
    mask = dict.fromkeys(children, 0)
    for task, start in enumerate(starts):
        mask[start] |= 1 << task
    consumers: dict[Node, list[tuple[Node, int, int]]] = {node: [] for node in children}
    for node in reversed(order):
        bits = mask[node]
        for index, (child, out) in enumerate(children[node]):
            if child is not None:
                mask[child] |= bits
                consumers[child].append((node, index, out))
    if any(target not in mask for target in targets):
        return "W is not used by the losses"

    layer_node = _layer_of(targets, consumers) if len(targets) == 1 else None
    goal = {layer_node} if layer_node is not None else set(targets)
    full = (1 << num_tasks) - 1
    if any(mask[n] != full for n in goal):
        return "not every task's loss reaches W"

    # F: the nodes every task reaches from which the goal can be reached.
    reaches: dict[Node, bool] = {}
    for node in order:  # children before their consumers
        reaches[node] = node in goal or any(child is not None and reaches[child] for child, _ in children[node])
    shared = {node for node in order if reaches[node] and mask[node] == full}
    tops = [node for node in shared if any(c not in shared for c, _, _ in consumers[node])]
    if len(tops) != 1:
        return ("the tasks' gradients enter the layers above W at several places (e.g. a skip connection "
                "from a head)" if tops else "no node above W is shared by every task")
    (top,) = tops
    by_consumer: dict[Node, list[tuple[int, int]]] = {}
    for consumer, index, out in consumers[top]:
        bits = mask[consumer]
        if bits & (bits - 1):  # more than one task
            return "some tasks share layers above the last representation all tasks share"
        by_consumer.setdefault(consumer, []).append((index, out))
    outputs = sorted({out for edges in by_consumer.values() for _, out in edges})
    slots = {out: slot for slot, out in enumerate(outputs)}
    split_consumers = [(consumer, mask[consumer].bit_length() - 1, [(index, slots[out]) for index, out in edges])
                       for consumer, edges in by_consumer.items()]
    layer = None
    if layer_node is not None and len(outputs) == 1:
        layer = last_layer_at(top, layer_node, params[0], _relu_chain(top, layer_node, children))
    return Split(top, outputs, split_consumers, layer)


def _layer_of(targets: list[Node], consumers: dict) -> Node | None:
    """The one node that uses W (through a transpose or casts), when W is used once."""
    node = targets[0]
    while True:
        users = consumers[node]
        if len(users) != 1:
            return None
        node = users[0][0]
        if node.name() not in ("TBackward0", "ToCopyBackward0"):
            return node


def _relu_chain(top: Node, layer_node: Node, children: dict) -> bool:
    """Only single-input ReLUs between the layer's output and z (first inputs all the way)."""
    node = top
    while node is not layer_node:
        if node.name() != "ReluBackward0" or not children[node] or children[node][0][0] is None:
            return False
        node = children[node][0][0]
    return True
