"""The toy data set (paper §4) and its batches."""

import pytest
import torch

from gradnorm.data.base import step_indices
from gradnorm.data.toy import ToyRegression, draw_sigmas


def test_targets_follow_the_paper_formula():
    data = ToyRegression(num_tasks=2, sigmas=[1.0, 100.0], num_train=50, num_test=10, seed=3)
    assert data.train_inputs.shape == (50, 250) and data.test_inputs.shape == (10, 250)
    assert [t.name for t in data.tasks] == ["task_0", "task_1"]
    # The network sees standardised inputs; f_i sees x with L2 norm `input_norm` (0.1).
    x = data.train_inputs / (250**0.5) * 0.1
    assert torch.allclose(x.norm(dim=1), torch.full((50,), 0.1), atol=1e-6)
    for i, sigma in enumerate((1.0, 100.0)):
        expected = sigma * torch.tanh(x @ (data.B + data.epsilons[i]).T)
        assert torch.allclose(data.train_targets[f"task_{i}"], expected, atol=1e-4 * sigma)
    assert data.B.std().item() == pytest.approx(10.0, rel=0.05)
    assert data.epsilons.std().item() == pytest.approx(3.5, rel=0.05)


def test_same_seed_same_problem_other_seed_other_problem():
    a, b, c = (ToyRegression(num_train=20, num_test=5, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.train_targets["task_1"], b.train_targets["task_1"])
    assert not torch.equal(a.B, c.B)


def test_ten_task_sigmas_are_drawn_once_from_their_own_seed():
    sigmas = draw_sigmas(10, sigma_std=50.0, sigma_seed=0, sigma_min=1.0)
    assert sigmas == draw_sigmas(10, sigma_std=50.0, sigma_seed=0, sigma_min=1.0)
    assert len(sigmas) == 10 and min(sigmas) >= 1.0 and max(sigmas) / min(sigmas) > 5
    data = ToyRegression(num_tasks=10, sigmas=None, num_train=20, num_test=5, seed=5)
    assert data.sigmas == sigmas


@pytest.mark.parametrize("kwargs, message", [
    ({"num_tasks": 2, "sigmas": [1.0]}, "list of 2 positive numbers"),
    ({"num_tasks": 2, "sigmas": [1.0, -3.0]}, "sigmas must be a number > 0"),
    ({"num_tasks": 2, "sigmas": "big"}, "sigmas must be a list"),
    ({"num_train": 0}, "num_train must be a positive integer"),
])
def test_bad_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ToyRegression(**kwargs)


def test_batches_are_a_function_of_seed_and_step():
    data = ToyRegression(num_train=100, num_test=30, seed=0)
    it = data.train_batches(batch_size=10, seed=7)
    batches = [next(it) for _ in range(25)]
    resumed = data.train_batches(batch_size=10, seed=7, start_step=13)
    assert torch.equal(next(resumed)[0], batches[13][0])
    # Each epoch (10 steps) visits every sample once.
    epoch = torch.cat([step_indices(100, 10, 7, s) for s in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))


def test_ranks_split_the_global_batch():
    single = step_indices(100, 20, seed=1, step=3)
    halves = [step_indices(100, 10, seed=1, step=3, rank=r, world_size=2) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), single)


def test_test_batches_cover_the_test_set_once():
    data = ToyRegression(num_train=10, num_test=25, seed=0)
    seen = torch.cat([x for x, _ in data.test_batches(batch_size=10)])
    assert torch.equal(seen, data.test_inputs)
    shards = [torch.cat([x for x, _ in data.test_batches(4, rank=r, world_size=2)]) for r in (0, 1)]
    assert sum(len(s) for s in shards) == 25
