"""GradNorm's variants (gradnorm/balancers/gradnorm.py; docs/gradnorm_variants.md): each choice on hand-worked
numbers, and each preset (conf/balancer/gradnorm_<name>.yaml) against a reference written here from the code it
follows (repository, file and commit in the preset and below): the same tiny network, batches and optimisers, a few
steps; the weights the network was trained with at every step, and the network at the end, must agree."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
import torch.nn.functional as F
from cli_runs import tiny_config
from torch import nn

from gradnorm.balancers import GradNorm
from gradnorm.balancers.gradnorm import variant_name
from gradnorm.checks import ConfigError
from gradnorm.cli import compose
from gradnorm.models import MLP
from gradnorm.train import build, params_for, train

T = 2
SGD = functools.partial(torch.optim.SGD, lr=0.1)


# -- a tiny problem ------------------------------------------------------------------------------------------
def network(seed: int = 0, bias_at_w: bool = True) -> MLP:
    torch.manual_seed(seed)
    net = MLP(in_features=5, heads={"a": 3, "b": 2}, width=6, depth=2)
    if not bias_at_w:
        net.trunk[2] = nn.Linear(6, 6, bias=False)
    return net


def batches(steps: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Task b's targets 10× task a's: the weights move."""
    generator = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0, 1.0, 1.0, 10.0, 10.0])
    return [(torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator) * scale)
            for _ in range(steps)]


def losses_of(net, x, y):
    predictions, features = net(x)
    losses = torch.stack([F.mse_loss(predictions["a"], y[:, :3]), F.mse_loss(predictions["b"], y[:, 3:])])
    return losses, features


def preset(name: str, *overrides: str) -> GradNorm:
    return build(compose([f"balancer={name}", *overrides]).balancer, "balancer", num_tasks=T)


def run_ours(balancer: GradNorm, net, data, net_optimizer) -> list[list[float]]:
    """The training loop's order (gradnorm.train.train_step): backward, the network's step, the balancer's step.
    Returns the weights applied at every step."""
    params = params_for(balancer, net)
    applied = []
    for x, y in data:
        net_optimizer.zero_grad()
        losses, features = losses_of(net, x, y)
        balancer.backward(losses, params, features)
        applied.append(balancer.weights.tolist())
        net_optimizer.step()
        balancer.step()
    return applied


def assert_same_network(a: nn.Module, b: nn.Module, rel: float = 1e-4) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=rel, atol=1e-6), name


def flat(applied: list[list[float]]) -> list[float]:
    return [w for step in applied for w in step]


def assert_moved(applied: list[list[float]], by: float = 1e-3) -> None:
    """The test is not vacuous: the weights left 1."""
    assert max(abs(w - 1) for step in applied for w in step) > by, applied


# -- references, written from each implementation's code -----------------------------------------------------
def libmtl_reference(net, data, epoch_len, alpha, lr, weight_decay):
    """median-research-group/LibMTL @ 4336804: LibMTL/weighting/GradNorm.py (GradNorm.backward),
    abstract_weighting.py (_compute_grad in 'backward' mode, _reset_grad), trainer.py (train_singlelevel:
    zero_grad(set_to_none=False), backward, step; train_loss_buffer[:, epoch] = the epoch's mean loss)."""
    loss_scale = nn.Parameter(torch.tensor([1.0] * T))
    optimizer = torch.optim.Adam([*net.parameters(), loss_scale], lr=lr, weight_decay=weight_decay)
    shared = net.shared_parameters()
    buffer, epoch_losses, applied = None, [], []
    for step, (x, y) in enumerate(data):
        losses, _ = losses_of(net, x, y)
        optimizer.zero_grad(set_to_none=False)
        if step >= epoch_len:  # self.epoch >= 1
            weights = T * F.softmax(loss_scale, dim=-1)
            grads = torch.zeros(T, sum(p.numel() for p in shared))
            for tn in range(T):
                losses[tn].backward(retain_graph=(tn + 1) != T)
                grads[tn] = torch.cat([p.grad.view(-1) for p in shared])
                for p in shared:
                    p.grad.zero_()
            g_per_loss = torch.norm(weights.unsqueeze(1) * grads, p=2, dim=-1)
            g_mean = g_per_loss.mean(0)
            ratios = torch.tensor([losses[tn].item() / buffer[tn] for tn in range(T)])
            rates = ratios / ratios.mean()
            constant = (g_mean * rates**alpha).detach()
            (g_per_loss - constant).abs().sum(0).backward()
            loss_weight = weights.detach().clone()
            new = sum(loss_weight[i] * grads[i] for i in range(T))
            start = 0
            for p in shared:
                p.grad.data = new[start:start + p.numel()].view_as(p).clone()
                start += p.numel()
            applied.append(loss_weight.tolist())
        else:
            losses.sum().backward()
            applied.append([1.0] * T)
        optimizer.step()
        epoch_losses.append(losses.detach())
        if step == epoch_len - 1:
            buffer = torch.stack(epoch_losses).mean(0).tolist()
    return applied


