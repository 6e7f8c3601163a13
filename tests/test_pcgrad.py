"""PCGrad: the two-task closed form, no change without conflict, T=3 against a direct projection of
the gradient vectors in the same random order, and heads with ∇ Σ_i L_i."""

from __future__ import annotations

import numpy as np
import pytest
from method_cases import linear_problem

from gradnorm.balancers import PCGrad
from gradnorm.balancers.pcgrad import project_conflicts


def test_two_conflicting_tasks_closed_form():
    # g1 = (1, 0), g2 = (-1, 1): g1·g2 = -1. g1^PC = g1 + g2/2 = (0.5, 0.5), g2^PC = g2 + g1 = (0, 1).
    losses, theta, heads, _, _ = linear_problem([[1.0, 0.0], [-1.0, 1.0]], head_grads=[2.0, 3.0])
    info = PCGrad(2).backward(losses, [theta])
    assert theta.grad.tolist() == pytest.approx([0.5, 1.5], abs=1e-12)
    assert heads.grad.tolist() == [2.0, 3.0]  # the heads: ∇ Σ_i L_i
    assert [info["pcgrad/beta_0"], info["pcgrad/beta_1"]] == pytest.approx([2.0, 1.5])


def test_no_conflict_is_the_plain_sum():
    losses, theta, _, _, _ = linear_problem([[1.0, 0.0], [1.0, 1.0]])
    PCGrad(2).backward(losses, [theta])
    assert theta.grad.tolist() == pytest.approx([2.0, 1.0])


def direct_pcgrad(g: np.ndarray, orders) -> np.ndarray:
    out = np.zeros(g.shape[1])
    for i, order in enumerate(orders):
        v = g[i].copy()
        for j in order:
            if v @ g[j] < 0:
                v = v - (v @ g[j]) / (g[j] @ g[j]) * g[j]
        out += v
    return out


def test_three_tasks_match_the_vector_algorithm_in_the_same_order():
    rng = np.random.default_rng(3)
    g = rng.standard_normal((3, 5))
    g[1] = -g[0] + 0.3 * rng.standard_normal(5)  # certain conflicts
    seed_rng = np.random.default_rng(7)
    beta = project_conflicts(g @ g.T, seed_rng)
    replay = np.random.default_rng(7)
    orders = [replay.permutation([j for j in range(3) if j != i]) for i in range(3)]
    np.testing.assert_allclose(beta @ g, direct_pcgrad(g, orders), atol=1e-12)


def test_projected_gradients_do_not_conflict_for_two_tasks():
    # After projection g1^PC · g2 = 0 and g2^PC · g1 = 0: d · g_i = ||g_i||² - conflict share ≥ 0.
    g = np.array([[2.0, 1.0, 0.0], [-1.0, 0.5, 1.0]])
    d = project_conflicts(g @ g.T) @ g
    g1_pc = g[0] - (g[0] @ g[1]) / (g[1] @ g[1]) * g[1]
    assert g1_pc @ g[1] == pytest.approx(0.0, abs=1e-12)
    assert (g @ d > 0).all()


def test_random_order_depends_on_seed_and_update_only():
    gram = np.full((4, 4), -0.3) + 1.3 * np.eye(4)  # unit gradients, every pair in conflict
    a, b = PCGrad(4, seed=5), PCGrad(4, seed=5)
    first = []
    for _ in range(3):
        first.append(a.coefficients(gram, []))
        assert a.coefficients(gram, []).tolist() == first[-1].tolist()  # the same order within an update
        a.step()
    b.load_state_dict(a.state_dict())
    a_next, b_next = a.coefficients(gram, []), b.coefficients(gram, [])
    np.testing.assert_array_equal(a_next, b_next)
    assert len({tuple(np.round(x, 12)) for x in first}) > 1  # the orders do change between steps


def test_bad_seed():
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        PCGrad(2, seed=-1)
