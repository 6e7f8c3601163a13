"""The floor of GradNorm's extra cost in floating-point operations (docs/performance.md, "Third pass").

GradNorm needs the T per-task weight gradients at W where equal weights need one, so beyond what
equal weights do it computes T − 1 more weight gradients of W; for a convolution or a linear layer a
weight gradient costs what W's forward costs. This script counts, with ``torch.utils.flop_counter``,
one training step of an image backbone on NYUv2's three tasks (forward and backward, as the bench's
step: batch 2 at 64×96 by default) and W's forward, and prints (T − 1) · W's forward / the step.

    python scripts/flops_at_w.py [--size 64x96] [--batch 2] [--models segnet,resnet]
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from gradnorm.models import SegNet, ThinResNet

MODELS = {"segnet": SegNet, "resnet": ThinResNet}
HEADS = {"seg": 13, "depth": 1, "normal": 3}  # NYUv2's three tasks


def floor(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(FLOPs of one step, FLOPs of W's forward) for ``model`` on ``x``."""
    layer, captured = model.last_shared_layer, {}

    def keep_input(_module, inputs, _output) -> None:  # returns None: the output stays as it is
        captured["x"] = inputs[0].detach()

    handle = layer.register_forward_hook(keep_input)
    with FlopCounterMode(display=False) as forward:
        predictions, _ = model(x)
    handle.remove()
    loss = sum(p.float().pow(2).mean() for p in predictions.values())
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    with FlopCounterMode(display=False) as w_forward:
        layer(captured["x"])
    return float(forward.get_total_flops() + backward.get_total_flops()), float(w_forward.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="64x96")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise SystemExit(f"error: unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, height, width)
    for name in names:
        step, w_forward = floor(MODELS[name](3, HEADS), x)
        extra = (len(HEADS) - 1) * w_forward / step
        print(f"{name}: step {step / 1e9:.2f} GFLOP, W's forward {w_forward / 1e9:.3f} GFLOP, "
              f"T-1 extra weight gradients = {extra:.1%} of the step (floor ≈ {1 + extra:.3f}× equal weights)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