def lucidrains_reference(net, data, alpha, lr, weights_lr):
    """lucidrains/gradnorm-pytorch @ 088c8d5 (0.2.2): gradnorm_pytorch/gradnorm_pytorch.py,
    GradNormLossWeighter.forward with grad_norm_parameters = W, restoring_force_alpha = alpha; the user's
    optimiser steps the network after it."""
    W = net.last_shared_layer.weight
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_weights, initial, applied = torch.ones(T), None, []
    for x, y in data:
        optimizer.zero_grad()
        losses, _ = losses_of(net, x, y)
        (losses * loss_weights.detach()).sum().backward(retain_graph=True)
        applied.append(loss_weights.tolist())
        if alpha > 0 and initial is None:
            initial = losses.detach().clone()
        learned = nn.Parameter(loss_weights.clone())
        norms = torch.stack([torch.autograd.grad(weight * loss, W, create_graph=True, retain_graph=True)[0].norm(p=2)
                             for weight, loss in zip(learned, losses)])
        average = norms.mean()
        if alpha > 0:
            rates = F.normalize(losses.detach() / initial, p=1, dim=-1) * T
            target = (average * rates**-alpha).detach()
        else:
            target = average.expand(T).detach()
        F.l1_loss(norms, target).backward()
        updated = learned - learned.grad * weights_lr
        loss_weights = (F.normalize(updated, p=1, dim=-1) * T).detach()
        optimizer.step()
    return applied


def lucasbotang_reference(net, data, alpha, lr1, lr2):
    """LucasBoTang/GradNorm @ a12e5d0: gradnorm.py, gradNorm(net, layer=W's layer, alpha, dataloader, ...)."""
    layer = net.last_shared_layer
    optimizer1 = torch.optim.Adam(net.parameters(), lr=lr1)
    applied = []
    for iters, (x, y) in enumerate(data):
        loss, _ = losses_of(net, x, y)
        if iters == 0:
            weights = nn.Parameter(torch.ones_like(loss))
            total = weights.sum().detach()
            optimizer2 = torch.optim.Adam([weights], lr=lr2)
            l0 = loss.detach()
        weighted_loss = weights @ loss
        optimizer1.zero_grad()
        weighted_loss.backward(retain_graph=True)
        gw = torch.stack([torch.norm(torch.autograd.grad(weights[i] * loss[i], layer.parameters(), retain_graph=True,
                                                         create_graph=True)[0]) for i in range(len(loss))])
        loss_ratio = loss.detach() / l0
        rt = loss_ratio / loss_ratio.mean()
        constant = (gw.mean().detach() * rt**alpha).detach()
        gradnorm_loss = torch.abs(gw - constant).sum()
        optimizer2.zero_grad()
        gradnorm_loss.backward()
        applied.append(weights.detach().tolist())
        optimizer1.step()
        optimizer2.step()
        weights = nn.Parameter((weights / weights.sum() * total).detach())
        optimizer2 = torch.optim.Adam([weights], lr=lr2)
    return applied


def brianlan_reference(net, data, passes, alpha, lr):
    """brianlan/pytorch-grad-norm @ 975ee85: train.py, train_toy_example (mode grad_norm); model.py
    (RegressionTrain.weights, a model parameter in the network's Adam)."""
    weights = nn.Parameter(torch.ones(T))
    optimizer = torch.optim.Adam([*net.parameters(), weights], lr=lr)
    W = net.last_shared_layer
    applied = []
    for t in range(passes):
        for x, y in data:
            task_loss, _ = losses_of(net, x, y)
            weighted_task_loss = weights * task_loss
            if t == 0:
                initial_task_loss = task_loss.data.numpy()
            loss = weighted_task_loss.sum()
            optimizer.zero_grad()
            loss.backward(retain_graph=True)
            weights.grad.data = weights.grad.data * 0.0
            norms = torch.stack([torch.norm(weights[i] * torch.autograd.grad(task_loss[i], W.parameters(),
                                                                              retain_graph=True)[0])
                                 for i in range(len(task_loss))])
            loss_ratio = task_loss.data.numpy() / initial_task_loss
            inverse_train_rate = loss_ratio / loss_ratio.mean()
            mean_norm = norms.data.numpy().mean()
            constant_term = torch.tensor(mean_norm * inverse_train_rate**alpha, requires_grad=False)
            grad_norm_loss = torch.sum(torch.abs(norms - constant_term))
            weights.grad = torch.autograd.grad(grad_norm_loss, weights)[0]
            applied.append(weights.data.tolist())
            optimizer.step()
        weights.data = weights.data * (T / torch.sum(weights.data, dim=0))
    return applied


