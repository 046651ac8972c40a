"""The contract every sample-selection rule keeps, checked on random and real scenes.

    check_rule(strategy, params, scenes) -> ContractReport

A rule (built-in or plug-in, ``atss_bench.assign.plugins``) must, on every scene:

1. ``runs``: return without raising;
2. ``output``: return an int64 tensor [N] on the anchors' device;
3. ``label space``: every value a GT index in 0..M-1, BACKGROUND (-1) or IGNORE (-2);
4. ``inputs untouched``: leave anchors, GT boxes and predictions as they were;
5. ``deterministic``: give the same answer when called twice;
6. ``no positives without GTs``: with no GT, give no GT index;
7. ``padded batch``: in a padded batch (the training path, with invalid slots), give each
   image the answer of its own single-image call (GT indices as slots);
8. ``cpu/cuda``: give the same answer on CUDA as on CPU (only where a GPU is present).

A failing check is reported with the smallest scene found by dropping GTs one at a time while
it still fails (a minimal failing scene), so the report points at the case to debug.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from atss_bench.assign._common import BACKGROUND, IGNORE
from atss_bench.assign.batched import run_padded
from atss_bench.assign.plugins import PluginAssigner
from atss_bench.assign.table import AssignFn, get_assigner, rule_inputs
from atss_bench.boxes import generate_anchors
from atss_bench.errors import DataError

STRIDES = (8, 16, 32, 64, 128)
NUM_CLASSES = 80
MAX_ANNOTATION_BYTES = 64 * 1024 * 1024  # coco-tiny's are ~1.5 MB; full val2017's ~25 MB
MAX_SCENE_GTS = 30  # real images with more GTs are cut (the shrinking loop is O(M^2) calls)


@dataclass(frozen=True)
class Scene:
    """One image's assignment problem: anchors [N, 4] in levels, GTs [M, 4] with labels [M],
    and predictions a prediction-aware rule may ask for (scores [N, C], boxes [N, 4])."""

    source: str
    image_size: tuple[int, int]  # (height, width)
    anchors: Tensor
    num_anchors_per_level: list[int]
    gt_boxes: Tensor
    gt_labels: Tensor
    pred_scores: Tensor
    pred_boxes: Tensor

    def with_gts(self, keep: Sequence[int]) -> "Scene":
        index = torch.tensor(list(keep), dtype=torch.int64)
        return replace(self, gt_boxes=self.gt_boxes[index], gt_labels=self.gt_labels[index])

    def to(self, device: str) -> "Scene":
        return replace(self, anchors=self.anchors.to(device), gt_boxes=self.gt_boxes.to(device),
                       gt_labels=self.gt_labels.to(device),
                       pred_scores=self.pred_scores.to(device),
                       pred_boxes=self.pred_boxes.to(device))

    def describe(self) -> str:
        height, width = self.image_size
        boxes = "; ".join(
            f"[{', '.join(f'{v:g}' for v in box.tolist())}] class {int(label)}"
            for box, label in zip(self.gt_boxes.cpu(), self.gt_labels.cpu()))
        return (f"{self.source}: image {height}x{width}, {self.anchors.shape[0]} anchors on "
                f"{len(self.num_anchors_per_level)} levels (strides "
                f"{', '.join(map(str, STRIDES))}), {self.gt_boxes.shape[0]} GT(s)"
                + (f": {boxes}" if boxes else ""))


@dataclass(frozen=True)
class Failure:
    check: str
    detail: str
    scene: Scene


@dataclass
class ContractReport:
    strategy: str
    checks: list[str]
    num_scenes: int
    failures: list[Failure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


# --- scenes ----------------------------------------------------------------------------------

def make_anchors(image_size: tuple[int, int]) -> tuple[Tensor, list[int]]:
    """P3-P7 anchors of one 8S square per location (the paper's #A=1) for an image."""
    height, width = image_size
    sizes = [(math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]
    levels = generate_anchors(sizes, STRIDES, 8.0, 1, (1.0,))
    return torch.cat(levels), [len(a) for a in levels]


def _with_predictions(source: str, image_size: tuple[int, int], gt_boxes: Tensor,
                      gt_labels: Tensor, generator: torch.Generator) -> Scene:
    """A scene with noisy predictions: scores random, boxes each anchor's nearby GT jittered."""
    anchors, num_per_level = make_anchors(image_size)
    num_anchors = anchors.shape[0]
    scores = torch.rand(num_anchors, NUM_CLASSES, generator=generator) ** 4
    jitter = (torch.rand(num_anchors, 4, generator=generator) - 0.5) * 0.4
    base = anchors.clone()
    if len(gt_boxes):
        nearest = torch.randint(len(gt_boxes), (num_anchors,), generator=generator)
        near = torch.rand(num_anchors, generator=generator) < 0.5
        base[near] = gt_boxes[nearest[near]]
    size = (base[:, 2:] - base[:, :2]).repeat(1, 2)
    boxes = base + jitter * size
    boxes = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]),
                       torch.maximum(boxes[:, :2], boxes[:, 2:])], dim=1)
    return Scene(source, image_size, anchors, num_per_level, gt_boxes.float(), gt_labels,
                 scores, boxes)


