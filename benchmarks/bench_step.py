"""Training-step and inference speed of our detector against torchvision's FCOS, same inputs.

    python benchmarks/bench_step.py [--steps 5] [--warmup 1] [--size 512] [--device cpu]
                                    [--threads N] [--clock wall|cpu] [--data ROOT]
                                    [--trainable] [--profile]

Inputs: 2 real COCO images (``--data``, else ``$ATSS_BENCH_TEST_COCO``, else
``<repo>/../shared/data/coco-tiny``; random tensors only when none exists), shorter side
``--size``, with their boxes and labels. torchvision gets ``min_size = size`` and a large
``max_size``, so its own resize keeps the images as they are and both see the same pixels.

Ours: the paper's setting (our default config): R-50 FPN P3-P7, 4-conv GN head of 256 channels,
FCOS + ATSS (point regression, ATSS rule), frozen BN, stem + res2 frozen, weights none.
torchvision: FCOS (``torchvision.models.detection.FCOS``) on the same backbone in the same frozen
setting, built as ``fcos_resnet50_fpn`` builds it with pretrained weights (FrozenBatchNorm2d,
``trainable_layers=3``) but without downloading any: its builder unfreezes everything when no
weights are given. ``--trainable`` adds both models with trainable BN and nothing frozen
(torchvision's ``fcos_resnet50_fpn(weights=None, weights_backbone=None)``).

On CPU the defaults are one thread and process CPU time: on a shared 2-core machine, wall time
with 2 OpenMP threads swings by +-30% with the neighbours' load (idle OpenMP threads spin), while
one thread's CPU time is stable run to run. ``--threads 2 --clock wall`` measures the other way.

Reported: the ratio of median step times (ours / torchvision; the models step round-robin after
warm-up, so load drifts on a shared machine hit them alike), the share of our step spent in
assignment + target building, and inference images/s. ``--profile`` prints torch.profiler's top
operators of one training step of each model instead, and the share of the convolution kernels.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.detection import FCOS, fcos_resnet50_fpn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import atss_bench.model.detector as detector_module  # noqa: E402
from atss_bench.config import BackboneConfig, ModelConfig  # noqa: E402
from atss_bench.model import build_detector  # noqa: E402

NUM_CLASSES = 80
# perf_counter (wall) or process CPU time (use it with --threads 1: idle OpenMP threads spin and
# count as CPU time).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]
Images = list[torch.Tensor]
# The operators that run convolution arithmetic (oneDNN, PyTorch's GEMM path, their backward).
CONVOLUTION_KERNELS = re.compile(r"^aten::(mkldnn_convolution|_slow_conv2d|convolution_backward)")
Targets = list[dict[str, torch.Tensor]]


def find_coco(explicit: str | None) -> Path | None:
    candidates = [explicit, os.environ.get("ATSS_BENCH_TEST_COCO"),
                  str(Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-tiny")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "annotations" / "instances_val2017.json").is_file():
            return Path(candidate)
    return None


def coco_inputs(root: Path, size: int, device: torch.device) -> tuple[Images, Targets]:
    """The first 2 val images with boxes, shorter side ``size`` (longer side uncapped-ish)."""
    from atss_bench.data.coco import CocoDetection

    dataset = CocoDetection(root, "val2017", train=False, min_size=size, max_size=size * 2)
    images, targets = [], []
    for index in range(len(dataset)):
        image, target = dataset[index]
        if len(target["boxes"]) and min(image.shape[1:]) == size:
            images.append(image.to(device))
            targets.append({"boxes": target["boxes"].to(device),
                            "labels": target["labels"].to(device)})
        if len(images) == 2:
            return images, targets
    raise SystemExit(f"{root}: fewer than 2 val images with boxes")


def random_inputs(size: int, device: torch.device, seed: int = 0) -> tuple[Images, Targets]:
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


def ours(frozen: bool) -> nn.Module:
    backbone = (BackboneConfig(weights="none") if frozen
                else BackboneConfig(weights="none", norm="bn", frozen_stages=0))
    return build_detector(ModelConfig(backbone=backbone), NUM_CLASSES)


def torchvision_fcos(frozen: bool, size: int) -> nn.Module:
    if not frozen:
        return fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                 min_size=size, max_size=size * 2)
    # fcos_resnet50_fpn's pretrained path, minus the download: frozen BN, stem + res2 frozen.
    body = resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
    return FCOS(backbone, NUM_CLASSES, min_size=size, max_size=size * 2)


def make_step(model: nn.Module, images: Images, targets: Targets) -> Callable[[], None]:
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


def bench_train(models: dict[str, nn.Module], references: dict[str, str], images: Images,
                targets: Targets, steps: int, warmup: int, device: torch.device) -> None:
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
        line = f"train step {name:24s} median {median * 1e3:7.0f} ms"
        if name in references:
            reference = references[name]
            share = 100 * timer.totals.get(name, 0.0) / sum(times[name])
            line += (f"  ratio to {reference} {median / medians[reference]:.3f} (target <= 0.9)"
                     f"  assignment + targets {share:.2f}% of the step")
        print(line, flush=True)


def profile_train(models: dict[str, nn.Module], images: Images, targets: Targets,
                  rows: int = 25) -> None:
    from torch.profiler import ProfilerActivity, profile

    for name, model in models.items():
        model.train()
        step = make_step(model, images, targets)
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        averages = prof.key_averages()
        print(f"=== {name}")
        print(averages.table(sort_by="self_cpu_time_total", row_limit=rows))
        total = sum(event.self_cpu_time_total for event in averages)
        conv = sum(event.self_cpu_time_total for event in averages
                   if CONVOLUTION_KERNELS.search(event.key))
        print(f"{name}: convolution kernels {conv / 1e6:.2f} s of {total / 1e6:.2f} s "
              f"({100 * conv / max(total, 1e-9):.1f}%)", flush=True)


@torch.no_grad()
def bench_inference(model: nn.Module, reference: nn.Module, images: Images, steps: int,
                    device: torch.device) -> None:
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
    parser.add_argument("--size", type=int, default=512, help="shorter image side")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: 1 on CPU, see the module docstring)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default=None,
                        help="default: cpu on CPU, wall on CUDA")
    parser.add_argument("--data", default=None, help="a COCO-layout root (default: coco-tiny)")
    parser.add_argument("--trainable", action="store_true",
                        help="also time both models with trainable BN and nothing frozen")
    parser.add_argument("--profile", action="store_true",
                        help="print torch.profiler's top operators of one step instead")
    args = parser.parse_args()
    device = torch.device(args.device)
    global clock
    clock_name = args.clock or ("cpu" if device.type == "cpu" else "wall")
    clock = CLOCKS[clock_name]
    threads = args.threads or (1 if device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    root = find_coco(args.data)
    if root is not None:
        images, targets = coco_inputs(root, args.size, device)
        source = f"{root.name} images {[tuple(im.shape[1:]) for im in images]}"
    else:
        images, targets = random_inputs(args.size, device)
        source = f"random {args.size}x{args.size} images (no COCO found)"
    models = {"ours (paper, frozen)": ours(True).to(device),
              "torchvision (frozen)": torchvision_fcos(True, args.size).to(device)}
    references = {"ours (paper, frozen)": "torchvision (frozen)"}
    if args.trainable:
        models["ours (trainable BN)"] = ours(False).to(device)
        models["torchvision (trainable BN)"] = torchvision_fcos(False, args.size).to(device)
        references["ours (trainable BN)"] = "torchvision (trainable BN)"
    print(f"device {device}, {torch.get_num_threads()} threads, {clock_name} clock, 2 {source}, "
          f"{args.steps} timed rounds after {args.warmup} warm-up", flush=True)
    if args.profile:
        profile_train(models, images, targets)
        return
    bench_train(models, references, images, targets, args.steps, args.warmup, device)
    bench_inference(models["ours (paper, frozen)"], models["torchvision (frozen)"], images,
                    args.steps, device)


if __name__ == "__main__":
    main()