def aligned_mtl_reference(net, data, alpha, lr):
    """SamsungLabs/MTL @ 3f577f1: code/optim/gradnorm/balancer.py (GradNormBalancer.step_with_model),
    code/optim/basic_balancer.py (get_G_wrt_shared with update_decoder_grads=True), train.py (zero_grad,
    step_with_model, step); the decoders' scalar weights in the network's optimiser."""
    decoder_weights = [nn.Parameter(torch.tensor(1.0)) for _ in range(T)]
    optimizer = torch.optim.Adam([*net.parameters(), *decoder_weights], lr=lr)
    shared = list(net.last_shared_layer.parameters())
    initial, applied = None, []
    for x, y in data:
        optimizer.zero_grad()
        hrepr = net.shared(x)
        heads = list(net.heads.values())
        criteria = [lambda p, y=y: F.mse_loss(p, y[:, :3]), lambda p, y=y: F.mse_loss(p, y[:, 3:])]
        losses = [criteria[i](heads[i](hrepr)) for i in range(T)]
        grads = []
        for loss in losses:
            for p in shared:
                if p.grad is not None:
                    p.grad.data.zero_()
            loss.backward(retain_graph=True)
            grads.append(torch.cat([p.grad.flatten().clone() for p in shared]))
        for p in shared:
            p.grad.data.zero_()
        G = torch.stack(grads, dim=0)
        weights = torch.stack(decoder_weights)
        weights = weights * T / torch.sum(weights)
        scaled = G.T * weights.view(1, -1)
        if initial is None:
            initial = [loss.clone().detach() for loss in losses]
        itrates = torch.stack([loss.clone().detach() / first for loss, first in zip(losses, initial)])
        itrates = (itrates / torch.mean(itrates)).pow(alpha)
        norms = torch.norm(scaled, dim=0, p=2)
        mean_norm = torch.mean(norms).clone().detach()
        torch.sum(torch.abs(norms - itrates * mean_norm)).backward()
        applied.append([w.item() for w in decoder_weights])
        total = 0.0
        for i in range(T):
            total = total + decoder_weights[i].clone().detach() * criteria[i](heads[i](hrepr))
        total.backward()
        optimizer.step()
    return applied


# -- each preset against its reference -------------------------------------------------------------------------
def test_libmtl_preset_follows_libmtl():
    net, data = network(), batches(8)
    reference_net = copy.deepcopy(net)
    expected = libmtl_reference(reference_net, data, epoch_len=3, alpha=1.5, lr=0.05, weight_decay=1e-5)
    balancer = preset("gradnorm_libmtl", "alpha=1.5", "trainer.optimizer.lr=0.05", "balancer.epoch_steps=3")
    got = run_ours(balancer, net, data, torch.optim.Adam(net.parameters(), lr=0.05, weight_decay=1e-5))
    assert got[:3] == [[1.0, 1.0]] * 3  # epoch 0 at equal weights
    assert_moved(got)
    assert len(got) == len(expected) and flat(got) == pytest.approx(flat(expected), rel=1e-4)
    assert_same_network(net, reference_net)


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_lucidrains_preset_follows_gradnorm_pytorch(alpha):
    net, data = network(), batches(6)
    reference_net = copy.deepcopy(net)
    expected = lucidrains_reference(reference_net, data, alpha=alpha, lr=0.01, weights_lr=0.05)
    balancer = preset("gradnorm_lucidrains", f"alpha={alpha}", "balancer.optimizer.lr=0.05")
    got = run_ours(balancer, net, data, torch.optim.Adam(net.parameters(), lr=0.01))
    assert_moved(got)
    assert len(got) == len(expected) and flat(got) == pytest.approx(flat(expected), rel=1e-4)
    assert_same_network(net, reference_net)  # L_grad's second-order term reached the network alike


