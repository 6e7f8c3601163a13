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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge, Node, get_gradient_edge

from gradnorm.balancers.last_layer import LastLayer, last_layer_at, layer_kind

#: the reason given when no task loss reaches W at all (GradNorm raises: nothing to balance)
NOT_USED = "W is not used by the losses"


def _node_type(make) -> type:
    return type(make().grad_fn)


_ACCUMULATE = type(get_gradient_edge(torch.zeros(1, requires_grad=True)).node)
#: between W's accumulator and its layer: a transpose (Linear), casts (autocast)
_PASS_THROUGH = (_node_type(lambda: torch.zeros(2, 2, requires_grad=True).clone().t()),
                 _node_type(lambda: torch.zeros(2, requires_grad=True).clone().double()))


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
        if node is None or type(node) is not _ACCUMULATE:
            return "a parameter of W is not a leaf tensor"
        targets.append(node)
    target_set = set(targets)

    # The graph from the losses down, without the other parameters' accumulators (they reach
    # nothing); per node its children as (child, edge index, output number) and its consumer count.
    children: dict[Node, list] = {}
    pending: dict[Node, int] = {}
    queue = list(dict.fromkeys(starts))
    for node in queue:
        pending[node] = 0
    for node in queue:
        kids = [(child, index, out) for index, (child, out) in enumerate(node.next_functions)
                if child is not None and (type(child) is not _ACCUMULATE or child in target_set)]
        children[node] = kids
        for child, _, _ in kids:
            if child in pending:
                pending[child] += 1
            else:
                pending[child] = 1
                queue.append(child)
    if any(target not in pending for target in targets):
        return NOT_USED

    # m(n) as bit masks, in topological order (a node once all its consumers are done).
    mask = dict.fromkeys(queue, 0)
    for task, start in enumerate(starts):
        mask[start] |= 1 << task
    order = [node for node in dict.fromkeys(starts) if pending[node] == 0]
    for node in order:
        bits = mask[node]
        for child, _, _ in children[node]:
            mask[child] |= bits
            pending[child] -= 1
            if pending[child] == 0:
                order.append(child)

    layer_node = _layer_of(targets[0], params[0], order, children) if len(targets) == 1 else None
    goal = {layer_node} if layer_node is not None else target_set
    full = (1 << num_tasks) - 1
    if any(mask[n] != full for n in goal):
        return "not every task's loss reaches W"

    # A: the nodes from which the goal can be reached; F: those every task reaches; Z: the one node
    # of F that a node outside F feeds.
    reaches = set(goal)
    for node in reversed(order):  # children before their consumers
        if node not in reaches and any(child in reaches for child, _, _ in children[node]):
            reaches.add(node)
    tops: dict[Node, list] = {}
    for node in reaches:
        if mask[node] != full:
            for child, index, out in children[node]:
                if child in reaches and mask[child] == full:
                    tops.setdefault(child, []).append((node, index, out))
    if len(tops) != 1:
        return ("the tasks' gradients enter the layers above W at several places (e.g. a skip connection "
                "from a head)" if tops else "no node above W is shared by every task")
    ((top, edges),) = tops.items()
    by_consumer: dict[Node, list[tuple[int, int]]] = {}
    for consumer, index, out in edges:
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


def _layer_of(target: Node, weight: Tensor, order: list[Node], children: dict) -> Node | None:
    """The one node that uses W (through a transpose or casts), when W is used once, else None."""
    node = target
    while True:
        found = [c for c in order if any(child is node for child, _, _ in children[c])]  # this node's consumers
        if len(found) != 1:
            return None
        node = found[0]
        if type(node) not in _PASS_THROUGH:
            return node if layer_kind(node, weight) is not None else None


def _relu_chain(top: Node, layer_node: Node, children: dict) -> bool:
    """Only single-input ReLUs between the layer's output and z (first inputs all the way)."""
    node = top
    while node is not layer_node:
        kids = children[node]
        if node.name() != "ReluBackward0" or len(kids) != 1 or kids[0][1] != 0:
            return False
        node = kids[0][0]
    return True


