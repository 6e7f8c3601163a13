"""The synthetic regression toy of the paper (docs/paper.md §4, Figure 2).

Task i regresses f_i(x) = σ_i · tanh((B + ε_i) x), element-wise tanh, x ∈ R^250, outputs in R^100,
with B and ε_i constant matrices of IID normal entries. The σ_i set the scale of each task's loss;
that scale imbalance is what the balancers must handle.

Choices where the paper is silent (docs/toy.md lists them with the reasons):
* 10 and 3.5 are the standard deviations of B's and ε_i's entries (as public reimplementations do);
* x is drawn uniformly in [−1, 1]^250 and rescaled to L2 norm ``input_norm`` (0.1: the entries of
  (B + ε_i) x then have a standard deviation of about 1, so tanh is neither linear nor saturated);
  the network receives x standardised to unit RMS per coordinate (``standardize_inputs``);
* 10 and 3.5 may be read as variances instead (``spread_as="variance"``: the entries' standard
  deviations are then √10 and √3.5);
* the train and test sets are fixed samples of ``num_train`` and ``num_test`` points, or
  (``fresh_samples``) every training batch is a new sample, a pure function of (seed, step);
* for T=10 and no ``sigmas`` given, σ_i = |N(0, sigma_std²)| drawn with ``sigma_seed``, floored at
  ``sigma_min``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gradnorm.checks import as_float, boolean, choice, integer
from gradnorm.data.base import InMemoryData
from gradnorm.tasks import Regression


def draw_sigmas(num_tasks: int, sigma_std: float, sigma_seed: int, sigma_min: float) -> list[float]:
    """σ_i ~ |N(0, sigma_std²)|, floored at ``sigma_min``, from their own fixed seed."""
    generator = torch.Generator().manual_seed(int(sigma_seed))
    draws = torch.randn(num_tasks, generator=generator, dtype=torch.float64).abs() * sigma_std
    return [round(float(s), 4) for s in draws.clamp(min=sigma_min)]


class ToyRegression(InMemoryData):
    """T regression tasks that share B and differ by ε_i and the scale σ_i.

    Args:
        num_tasks: T.
        sigmas: the σ_i (length T); ``None`` draws them (see :func:`draw_sigmas`).
        seed: seed of B, the ε_i and the data points (the network's seed is separate).
    """

    def __init__(
        self,
        num_tasks: int = 2,
        sigmas=(1.0, 100.0),
        input_dim: int = 250,
        output_dim: int = 100,
        b_std: float = 10.0,
        eps_std: float = 3.5,
        input_norm: float = 0.1,
        num_train: int = 2000,
        num_test: int = 1000,
        seed: int = 0,
        sigma_std: float = 50.0,
        sigma_seed: int = 0,
        sigma_min: float = 1.0,
        standardize_inputs: bool = True,
        spread_as: str = "std",
        fresh_samples: bool = False,
    ):
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"dataset.num_tasks must be a positive integer, got {num_tasks!r}")
        integer(seed, "dataset.seed")
        integer(sigma_seed, "dataset.sigma_seed")
        boolean(standardize_inputs, "dataset.standardize_inputs")
        if sigmas is None:
            sigmas = draw_sigmas(num_tasks, as_float(sigma_std, "dataset.sigma_std", minimum=0, strict=True),
                                 sigma_seed, as_float(sigma_min, "dataset.sigma_min", minimum=0))
        if isinstance(sigmas, str | int | float):
            raise ValueError(f"dataset.sigmas must be a list of {num_tasks} positive numbers, got {sigmas!r}")
        sigmas = [as_float(s, "dataset.sigmas", minimum=0, strict=True) for s in sigmas]
        if len(sigmas) != num_tasks:
            raise ValueError(f"dataset.sigmas must be a list of {num_tasks} positive numbers (one per task), "
                             f"got {len(sigmas)}: {sigmas}")
        for name, value in (("num_train", num_train), ("num_test", num_test), ("input_dim", input_dim),
                            ("output_dim", output_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"dataset.{name} must be a positive integer, got {value!r}")
        choice(spread_as, "dataset.spread_as", ("std", "variance"))
        boolean(fresh_samples, "dataset.fresh_samples")
        b_std = as_float(b_std, "dataset.b_std", minimum=0)
        eps_std = as_float(eps_std, "dataset.eps_std", minimum=0)
        if spread_as == "variance":  # N(0, 10) read as a variance: standard deviation √10
            b_std, eps_std = b_std**0.5, eps_std**0.5
        self.sigmas = sigmas
        self.input_dim = input_dim
        self.b_std, self.eps_std = b_std, eps_std
        self.fresh_samples = fresh_samples
        self.tasks = [Regression(f"task_{i}", output_dim) for i in range(num_tasks)]

        g = torch.Generator().manual_seed(int(seed))
        self.B = torch.randn(output_dim, input_dim, generator=g) * b_std
        self.epsilons = torch.randn(num_tasks, output_dim, input_dim, generator=g) * eps_std
        norm = as_float(input_norm, "dataset.input_norm", minimum=0, strict=True)
        self.input_norm = norm
        # what the network sees: x with unit RMS per coordinate (standardised), or x itself; f_i sees x
        self.input_scale = input_dim**0.5 / norm if standardize_inputs else 1.0
        self.train_inputs = _sample_inputs(num_train, input_dim, norm, g)
        self.test_inputs = _sample_inputs(num_test, input_dim, norm, g)
        self.train_targets = self.targets(self.train_inputs)
        self.test_targets = self.targets(self.test_inputs)
        if standardize_inputs:
            self.train_inputs = self.train_inputs * self.input_scale
            self.test_inputs = self.test_inputs * self.input_scale

    def targets(self, x: Tensor) -> dict[str, Tensor]:
        """f_i(x) for every task i."""
        return {
            task.name: sigma * torch.tanh(x @ (self.B + eps).T)
            for task, sigma, eps in zip(self.tasks, self.sigmas, self.epsilons)
        }

    def model_kwargs(self) -> dict:
        return {"in_features": self.input_dim}

    def task_setup(self) -> dict:
        """The realised problem: σ_i (also when drawn), the entries' standard deviations actually used,
        the training-set size (None: a fresh sample for every batch), and per task the loss of predicting 0,
        mean over the points and outputs of f_i(x)², on the training set (None with fresh samples) and the
        test set: a network whose loss on a task stays near it has not learned that task."""
        zero = {split: [float(targets[t.name].pow(2).mean()) for t in self.tasks]
                for split, targets in (("train", self.train_targets), ("test", self.test_targets))}
        if self.fresh_samples:
            zero["train"] = None
        return {"sigmas": list(self.sigmas), "b_std": self.b_std, "eps_std": self.eps_std,
                "num_train": None if self.fresh_samples else len(self.train_inputs), "zero_predictor_loss": zero}

    def train_batches(self, batch_size, seed, start_step=0, rank=0, world_size=1):
        if not self.fresh_samples:
            yield from super().train_batches(batch_size, seed, start_step, rank, world_size)
            return
        step = start_step
        while True:  # a new global batch at every step, a pure function of (seed, step); rank r takes its slice
            g = torch.Generator().manual_seed(((int(seed) + 1) << 32) + int(step))  # never a data-set seed
            x = _sample_inputs(batch_size * world_size, self.input_dim, self.input_norm, g)
            x = x[rank * batch_size:(rank + 1) * batch_size]
            targets = self.targets(x)
            yield x * self.input_scale, {t.name: targets[t.name] for t in self.tasks}
            step += 1


def _sample_inputs(n: int, dim: int, norm: float, generator: torch.Generator) -> Tensor:
    x = torch.rand(n, dim, generator=generator) * 2 - 1
    return x / x.norm(dim=1, keepdim=True) * norm