def test_lucasbotang_preset_follows_its_gradnorm():
    net, data = network(), batches(6)
    reference_net = copy.deepcopy(net)
    expected = lucasbotang_reference(reference_net, data, alpha=0.12, lr1=0.01, lr2=0.05)
    balancer = preset("gradnorm_lucasbotang", "alpha=0.12", "balancer.optimizer.lr=0.05")
    got = run_ours(balancer, net, data, torch.optim.Adam(net.parameters(), lr=0.01))
    assert_moved(got)
    # a fresh Adam every step: each step moves w_i by ±lr2 before the renormalisation
    assert got[1] == pytest.approx([1 - 0.05, 1 + 0.05], abs=1e-5) or got[1] == pytest.approx([1 + 0.05, 1 - 0.05],
                                                                                               abs=1e-5)
    assert len(got) == len(expected) and flat(got) == pytest.approx(flat(expected), rel=1e-4)
    assert_same_network(net, reference_net)


def test_brianlan_preset_follows_pytorch_grad_norm():
    net, data = network(), batches(3)
    reference_net = copy.deepcopy(net)
    expected = brianlan_reference(reference_net, data, passes=3, alpha=0.12, lr=0.05)
    balancer = preset("gradnorm_brianlan", "alpha=0.12", "trainer.optimizer.lr=0.05", "balancer.epoch_steps=3")
    got = run_ours(balancer, net, data * 3, torch.optim.Adam(net.parameters(), lr=0.05))
    assert_moved(got)
    assert sum(got[3]) == pytest.approx(T, abs=1e-5)  # renormalised after each pass
    assert len(got) == len(expected) and flat(got) == pytest.approx(flat(expected), rel=1e-4)
    assert_same_network(net, reference_net)


def test_aligned_mtl_preset_follows_its_gradnorm_balancer():
    # A last shared layer without a bias: theirs takes the norm (and the zeroing) over all of that layer's
    # parameters, the preset over its weight W only (the one difference, documented in the preset).
    net, data = network(bias_at_w=False), batches(6)
    reference_net = copy.deepcopy(net)
    expected = aligned_mtl_reference(reference_net, data, alpha=2.0, lr=0.05)
    balancer = preset("gradnorm_aligned_mtl", "alpha=2", "trainer.optimizer.lr=0.05")
    got = run_ours(balancer, net, data, torch.optim.Adam(net.parameters(), lr=0.05))
    assert_moved(got)
    assert sum(got[-1]) != pytest.approx(T, abs=1e-4)  # the raw weights are never renormalised
    assert len(got) == len(expected) and flat(got) == pytest.approx(flat(expected), rel=1e-4)
    assert_same_network(net, reference_net)


def test_the_papers_gradnorm_differs_from_every_preset_on_the_same_problem():
    data = batches(6)
    net = network()
    paper = run_ours(preset("gradnorm", "alpha=0.5", "weights_lr=0.05"), net, data,
                     torch.optim.Adam(net.parameters(), lr=0.01))
    for name in ("libmtl", "lucidrains", "lucasbotang", "brianlan", "aligned_mtl"):
        net = network()
        got = run_ours(preset(f"gradnorm_{name}", "alpha=0.5", "balancer.optimizer.lr=0.05",
                              *(["balancer.epoch_steps=2"] if name in ("libmtl", "brianlan") else [])),
                       net, data, torch.optim.Adam(net.parameters(), lr=0.01))
        assert flat(got) != pytest.approx(flat(paper), rel=1e-3), name


# -- each choice on hand-worked numbers (the W = (1, 2) problem of test_gradnorm.py) ---------------------------
def w_problem(balancer, W_values=(1.0, 2.0)):
    """L1 = Σ W², L2 = 3 Σ W at W: gradients 2W and (3, 3)."""
    W = torch.tensor(W_values, requires_grad=True)
    losses = torch.stack([(W**2).sum(), 3 * W.sum()])
    info = balancer.backward(losses, [W])
    return W, info


