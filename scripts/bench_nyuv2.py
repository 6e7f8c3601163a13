"""Time one NYUv2 training step (gradnorm.train.train_step) per backbone and balancer.

    python scripts/bench_nyuv2.py                                   # 288x384, batch 8, GPU if any
    python scripts/bench_nyuv2.py --height 32 --width 48 --batch 2 --threads 1

On CUDA the step runs as the trainer runs it (bf16 autocast where supported, channels_last, cuDNN
benchmark). Inputs are random tensors of NYUv2's shapes: data loading is not timed. Prints the
median time per step and GradNorm's overhead over equal weights (the paper reports ~5%, footnote 1).
"""

import argparse
import statistics
import time

import torch

from gradnorm.balancers import EqualWeights, GradNorm
from gradnorm.cli import compose
from gradnorm.tasks import Depth, Normals, Segmentation
from gradnorm.train import build, params_for, train_step


def time_steps(model, balancer, tasks, x, targets, steps, warmup, dtype):
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-5)
    times = []
    for i in range(warmup + steps):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_step(model, tasks, balancer, optimizer, x, targets, params_for(balancer, model), precision=dtype)
        if x.is_cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["segnet", "resnet", "fcn"])
    parser.add_argument("--height", type=int, default=288)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"device: {name}; input {args.batch}x3x{args.height}x{args.width}; "
          f"precision {dtype or 'fp32'}; median of {args.steps} steps after {args.warmup} warm-up")

    tasks = [Segmentation(), Depth(), Normals()]
    b, h, w = args.batch, args.height, args.width
    torch.manual_seed(0)
    x = torch.randn(b, 3, h, w, device=device)
    targets = {"seg": torch.randint(-1, 13, (b, h, w), device=device),
               "depth": torch.rand(b, 1, h, w, device=device) * 5,
               "normals": torch.nn.functional.normalize(torch.randn(b, 3, h, w, device=device), dim=1)}
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    for model_name in args.models:
        heads = {t.name: t.out_channels for t in tasks}
        model = build(compose([f"model={model_name}"]).model, "model", in_channels=3, heads=heads).to(device)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        times = {}
        for balancer in (EqualWeights(3), GradNorm(3, alpha=1.5)):
            times[type(balancer).__name__] = time_steps(model, balancer.to(device), tasks, x, targets,
                                                        args.steps, args.warmup, dtype)
        equal, gradnorm = times["EqualWeights"], times["GradNorm"]
        print(f"{model_name:7s} params {model.num_parameters() / 1e6:5.1f}M  equal {equal * 1e3:8.1f} ms/step  "
              f"gradnorm {gradnorm * 1e3:8.1f} ms/step  overhead {100 * (gradnorm / equal - 1):+5.1f}%")


if __name__ == "__main__":
    main()
