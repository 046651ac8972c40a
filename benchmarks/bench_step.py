"""Training-step and inference speed of our detector against torchvision's FCOS, same inputs.

    python benchmarks/bench_step.py [--steps 5] [--warmup 1] [--size 512] [--device cpu]
                                    [--threads N] [--clock wall|cpu]

Ours: R-50 FPN P3-P7, 4-conv GN head of 256 channels, FCOS + ATSS (point regression, ATSS
rule), weights none. torchvision: ``fcos_resnet50_fpn(weights=None, weights_backbone=None)`` with
``min_size = max_size = size`` so that both see the same 2 x size x size pixels (its default 800
would upscale). Two settings of our backbone are timed:

- ``paper``:   frozen BN, stem + res2 frozen (the paper's setting, our default config);
- ``matched``: trainable BN, nothing frozen (what torchvision builds when weights_backbone=None).

On CPU the defaults are one thread and process CPU time: on a shared 2-core machine, wall time
with 2 OpenMP threads swings by +-30% with the neighbours' load (idle OpenMP threads spin), while
one thread's CPU time is stable run to run. ``--threads 2 --clock wall`` measures the other way.

Reported: the ratio of median step times (ours / torchvision; the three models step round-robin
after warm-up, so load drifts on a shared machine hit them alike), the share of our step spent in
assignment + target building, and inference images/s (ours in the paper setting).
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Literal

import torch
from torchvision.models.detection import fcos_resnet50_fpn

import atss_bench.model.detector as detector_module
from atss_bench.config import ATSSAssign, BackboneConfig, ModelConfig, RegressionConfig
from atss_bench.model import build_detector

NUM_CLASSES = 80
# perf_counter (wall) by default; --clock cpu uses process CPU time, which a busy shared machine
# inflates much less (use it with --threads 1: idle OpenMP threads spin and count as CPU time).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def make_inputs(size: int, device: torch.device, seed: int = 0) -> tuple[list, list]:
    generator = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(2):
        images.append(torch.rand(3, size, size, generator=generator).to(device))
        xy = torch.rand(8, 2, generator=generator) * size * 0.7
        wh = torch.rand(8, 2, generator=generator) * size * 0.4 + 16
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=1)
        labels = torch.randint(0, NUM_CLASSES, (8,), generator=generator)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


def ours(norm: Literal["frozen_bn", "bn", "gn"], frozen_stages: int) -> torch.nn.Module:
    config = ModelConfig(
        backbone=BackboneConfig(name="resnet50", weights="none", norm=norm,
                                frozen_stages=frozen_stages),
        regression=RegressionConfig(start="point"), assign=ATSSAssign(topk=9),
    )
    return build_detector(config, NUM_CLASSES)


def make_step(model: torch.nn.Module, images: list, targets: list) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

    def step() -> None:
        losses = model(images, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
    return step


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return clock() - start


class TargetTimer:
    """Wraps build_targets (assignment + target gathering) inside our detector to time it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = {}
        self.current = ""
        self.original = detector_module.build_targets

    def __call__(self, *args, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = clock()
        out = self.original(*args, **kwargs)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.totals[self.current] = self.totals.get(self.current, 0.0) + clock() - start
        return out


def bench_train(models: dict[str, torch.nn.Module], reference: str, images: list, targets: list,
                steps: int, warmup: int, device: torch.device) -> None:
    """Round-robin training steps of every model (so that load drifts hit all of them alike)."""
    step_fns = {}
    for name, model in models.items():
        model.train()
        step_fns[name] = make_step(model, images, targets)
    for _ in range(warmup):
        for step in step_fns.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in models}
    timer = TargetTimer(device)
    detector_module.build_targets = timer
    try:
        for _ in range(steps):
            for name, step in step_fns.items():
                timer.current = name
                times[name].append(timed(step, device))
    finally:
        detector_module.build_targets = timer.original
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        line = f"train step {name:16s} median {median * 1e3:7.0f} ms"
        if name != reference:
            share = 100 * timer.totals.get(name, 0.0) / sum(times[name])
            line += (f"  ratio to {reference} {median / medians[reference]:.3f} (target <= 0.9)"
                     f"  assignment + targets {share:.2f}% of the step (target <= 5%)")
        print(line, flush=True)


@torch.no_grad()
def bench_inference(model: torch.nn.Module, reference: torch.nn.Module, images: list,
                    steps: int, device: torch.device) -> None:
    model.eval()
    reference.eval()
    model(images)
    reference(images)
    times_ours, times_ref = [], []
    for _ in range(steps):
        times_ours.append(timed(lambda: model(images), device))
        times_ref.append(timed(lambda: reference(images), device))
    ips_ours = len(images) / statistics.median(times_ours)
    ips_ref = len(images) / statistics.median(times_ref)
    print(f"inference: ours {ips_ours:.2f} images/s, torchvision {ips_ref:.2f} images/s "
          f"(ratio {ips_ours / ips_ref:.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 1 on CPU, see the module docstring)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default=None,
                        help="default: cpu on CPU, wall on CUDA")
    args = parser.parse_args()
    device = torch.device(args.device)
    global clock
    clock_name = args.clock or ("cpu" if device.type == "cpu" else "wall")
    clock = CLOCKS[clock_name]
    threads = args.threads or (1 if device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    images, targets = make_inputs(args.size, device)
    models = {
        "ours (paper)": ours("frozen_bn", 2).to(device),
        "ours (matched)": ours("bn", 0).to(device),
        "torchvision": fcos_resnet50_fpn(weights=None, weights_backbone=None,
                                         num_classes=NUM_CLASSES, min_size=args.size,
                                         max_size=args.size).to(device),
    }
    print(f"device {device}, {torch.get_num_threads()} threads, {clock_name} clock, 2 images "
          f"{args.size}x{args.size}, {args.steps} timed rounds after {args.warmup} warm-up",
          flush=True)
    bench_train(models, "torchvision", images, targets, args.steps, args.warmup, device)
    bench_inference(models["ours (paper)"], models["torchvision"], images, args.steps, device)


if __name__ == "__main__":
    main()