def test_softmax_steps_the_logits_by_the_chain_rule():
    balancer = GradNorm(2, alpha=1.0, optimizer=SGD, parametrization="softmax")
    w_problem(balancer)
    n1, n2 = math.sqrt(20), math.sqrt(18)
    g = torch.tensor([n1, -n2])  # ∂L_grad/∂w at w = (1, 1), r = (1, 1)
    w = torch.ones(2)
    theta = torch.ones(2) - 0.1 * w * (g - (g * w).sum() / 2)
    balancer.step()
    assert torch.allclose(balancer.task_logits.detach(), theta, atol=1e-6)
    assert torch.allclose(balancer.weights, 2 * torch.softmax(theta, 0), atol=1e-6)
    assert balancer.weights.sum().item() == pytest.approx(2.0)


def test_l1_keeps_signs_and_the_sum_of_absolute_values():
    balancer = GradNorm(2, alpha=1.0, optimizer=functools.partial(torch.optim.SGD, lr=0.5), parametrization="l1")
    w_problem(balancer)
    balancer.step()
    stepped = torch.tensor([1 - 0.5 * math.sqrt(20), 1 + 0.5 * math.sqrt(18)])  # (−1.24, 3.12): a negative weight
    assert torch.allclose(balancer.weights, 2 * stepped / stepped.abs().sum(), atol=1e-6)
    assert balancer.weights[0] < 0 and balancer.weights.abs().sum().item() == pytest.approx(2.0)


def test_unnormalized_weights_are_applied_raw_and_normalised_only_in_l_grad():
    balancer = GradNorm(2, alpha=1.0, optimizer=SGD, parametrization="unnormalized")
    with torch.no_grad():
        balancer.task_weights.copy_(torch.tensor([0.5, 2.0]))
    W, _ = w_problem(balancer)
    assert W.grad.tolist() == pytest.approx([0.5 * 2 + 2.0 * 3, 0.5 * 4 + 2.0 * 3])  # the raw weights
    w = torch.tensor([0.5, 2.0], requires_grad=True)  # autograd of L_grad through ŵ = T w / Σ w
    hat = 2 * w / w.sum()
    G = hat * torch.tensor([math.sqrt(20), math.sqrt(18)])
    (G - G.mean().detach()).abs().sum().backward()
    balancer.step()
    assert torch.allclose(balancer.weights, torch.tensor([0.5, 2.0]) - 0.1 * w.grad, atol=1e-6)


def test_rate_sign_inverts_the_exponent_and_mean_halves_l_grad():
    losses_at = [torch.tensor([4.0, 1.0]), torch.tensor([1.0, 1.0])]  # r = (1.6, 0.4) at the second step

    def l_grad(**kwargs):
        balancer = GradNorm(2, alpha=1.0, optimizer=functools.partial(torch.optim.SGD, lr=0.0), **kwargs)
        for scale in losses_at:
            W = torch.tensor([1.0, 2.0], requires_grad=True)
            info = balancer.backward(torch.stack([scale[0] * (W**2).sum(), scale[1] * 3 * W.sum()]), [W])
            balancer.step()
        return info["gradnorm/l_grad"]

    G = torch.tensor([math.sqrt(20), math.sqrt(18)])
    r = torch.tensor([0.25, 1.0]) / 0.625
    assert l_grad() == pytest.approx((G - G.mean() * r).abs().sum().item(), rel=1e-6)
    assert l_grad(rate_sign=-1) == pytest.approx((G - G.mean() / r).abs().sum().item(), rel=1e-6)
    assert l_grad(grad_loss_reduction="mean") == pytest.approx((G - G.mean() * r).abs().mean().item(), rel=1e-6)


def test_reset_optimizer_makes_every_adam_step_a_first_step():
    def steps(reset):
        balancer = GradNorm(2, alpha=0.0, optimizer=functools.partial(torch.optim.Adam, lr=0.01),
                            reset_optimizer=reset)
        moves = []
        for _ in range(3):
            w_problem(balancer)
            before = balancer.weights
            balancer.step()
            moves.append((balancer.weights - before).abs().max().item())
        return moves, balancer.optimizer.state_dict()["state"][0]["step"].item()

    (fresh, fresh_steps), (_, kept_steps) = steps(True), steps(False)
    assert fresh == pytest.approx([0.01] * 3, rel=1e-3)  # ±lr, then renormalised (the sum is kept: still ±lr)
    assert (fresh_steps, kept_steps) == (1, 3)  # Adam's state: one step since the last reset


