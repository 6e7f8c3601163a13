"""A diagnostic, not a method (docs/multimnist.md §8): one MultiMNIST run with the sum task, as
`run.py experiment=multimnist dataset.third_task=sum` trains it, printing per epoch the mean accuracy of the
digits and the sum's test MSE, and every 10 steps the weights, how large the shared layer W's gradient is
against Adam's memory of past gradients (median over W's entries with a gradient of |g| / √v̂, v̂ Adam's
bias-corrected second moment: ~1 means full Adam steps, ~0.03 steps ~30× smaller), and the share of the
shared layer's units that are inactive on every input of the batch. With ``--reset-at K`` the network's Adam
state is cleared once, before step K (nothing else changes).

    scripts/probe_adam_memory.py balancer=gradnorm alpha=1.5 seed=0                # as trained
    scripts/probe_adam_memory.py balancer=gradnorm alpha=1.5 seed=0 --reset-at 40  # Adam forgets steps 0-39
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradnorm.cli import compose  # noqa: E402
from gradnorm.train import (  # noqa: E402
    build,
    call,
    choose_tasks,
    evaluate_tasks,
    params_for,
    seed_everything,
    train_step,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides after experiment=multimnist dataset.third_task=sum")
    parser.add_argument("--reset-at", type=int, default=-1, help="clear the network's Adam state before this step")
    parser.add_argument("--steps", type=int, help="train this many steps (default: trainer.max_steps)")
    args = parser.parse_args(argv)
    cfg = compose(["experiment=multimnist", "dataset.third_task=sum", "logger=none", *args.overrides])
    torch.set_num_threads(cfg.trainer.num_threads or 1)
    seed_everything(cfg.seed)
    data = build(cfg.dataset, "dataset")
    choose_tasks(data, cfg.get("tasks"))
    tasks = data.tasks
    model = build(cfg.model, "model", heads={t.name: t.out_channels for t in tasks}, **data.model_kwargs())
    balancer = build(cfg.balancer, "balancer", num_tasks=len(tasks))

    def adam():
        return call(build(cfg.trainer.optimizer, "trainer.optimizer"), "trainer.optimizer", model.parameters())

    optimizer = adam()
    channels_last = cfg.trainer.channels_last is True
    if channels_last:
        model.to(memory_format=torch.channels_last)
    shared = params_for(balancer, model)
    W = model.last_shared_layer.weight
    beta2 = optimizer.defaults["betas"][1]
    batches = data.train_batches(cfg.trainer.batch_size, cfg.seed)
    steps = args.steps or cfg.trainer.max_steps
    digits = [t.name for t in tasks if t.name != "sum"]
    print("step  weights                   |g|/√v̂   inactive units   | epoch: mean accuracy %, sum MSE")
    for step in range(steps + 1):
        if step % cfg.trainer.eval_every == 0:
            m = evaluate_tasks(model, data, tasks, cfg.trainer.eval_batch_size, torch.device("cpu"), None, channels_last)
            accuracy = 100 * sum(m[f"{d}/acc"] for d in digits) / len(digits)
            print(f"{step:4d}  {'':50s}| epoch {step // cfg.trainer.eval_every}: {accuracy:.1f}, "
                  f"{m.get('test_loss/sum', float('nan')):.2f}", flush=True)
        if step == steps:
            break
        if step == args.reset_at:
            optimizer = adam()
        x, y = next(batches)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        train_step(model, tasks, balancer, optimizer, x, y, shared)
        if step % 10 == 0 and step:
            state = optimizer.state[W]
            v_hat = state["exp_avg_sq"] / (1 - beta2 ** state["step"].item())
            g = W.grad
            active = g != 0
            ratio = (g.abs() / (v_hat.sqrt() + 1e-8))[active].median().item() if active.any() else 0.0
            with torch.no_grad():
                z = model.shared(x)
            inactive = (z.reshape(len(z), -1) <= 0).all(0).float().mean().item()
            weights = " ".join(f"{w:.3f}" for w in balancer.weights.tolist())
            print(f"{step:4d}  {weights:24s}  {ratio:7.3f}   {inactive:6.0%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