def random_scenes(count: int = 6, seed: int = 0, image_size: tuple[int, int] = (320, 416)
                  ) -> list[Scene]:
    """Random GTs (1-8, 4-300 px sides, integer coordinates so ties happen) with labels."""
    generator = torch.Generator().manual_seed(seed)
    height, width = image_size
    scenes = []
    for i in range(count):
        num_gt = int(torch.randint(1, 9, (1,), generator=generator))
        wh = (4 + torch.rand(num_gt, 2, generator=generator) * 296).round()
        wh = torch.minimum(wh, torch.tensor([width - 1.0, height - 1.0]))
        xy = (torch.rand(num_gt, 2, generator=generator)
              * (torch.tensor([width, height]) - wh)).floor()
        labels = torch.randint(NUM_CLASSES, (num_gt,), generator=generator)
        scenes.append(_with_predictions(f"random scene {i} (seed {seed})", image_size,
                                        torch.cat([xy, xy + wh], dim=1), labels, generator))
    return scenes


def coco_scenes(annotation_file: Path, max_images: int = 4, seed: int = 0) -> list[Scene]:
    """The first ``max_images`` images with GTs of a COCO annotation file, halved in size.

    The file is data: its size is bounded, boxes that are not finite and positive are dropped,
    crowd boxes skipped, at most ``MAX_SCENE_GTS`` GTs an image. DataError when unreadable.
    """
    try:
        if annotation_file.stat().st_size > MAX_ANNOTATION_BYTES:
            raise DataError(f"{annotation_file}: larger than {MAX_ANNOTATION_BYTES} bytes")
        data = json.loads(annotation_file.read_text(encoding="utf-8"))
        images = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in data["images"]}
        categories = sorted(int(c["id"]) for c in data["categories"])
        boxes: dict[int, list[tuple[list[float], int]]] = {}
        for ann in data["annotations"]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann.get("iscrowd") or not all(map(math.isfinite, (x, y, w, h))) or min(w, h) <= 0:
                continue
            boxes.setdefault(int(ann["image_id"]), []).append(
                ([x, y, x + w, y + h], categories.index(int(ann["category_id"]))))
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{annotation_file}: not a readable COCO annotation file "
                        f"({type(exc).__name__})") from None
    generator = torch.Generator().manual_seed(seed)
    scenes = []
    for image_id in sorted(boxes)[:max_images]:
        if image_id not in images:
            continue
        height, width = images[image_id]
        items = boxes[image_id][:MAX_SCENE_GTS]
        gt = torch.tensor([b for b, _ in items]) / 2
        labels = torch.tensor([c for _, c in items], dtype=torch.int64) % NUM_CLASSES
        size = (max(1, min(height // 2, 2000)), max(1, min(width // 2, 2000)))
        scenes.append(_with_predictions(f"{annotation_file.name} image {image_id} (halved)",
                                        size, gt, labels, generator))
    return scenes


# --- calling a rule ------------------------------------------------------------------------

class _Rule:
    """A checked rule called on one scene the way the training path calls it."""

    def __init__(self, strategy: str, params: Mapping[str, Any]) -> None:
        self.strategy, self.params = strategy, dict(params)
        self.fn: AssignFn = get_assigner(strategy, self.params)
        self.inputs = rule_inputs(self.fn)

    def _inputs(self, scene: Scene) -> dict[str, Tensor]:
        given = {"gt_labels": scene.gt_labels, "pred_scores": scene.pred_scores,
                 "pred_boxes": scene.pred_boxes}
        return {name: given[name] for name in self.inputs}

    def single(self, scene: Scene) -> Any:
        """The raw answer of a single-image call (a plug-in's own return value, unchecked)."""
        inputs = self._inputs(scene)
        if isinstance(self.fn, PluginAssigner):
            return self.fn.rule.fn(scene.anchors, list(scene.num_anchors_per_level),
                                   scene.gt_boxes, **inputs, **self.params)
        valid = torch.ones((1, scene.gt_boxes.shape[0]), dtype=torch.bool,
                           device=scene.gt_boxes.device)
        batched = {name: value[None] for name, value in inputs.items()}
        return self.fn(scene.anchors, scene.num_anchors_per_level, scene.gt_boxes[None], valid,
                       **batched, **self.params)[0]

    def padded(self, scene: Scene, subset: Sequence[int], pad: int) -> Tensor:
        """Two images padded into one batch: the scene, and its GTs ``subset`` followed by
        ``pad`` invalid slots holding junk boxes. -> [2, N]"""
        num_gt = scene.gt_boxes.shape[0]
        slots = num_gt + pad
        boxes = torch.zeros((2, slots, 4), device=scene.gt_boxes.device)
        boxes[:, :, 2:] = 50.0  # junk in the invalid slots: a rule must not look at them
        labels = torch.zeros((2, slots), dtype=torch.int64, device=scene.gt_boxes.device)
        valid = torch.zeros((2, slots), dtype=torch.bool, device=scene.gt_boxes.device)
        boxes[0, :num_gt], labels[0, :num_gt], valid[0, :num_gt] = \
            scene.gt_boxes, scene.gt_labels, True
        index = torch.tensor(list(subset), dtype=torch.int64)
        boxes[1, :len(index)], labels[1, :len(index)] = scene.gt_boxes[index], \
            scene.gt_labels[index]
        valid[1, :len(index)] = True
        given = {"gt_labels": labels, "pred_scores": scene.pred_scores.expand(2, -1, -1),
                 "pred_boxes": scene.pred_boxes.expand(2, -1, -1)}
        inputs = {name: given[name] for name in self.inputs}
        return run_padded(self.fn, scene.anchors, scene.num_anchors_per_level, boxes, valid,
                          self.params, inputs)


# --- the checks ------------------------------------------------------------------------------
# Each takes the rule and a scene and returns None (kept) or what went wrong.

def _output_problem(result: Any, scene: Scene) -> str | None:
    num_anchors = scene.anchors.shape[0]
    if not isinstance(result, Tensor):
        return f"returned {type(result).__name__}, not a tensor"
    if result.dtype != torch.int64 or tuple(result.shape) != (num_anchors,):
        return (f"returned {result.dtype} {list(result.shape)}, "
                f"expected torch.int64 [{num_anchors}]")
    if result.device != scene.anchors.device:
        return f"returned a tensor on {result.device}, anchors are on {scene.anchors.device}"
    return None


def _call(rule: _Rule, scene: Scene) -> tuple[Tensor | None, str | None]:
    try:
        result = rule.single(scene)
    except Exception as exc:  # noqa: BLE001  (any error of the rule is a finding)
        return None, f"raised {type(exc).__name__}: {str(exc)[:300]}"
    return result, _output_problem(result, scene)


def check_runs_and_output(rule: _Rule, scene: Scene) -> str | None:
    return _call(rule, scene)[1]


def check_label_space(rule: _Rule, scene: Scene) -> str | None:
    result, problem = _call(rule, scene)
    if result is None or problem:
        return None  # reported by check_runs_and_output
    num_gt = scene.gt_boxes.shape[0]
    bad = ((result < IGNORE) | (result >= num_gt)).nonzero()[:, 0]
    if len(bad):
        anchor = int(bad[0])
        return (f"anchor {anchor} labelled {int(result[anchor])} with {num_gt} GT(s) "
                f"(allowed: 0..{num_gt - 1}, {BACKGROUND}, {IGNORE}); {len(bad)} anchor(s) so")
    return None


def check_inputs_untouched(rule: _Rule, scene: Scene) -> str | None:
    before = [t.clone() for t in (scene.anchors, scene.gt_boxes, scene.gt_labels,
                                  scene.pred_scores, scene.pred_boxes)]
    _call(rule, scene)
    names = ("anchors", "gt_boxes", "gt_labels", "pred_scores", "pred_boxes")
    after = (scene.anchors, scene.gt_boxes, scene.gt_labels, scene.pred_scores, scene.pred_boxes)
    for name, old, new in zip(names, before, after):
        if not torch.equal(old, new):
            return f"modified its input {name} in place"
    return None


def check_deterministic(rule: _Rule, scene: Scene) -> str | None:
    first, problem = _call(rule, scene)
    second, _ = _call(rule, scene)
    if problem or first is None or second is None or _output_problem(second, scene):
        return None
    if not torch.equal(first, second):
        anchor = int((first != second).nonzero()[0, 0])
        return (f"two calls differ: anchor {anchor} got {int(first[anchor])}, then "
                f"{int(second[anchor])}")
    return None


def check_no_positives_without_gts(rule: _Rule, scene: Scene) -> str | None:
    empty = scene.with_gts([])
    result, problem = _call(rule, empty)
    if problem or result is None:
        return f"with no GT: {problem}" if problem else None
    positive = (result >= 0).nonzero()[:, 0]
    if len(positive):
        anchor = int(positive[0])
        return (f"with no GT, anchor {anchor} labelled {int(result[anchor])} "
                f"({len(positive)} positive anchor(s))")
    return None


def check_padded_batch(rule: _Rule, scene: Scene) -> str | None:
    num_gt = scene.gt_boxes.shape[0]
    subset = list(range(num_gt))[::-1][: max(1, num_gt // 2)] if num_gt else []
    alone, problem = _call(rule, scene)
    alone_sub, problem_sub = _call(rule, scene.with_gts(subset))
    if problem or problem_sub or alone is None or alone_sub is None:
        return None
    try:
        batch = rule.padded(scene, subset, pad=2)
    except Exception as exc:  # noqa: BLE001
        return f"padded batch raised {type(exc).__name__}: {str(exc)[:300]}"
    for image, expected in ((0, alone), (1, alone_sub)):
        if not torch.equal(batch[image], expected):
            anchor = int((batch[image] != expected).nonzero()[0, 0])
            return (f"padded batch image {image}: anchor {anchor} got {int(batch[image][anchor])}"
                    f", its own call gives {int(expected[anchor])}")
    return None


def check_cpu_cuda(rule: _Rule, scene: Scene) -> str | None:
    cpu, problem = _call(rule, scene)
    if problem or cpu is None:
        return None
    cuda, problem = _call(rule, scene.to("cuda"))
    if problem or cuda is None:
        return f"on CUDA: {problem}"
    if not torch.equal(cpu, cuda.cpu()):
        anchor = int((cpu != cuda.cpu()).nonzero()[0, 0])
        return f"anchor {anchor}: CPU gives {int(cpu[anchor])}, CUDA {int(cuda[anchor])}"
    return None


Check = Callable[[_Rule, Scene], "str | None"]
CHECKS: dict[str, Check] = {
    "runs, int64 [N] output": check_runs_and_output,
    "label space": check_label_space,
    "inputs untouched": check_inputs_untouched,
    "deterministic": check_deterministic,
    "no positives without GTs": check_no_positives_without_gts,
    "padded batch equals per-image calls": check_padded_batch,
    "cpu/cuda agreement": check_cpu_cuda,
}


def shrink(check: Check, rule: _Rule, scene: Scene) -> tuple[Scene, str]:
    """The scene with as few GTs as still fail ``check`` (GTs dropped one at a time)."""
    detail = check(rule, scene) or ""
    if check is check_no_positives_without_gts:
        return scene.with_gts([]), detail
    keep = list(range(scene.gt_boxes.shape[0]))
    changed = True
    while changed and len(keep) > 1:
        changed = False
        for drop in list(keep):
            trial = [i for i in keep if i != drop]
            found = check(rule, scene.with_gts(trial))
            if found:
                keep, detail, changed = trial, found, True
                break
    return scene.with_gts(keep), detail


def check_rule(strategy: str, params: Mapping[str, Any], scenes: Sequence[Scene],
               cuda: bool | None = None) -> ContractReport:
    """Run every check on every scene; each failing check reported once, on a minimal scene.

    ``cuda``: whether to run the CPU/CUDA check (default: when a GPU is present).
    Raises ConfigError for an unknown rule or bad params (the rule is not checked then).
    """
    rule = _Rule(strategy, params)
    use_cuda = torch.cuda.is_available() if cuda is None else cuda
    checks = {name: fn for name, fn in CHECKS.items()
              if use_cuda or fn is not check_cpu_cuda}
    report = ContractReport(strategy, list(checks), len(scenes))
    for name, check in checks.items():
        for scene in scenes:
            if check(rule, scene):
                small, detail = shrink(check, rule, scene)
                report.failures.append(Failure(name, detail, small))
                break
    return report