def test_first_epoch_mean_trains_at_equal_weights_then_takes_their_mean_loss():
    balancer = GradNorm(2, alpha=1.0, optimizer=SGD, initial_losses_from="first_epoch_mean", epoch_steps=2)
    for scale in (1.0, 0.5):
        W, info = w_problem(balancer, (scale, 2 * scale))
        assert info == {} and W.grad.tolist() == pytest.approx([2 * scale + 3, 4 * scale + 3])  # ∇(L1 + L2)
        balancer.step()
        assert balancer.weights.tolist() == [1.0, 1.0]
    assert balancer.initial_losses.tolist() == pytest.approx([(5 + 1.25) / 2, (9 + 4.5) / 2])
    w_problem(balancer)  # GradNorm from the third step on
    balancer.step()
    assert balancer.weights.tolist() != [1.0, 1.0]


def test_first_epoch_overwrites_the_initial_losses_through_the_first_epoch():
    balancer = GradNorm(2, alpha=1.0, optimizer=SGD, initial_losses_from="first_epoch", epoch_steps=2)
    for scale in (1.0, 0.5, 0.25):
        _, info = w_problem(balancer, (scale, 2 * scale))
        if scale > 0.3:
            assert info["gradnorm/relative_rate_0"] == pytest.approx(1.0)  # L(0) = this step's losses
        balancer.step()
    assert balancer.initial_losses.tolist() == pytest.approx([1.25, 4.5])  # the last step of the first epoch
    assert info["gradnorm/relative_rate_0"] != pytest.approx(1.0)


def test_ema_moves_the_initial_losses_before_the_rates():
    balancer = GradNorm(2, alpha=1.0, optimizer=SGD, initial_losses_from="ema", initial_losses_decay=0.9)
    w_problem(balancer)
    balancer.step()
    _, info = w_problem(balancer, (0.5, 1.0))  # losses (1.25, 4.5); L(0) ← 0.9 L(0) + 0.1 L
    balancer.step()
    initial = [0.9 * 5 + 0.1 * 1.25, 0.9 * 9 + 0.1 * 4.5]
    assert balancer.initial_losses.tolist() == pytest.approx(initial, rel=1e-6)
    ratios = [1.25 / initial[0], 4.5 / initial[1]]
    assert info["gradnorm/relative_rate_0"] == pytest.approx(ratios[0] / (sum(ratios) / 2), rel=1e-6)


def test_renormalize_epoch_renormalises_once_per_epoch():
    balancer = GradNorm(2, alpha=1.0, optimizer=SGD, renormalize="epoch", epoch_steps=2)
    w_problem(balancer)
    balancer.step()
    assert balancer.weights.tolist() == pytest.approx([1 - 0.1 * math.sqrt(20), 1 + 0.1 * math.sqrt(18)], rel=1e-6)
    w_problem(balancer)
    balancer.step()
    assert balancer.weights.sum().item() == pytest.approx(2.0)


def test_norm_at_shared_takes_one_norm_over_every_shared_parameter():
    net = network()
    x, y = batches(1)[0]
    balancer = GradNorm(2, alpha=0.0, norm_at="shared", initial_losses=[1.0, 1.0])
    assert params_for(balancer, net) == net.shared_parameters()
    losses, features = losses_of(net, x, y)
    expected = [torch.cat([g.flatten() for g in torch.autograd.grad(loss, net.shared_parameters(),
                                                                    retain_graph=True)]).norm().item()
                for loss in losses]
    info = balancer.backward(losses, net.shared_parameters(), features)
    assert [info["gradnorm/grad_norm_0"], info["gradnorm/grad_norm_1"]] == pytest.approx(expected, rel=1e-5)


def test_features_batch_sum_takes_the_norm_of_the_gradient_summed_over_the_batch():
    net = network()
    x, y = batches(1)[0]
    balancer = GradNorm(2, alpha=0.0, norm_at="features_batch_sum", initial_losses=[1.0, 1.0])
    losses, features = losses_of(net, x, y)
    at_z = [torch.autograd.grad(loss, f, retain_graph=True)[0] for loss, f in zip(losses, features)]
    expected = [g.sum(0).norm().item() for g in at_z]
    info = balancer.backward(losses, net.last_shared_parameters(), features)
    assert [info["gradnorm/grad_norm_0"], info["gradnorm/grad_norm_1"]] == pytest.approx(expected, rel=1e-5)
    assert expected[0] < at_z[0].norm().item()  # not norm_at=features


