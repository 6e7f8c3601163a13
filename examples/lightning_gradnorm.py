"""GradNorm (or any balancer of the suite, by name) in a LightningModule, with Lightning's precision
plugins (16-mixed, bf16-mixed) and strategies (DDP) applied to the balancer's backward pass.

    python examples/lightning_gradnorm.py                                  # GradNorm α=1.5, CPU, float32
    python examples/lightning_gradnorm.py --balancer famo --precision bf16-mixed
    python examples/lightning_gradnorm.py --devices 2 --strategy ddp       # two processes (gloo on CPUs)

The three things that make a balancer work inside Lightning (docs/library.md, "Lightning"):

1. manual optimisation (``automatic_optimization = False``): the balancer, not Lightning, runs the
   backward pass of Σ w_i L_i;
2. ``backward_fn=self.manual_backward``: the backward goes through Lightning, so the precision plugin
   scales the loss (16-mixed) and the strategy's hooks run (DDP); the balancer measures the scale and
   divides it out of what it measures;
3. after ``opt.step()``: ``balancer.step()``, or ``balancer.discard()`` when the 16-mixed scaler skipped
   the step (an overflow), so the weights never move on a step the network did not take.

The balancer is a submodule (Lightning moves it to the device and saves it in checkpoints) whose own
parameters are kept out of the network's optimiser and out of DDP (``requires_grad_(False)``: its own
optimiser steps them, it never needs autograd for them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from gradnorm.balancers import METHODS

#: the scale of each task's targets: one task's loss ~100× the other's, as in the paper's toy
SIGMAS = (1.0, 10.0)


def toy_data(samples: int = 512, dim: int = 16, seed: int = 0) -> TensorDataset:
    """Two regression tasks y_i = σ_i tanh(B_i x) on shared inputs (the paper's toy, §4, small)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, dim, generator=generator)
    base = torch.randn(dim, 8, generator=generator)
    targets = [sigma * torch.tanh(x @ (base + 0.3 * torch.randn(dim, 8, generator=generator))) for sigma in SIGMAS]
    return TensorDataset(x, *targets)


class MultiTaskRegression(L.LightningModule):
    """A shared trunk, W = its last Linear, and one head per task; the task losses balanced by
    ``balancer`` (any name of ``gradnorm.balancers.METHODS``), the network trained with Adam."""

    def __init__(self, balancer: str = "gradnorm", dim: int = 16, width: int = 32, lr: float = 1e-3,
                 **balancer_kwargs):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.trunk = nn.Sequential(nn.Linear(dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.heads = nn.ModuleList([nn.Linear(width, 8) for _ in SIGMAS])
        self.balancer = METHODS[balancer](len(SIGMAS), **balancer_kwargs)
        self.balancer.requires_grad_(False)  # stepped by its own optimiser: no autograd, not in DDP

    def forward(self, x):
        z = self.trunk(x)
        features = [z.view_as(z) for _ in self.heads]  # one view of z per head: GradNorm's one-backward route
        return [head(f) for head, f in zip(self.heads, features)], features

    def shared_params(self) -> list[nn.Parameter]:
        """What the balancer asks for: W (the last shared layer's weight) or every trunk parameter."""
        return list(self.trunk.parameters()) if self.balancer.needs == "shared" else [self.trunk[2].weight]

    def training_step(self, batch, batch_idx):
        x, *targets = batch
        optimizer = self.optimizers()
        optimizer.zero_grad()
        outputs, features = self(x)
        losses = torch.stack([F.mse_loss(out.float(), y) for out, y in zip(outputs, targets)])
        info = self.balancer.backward(losses, self.shared_params(), features=features,
                                      backward_fn=self.manual_backward)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # 16-mixed: a GradScaler
        scale = scaler.get_scale() if scaler is not None else None
        optimizer.step()
        if scaler is not None and scaler.get_scale() < scale:  # the scaler skipped this step (inf/NaN)
            self.balancer.discard()
        else:
            self.balancer.step()
        weights = self.balancer.weights.tolist()
        self.log_dict({f"weight/{i}": w for i, w in enumerate(weights)} | {f"loss/{i}": float(v) for i, v in
                                                                           enumerate(losses.detach())},
                      prog_bar=False)
        return {"info": info}

    def configure_optimizers(self):
        network = [*self.trunk.parameters(), *self.heads.parameters()]  # not the balancer's own
        return torch.optim.Adam(network, lr=self.hparams.lr)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--balancer", default="gradnorm", choices=sorted(n for n in METHODS if n != "gradnorm_static"))
    parser.add_argument("--alpha", type=float, default=1.5, help="GradNorm's α (other balancers ignore it)")
    parser.add_argument("--precision", default="32", choices=["32", "16-mixed", "bf16-mixed"])
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto", help="auto, ddp (several processes on CPUs: gloo)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write each process's final weights here (JSON)")
    args = parser.parse_args(argv)

    L.seed_everything(0, verbose=False)
    kwargs = {"alpha": args.alpha} if args.balancer == "gradnorm" else {}
    kwargs |= {"weights": [1.0, 1.0]} if args.balancer == "fixed" else {}
    model = MultiTaskRegression(args.balancer, **kwargs)
    trainer = L.Trainer(accelerator="cpu" if not torch.cuda.is_available() else "auto", devices=args.devices,
                        strategy=args.strategy, precision=args.precision, max_epochs=args.epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    started = time.perf_counter()
    trainer.fit(model, DataLoader(toy_data(), batch_size=64, shuffle=True))
    result = {"rank": trainer.global_rank, "balancer": args.balancer, "precision": args.precision,
              "steps": trainer.global_step, "weights": model.balancer.weights.tolist(),
              "weight_scale": model.balancer.weight_scale, "seconds": round(time.perf_counter() - started, 2)}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))
    if trainer.global_rank == 0:
        print(f"{args.balancer} ({args.precision}, {args.devices} process(es)): {result['steps']} steps in "
              f"{result['seconds']} s; weights {[round(w, 4) for w in result['weights']]} ({result['weight_scale']})")
    return result


if __name__ == "__main__":
    main()