def walk_heads(losses: Tensor, features: Sequence[Tensor] | None = None) -> Iterator[Node]:
    """The nodes of the losses' graph above ``features`` (the per-task views of z the heads consumed),
    depth first from the losses: the walk stops at the features' nodes and at leaves, so on a network
    whose heads read z through their features only it visits the heads' nodes (a few per task); a head
    that also reads below z leads it on into the trunk. Without features: the whole graph."""
    views = {f.grad_fn for f in features} if features else set()
    seen: set[Node] = set()
    stack = [losses.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen or node in views:
            continue
        seen.add(node)
        yield node
        if type(node) is not _ACCUMULATE:
            stack.extend(child for child, _ in node.next_functions)


def features_cover(losses: Tensor, features: Sequence[Tensor], params: Sequence[Tensor]) -> str | None:
    """None when every path in the losses' graph from a loss to W passes through one of ``features``
    (the per-task views of z the heads consumed), else a sentence saying how a path avoids them.

    On a graph that keeps the contract, :func:`walk_heads` visits the heads' nodes only. A path that
    reaches the node that produced z, or W's own accumulator, without passing a feature (e.g. a head that
    also reads W's layer output through a skip connection) breaks the contract: the gradient at W would
    then not be the one the features carry."""
    producer = features[0].grad_fn.next_functions[0][0]
    targets = {get_gradient_edge(p).node for p in params if p.grad_fn is None and p.requires_grad}
    for node in walk_heads(losses, features):
        if node is producer:
            return "a head reads the shared representation other than through its feature"
        if node in targets:
            return "a head reaches W other than through the features, e.g. a skip connection from W's layer"
    return None


def leaves_above(losses: Tensor, shared: Sequence[Tensor], features: Sequence[Tensor] | None = None) -> list[Tensor]:
    """The leaf tensors (parameters) the losses reach other than ``shared``, found by :func:`walk_heads`:
    with the features, those of the heads. A backward pass with ``inputs=`` these skips the trunk."""
    shared_ids = {id(p) for p in shared}
    return [node.variable for node in walk_heads(losses, features)
            if type(node) is _ACCUMULATE and id(node.variable) not in shared_ids]


class SplitFinder:
    """:func:`find_split` with a memory: a training loop builds the same graph at every step.

    Each call takes the graph's fingerprint: its nodes in depth-first order from the losses, each by
    type, with every edge as the order number of the node it leads to and the output it uses. Equal
    fingerprints mean the same graph up to the nodes' identity, so the last analysis holds, mapped
    onto this step's nodes (W's accumulator must sit where it sat); any other graph is analysed anew.
    """

    def __init__(self):
        self._fingerprint: list | None = None
        self._params: list[Tensor] = []
        self._result: tuple | str | None = None  # the last analysis, by order numbers

    def __call__(self, losses: Tensor, params: Sequence[Tensor]) -> Split | str:
        root = losses.grad_fn
        if root is None:
            return find_split(losses, params)
        nodes, fingerprint = _fingerprint(root)
        same = (fingerprint == self._fingerprint and len(params) == len(self._params)
                and all(p is q for p, q in zip(params, self._params)))
        if not same:
            split = find_split(losses, params)
            self._fingerprint, self._params = fingerprint, list(params)
            self._result = split if isinstance(split, str) else _by_order(split, nodes, params)
            return split
        if isinstance(self._result, str):
            return self._result
        top, outputs, consumers, layer, relu_chain, targets = self._result
        if any(nodes[i] is not get_gradient_edge(p).node for i, p in zip(targets, params)):
            self._fingerprint = None  # W's accumulator moved: analyse anew
            return self(losses, params)
        layer_node = None if layer is None else nodes[layer]
        return Split(nodes[top], outputs, [(nodes[c], task, edges) for c, task, edges in consumers],
                     None if layer_node is None else last_layer_at(nodes[top], layer_node, params[0], relu_chain))


def _fingerprint(root: Node) -> tuple[list[Node], list]:
    index = {root: 0}
    nodes, fingerprint, stack = [root], [], [root]
    while stack:
        node = stack.pop()
        fingerprint.append(type(node))
        for child, out in node.next_functions:
            if child is None:
                fingerprint.append(-1)
                continue
            number = index.get(child)
            if number is None:
                number = index[child] = len(nodes)
                nodes.append(child)
                stack.append(child)
            fingerprint.append(number)
            fingerprint.append(out)
    return nodes, fingerprint


def _by_order(split: Split, nodes: list[Node], params: Sequence[Tensor]) -> tuple | str:
    number = {node: i for i, node in enumerate(nodes)}
    layer = split.layer
    return (number[split.node], split.outputs, [(number[c], task, edges) for c, task, edges in split.consumers],
            None if layer is None else number[layer.node], None if layer is None else layer.relu_chain,
            [number[get_gradient_edge(p).node] for p in params])  # W's accumulators: where they must be again