def test_grad_through_norms_adds_l_grads_gradient_to_the_network():
    net = network()
    reference_net = copy.deepcopy(net)
    x, y = batches(1)[0]
    balancer = GradNorm(2, alpha=0.0, grad_through_norms=True, initial_losses=[1.0, 1.0])
    losses, features = losses_of(net, x, y)
    balancer.backward(losses, net.last_shared_parameters(), features)
    # the literal reading: G_i by create_graph, L_grad = Σ|G_i − Ḡ| (target constant), backward into everything
    losses, _ = losses_of(reference_net, x, y)
    W = reference_net.last_shared_layer.weight
    G = torch.stack([torch.autograd.grad(loss, W, create_graph=True)[0].norm() for loss in losses])
    (losses.sum() + (G - G.mean().detach()).abs().sum()).backward()
    for p, q in zip(net.parameters(), reference_net.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def test_extra_unweighted_grad_spares_w_only():
    net = network()
    x, y = batches(1)[0]
    balancer = GradNorm(2, alpha=0.0, extra_unweighted_grad=True, initial_losses=[1.0, 1.0])
    with torch.no_grad():
        balancer.task_weights.copy_(torch.tensor([0.5, 1.5]))
    losses, features = losses_of(net, x, y)
    balancer.backward(losses, net.last_shared_parameters(), features)
    W = net.last_shared_layer.weight
    losses, _ = losses_of(net, x, y)
    for p in net.parameters():
        weights = torch.tensor([0.5, 1.5]) if p is W else torch.tensor([1.5, 2.5])
        expected = sum(w * g for w, g in zip(weights, (torch.autograd.grad(loss, p, retain_graph=True,
                                                                             allow_unused=True)[0] for loss in losses))
                       if g is not None)
        assert torch.allclose(p.grad, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("norm_at", ["shared", "features_batch_sum"])
def test_unweighted_heads_get_their_own_loss_and_the_trunk_the_weighted_sum(norm_at):
    net = network()
    x, y = batches(1)[0]
    balancer = GradNorm(2, alpha=0.0, norm_at=norm_at, weighted_heads=False, initial_losses=[1.0, 1.0])
    with torch.no_grad():
        balancer.task_weights.copy_(torch.tensor([0.5, 1.5]))
    losses, features = losses_of(net, x, y)
    info = balancer.backward(losses, params_for(balancer, net), features)
    losses, features = losses_of(net, x, y)
    for name, head in net.heads.items():
        loss = losses[0 if name == "a" else 1]
        for p in head.parameters():
            assert torch.allclose(p.grad, torch.autograd.grad(loss, p, retain_graph=True)[0])
    for p in net.shared_parameters():
        trunk = sum(w * torch.autograd.grad(loss, p, retain_graph=True)[0] for w, loss in zip((0.5, 1.5), losses))
        assert torch.allclose(p.grad, trunk, rtol=1e-5, atol=1e-7)
    if norm_at == "shared":
        norms = [w * torch.cat([g.flatten() for g in torch.autograd.grad(loss, net.shared_parameters(),
                                                                         retain_graph=True)]).norm().item()
                 for w, loss in zip((0.5, 1.5), losses)]
    else:
        norms = [w * torch.autograd.grad(loss, f, retain_graph=True)[0].sum(0).norm().item()
                 for w, loss, f in zip((0.5, 1.5), losses, features)]
    assert [info["gradnorm/grad_norm_0"], info["gradnorm/grad_norm_1"]] == pytest.approx(norms, rel=1e-5)


# -- routes, state and checks ----------------------------------------------------------------------------------
@pytest.mark.parametrize("choice", [{"parametrization": "softmax", "norm_at": "shared"},
                                    {"norm_at": "features_batch_sum"}, {"weighted_heads": False, "norm_at": "shared"},
                                    {"extra_unweighted_grad": True}, {"parametrization": "unnormalized"}])
def test_two_micro_batches_make_one_update_on_their_union(choice):
    x, y = batches(1)[0]

    def update(parts):
        net = network()
        balancer = GradNorm(2, alpha=0.5, initial_losses=[30.0, 3000.0], **choice)
        params = params_for(balancer, net)
        for part in parts:
            losses, features = losses_of(net, x[part], y[part])
            balancer.backward(losses / len(parts), params, features)
        applied = balancer.weights
        balancer.step()
        return applied, balancer.weights, [p.grad.clone() for p in net.parameters()]

    whole, halves = update([slice(0, 8)]), update([slice(0, 4), slice(4, 8)])
    assert torch.allclose(whole[1], halves[1], atol=1e-5)
    for a, b in zip(whole[2], halves[2]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_grad_through_norms_refuses_micro_batches():
    net = network()
    x, y = batches(1)[0]
    balancer = GradNorm(2, grad_through_norms=True)
    losses, features = losses_of(net, x[:4], y[:4])
    balancer.backward(losses / 2, net.last_shared_parameters(), features)
    losses, features = losses_of(net, x[4:], y[4:])
    with pytest.raises(ValueError, match="one backward\\(\\) per update"):
        balancer.backward(losses / 2, net.last_shared_parameters(), features)


@pytest.mark.parametrize("name", ["gradnorm_libmtl", "gradnorm_brianlan", "gradnorm_lucidrains"])
def test_a_variant_resumes_from_its_state_dict_mid_epoch(name):
    data = batches(6)
    net = network()
    balancer = preset(name, "balancer.epoch_steps=4", "balancer.optimizer.lr=0.05")
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    straight = run_ours(balancer, net, data, optimizer)

    net = network()
    first = preset(name, "balancer.epoch_steps=4", "balancer.optimizer.lr=0.05")
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    applied = run_ours(first, net, data[:3], optimizer)
    resumed = preset(name, "balancer.epoch_steps=4", "balancer.optimizer.lr=0.05")
    resumed.load_state_dict(first.state_dict())
    applied += run_ours(resumed, net, data[3:], optimizer)
    assert flat(applied) == pytest.approx(flat(straight), rel=1e-6)


def test_variant_names_and_labels():
    assert variant_name({"alpha": 0.12, "norm_at": "weights"}) == "paper"
    assert variant_name({"parametrization": "softmax", "rate_sign": -1}) == "parametrization=softmax,rate_sign=-1"
    assert variant_name({"variant": "libmtl", "parametrization": "softmax"}) == "libmtl"
    assert GradNorm.label_for({"alpha": 1.5, "variant": "libmtl"}) == "GradNorm α=1.5 [libmtl]"
    assert GradNorm.label_for({"alpha": 0.12, "reset_optimizer": True}) == "GradNorm α=0.12 [reset_optimizer=true]"
    assert GradNorm.label_for({"alpha": 0.12}) == "GradNorm α=0.12"


BAD = [
    ({"parametrization": "exp"}, "parametrization must be one of direct, softmax, l1, unnormalized; got 'exp'"),
    ({"norm_at": "grads"}, "norm_at must be one of weights, shared, features, features_batch_sum; got 'grads'"),
    ({"initial_losses_from": "last"}, "initial_losses_from must be one of first_step, first_epoch_mean, first_epoch, "
                                      "ema; got 'last'"),
    ({"initial_losses_from": "first_epoch"}, "epoch_steps (steps per pass over the training data) is needed"),
    ({"epoch_steps": 0}, "epoch_steps must be a positive integer, got 0"),
    ({"initial_losses_decay": 1.5}, "initial_losses_decay must be a number in [0, 1], got 1.5"),
    ({"rate_sign": 2}, "rate_sign must be 1 or -1, got 2"),
    ({"grad_loss_reduction": "max"}, "grad_loss_reduction must be one of sum, mean; got 'max'"),
    ({"reset_optimizer": "yes"}, "reset_optimizer must be true or false, got 'yes'"),
    ({"grad_through_norms": 1}, "grad_through_norms must be true or false, got 1"),
    ({"extra_unweighted_grad": "no"}, "extra_unweighted_grad must be true or false, got 'no'"),
    ({"weighted_heads": None}, "weighted_heads must be true or false, got None"),
    ({"renormalize": "never"}, "renormalize must be one of step, epoch; got 'never'"),
    ({"renormalize": "epoch", "epoch_steps": 5, "parametrization": "softmax"}, "renormalize=epoch needs parametrization"),
    ({"extra_unweighted_grad": True, "norm_at": "shared"}, "extra_unweighted_grad needs norm_at=weights"),
    ({"weighted_heads": False}, "weighted_heads=false needs norm_at shared, features or features_batch_sum"),
    ({"initial_losses_from": "first_epoch_mean", "epoch_steps": 3, "initial_losses": [1, 1]},
     "initial_losses (given values) cannot be used with initial_losses_from=first_epoch_mean"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=[str(k) for k, _ in BAD])
def test_a_bad_choice_is_one_clear_error(kwargs, message):
    with pytest.raises(ValueError) as caught:
        GradNorm(2, **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_choice_from_the_command_line_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="balancer: rate_sign must be 1 or -1, got 3"):
        train(tiny_config("balancer.rate_sign=3"), tmp_path / "run")
