"""Typed experiment configuration: every knob the ATSS paper varies.

All models are strict (``extra="forbid"``): a misspelled key is an error, never a silent default.
Defaults are the paper's setting (ResNet-50 + FPN P3-P7, improved RetinaNet #A=1 + ATSS), so a
recipe only states what its table changes.

The detector's own knobs (assignment, losses, inference) live under ``model`` because
``build_detector(config.model, num_classes)`` is the whole detector, training losses included.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator,
)

# numpy.random.seed / default_rng take 0 .. 2**32 - 1: a seed outside fails only in the run.
SEED_MAX = 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
MAX_PIXELS = 10_000  # an image side: COCO's are <= 640, the paper tests at <= 3000
Size = Annotated[int, Field(gt=0, le=MAX_PIXELS)]  # pixels


def default_scale_ranges(strides: list[int]) -> list[tuple[float, float]]:
    """FCOS's per-level object-size ranges, derived from the strides.

    Level with stride s takes objects whose max(l, t, r, b) is in [4s, 8s]; the first level starts
    at 0 and the last is open. For strides 8..128 this is FCOS's
    [0, 64], [64, 128], [128, 256], [256, 512], [512, inf].
    """
    ranges = [(4.0 * s, 8.0 * s) for s in strides]
    ranges[0] = (0.0, ranges[0][1])
    ranges[-1] = (ranges[-1][0], math.inf)
    return ranges


class Strict(BaseModel):
    # No NaN or inf anywhere (a NaN compares false with every bound) except where a field says so:
    # the open upper end of a scale range, which dumps as "Infinity" in JSON mode, not null.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False,
                              ser_json_inf_nan="strings")


class BackboneConfig(Strict):
    name: Literal[
        "resnet18", "resnet34", "resnet50", "resnet101",
        "resnext101_32x8d", "resnext101_64x4d",
    ] = "resnet50"
    # "imagenet" (torchvision weights API), "none" (train from scratch) or a local checkpoint path.
    weights: str = "imagenet"
    # Stages frozen from the bottom: 0 = nothing, 1 = stem, 2 = stem + res2 (the paper), ...
    frozen_stages: int = Field(2, ge=0, le=5)
    # "frozen_bn" for a pretrained backbone (the paper); "bn" / "gn" train the norms (from scratch).
    norm: Literal["frozen_bn", "bn", "gn"] = "frozen_bn"
    # Width multiplier for the small CPU profile (1.0 = torchvision's network unchanged).
    width: float = Field(1.0, gt=0.0, le=1.0)
    # Modulated deformable convolutions (DCNv2) in the 3x3 conv of every block of the stages
    # ``dcn_stages``, Table 8's "-DCN" rows (official STAGE_WITH_DCN + WITH_MODULATED_DCN).
    dcn: bool = False
    # Stages (2 = res2 .. 5 = res5) whose blocks get DCN when ``dcn`` is on. The official configs:
    # res3-res5 ``[3, 4, 5]`` (STAGE_WITH_DCN (False, True, True, True)), ResNeXt
    # res4-res5 ``[4, 5]`` ((False, False, True, True)).
    dcn_stages: list[Annotated[int, Field(ge=2, le=5)]] = Field(
        default_factory=lambda: [3, 4, 5], min_length=1)

    @field_validator("dcn_stages")
    @classmethod
    def _stages_sorted(cls, stages: list[int]) -> list[int]:
        if stages != sorted(set(stages)):
            raise ValueError("dcn_stages must be increasing, without repeats")
        return stages


class FPNConfig(Strict):
    channels: int = Field(256, gt=0)
    min_level: int = Field(3, ge=2, le=5)
    max_level: int = Field(7, ge=3, le=7)
    # Source of P6: "p5" (FCOS / ATSS official) or "c5" (RetinaNet).
    extra_source: Literal["p5", "c5"] = "p5"

    @model_validator(mode="after")
    def _levels_ordered(self) -> "FPNConfig":
        if self.max_level < self.min_level:
            raise ValueError("max_level must be >= min_level")
        return self

    @property
    def strides(self) -> list[int]:
        return [2**level for level in range(self.min_level, self.max_level + 1)]


class HeadConfig(Strict):
    num_convs: int = Field(4, ge=0)
    channels: int = Field(256, gt=0)
    norm: Literal["gn", "none"] = "gn"
    # Centerness branch: none, on the classification tower or on the regression tower.
    centerness: Literal["none", "cls", "reg"] = "reg"
    # A trainable scalar per pyramid level multiplying the regression output (Table 1 "Scalar").
    scalar_per_level: bool = True
    prior_prob: float = Field(0.01, gt=0.0, lt=1.0)
    # The last conv of each tower is a modulated deformable conv (DCNv2, mask = sigmoid), the
    # official ``MODEL.ATSS.USE_DCN_IN_TOWER`` of the "-DCN" configs (Table 8).
    dcn_in_tower: bool = False


class AnchorConfig(Strict):
    octave_base_scale: float = Field(8.0, gt=0.0)
    scales_per_octave: int = Field(1, ge=1)
    aspect_ratios: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    # Where a location's anchors are centred, as a fraction of the stride: 0.5 puts the centre of
    # feature cell (x, y) at ((x + 0.5) S, (y + 0.5) S) (official ATSS / FCOS); 0.0 at (x S, y S)
    # (torchvision's AnchorGenerator, detectron2's ANCHOR_GENERATOR.OFFSET default).
    offset: float = Field(0.5, ge=0.0, lt=1.0)

    @field_validator("aspect_ratios")
    @classmethod
    def _positive(cls, ratios: list[float]) -> list[float]:
        if any(r <= 0 for r in ratios):
            raise ValueError("aspect ratios must be > 0")
        return ratios

    @property
    def num_anchors_per_location(self) -> int:
        return self.scales_per_octave * len(self.aspect_ratios)


class RegressionConfig(Strict):
    # Where regression starts: an anchor box (deltas) or the location point (ltrb / stride).
    start: Literal["box", "point"] = "box"
    box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)


def _check_scale_ranges(ranges: list[tuple[float, float]] | None
                        ) -> list[tuple[float, float]] | None:
    for low, high in ranges or ():
        if math.isnan(high) or not 0.0 <= low < high:
            raise ValueError(f"each range needs 0 <= low < high (high may be .inf), "
                             f"got ({low}, {high})")
    return ranges


# (low, high) per level: low finite, high finite or inf (open), never NaN.
ScaleRanges = list[tuple[float, Annotated[float, Field(allow_inf_nan=True)]]]


class MaxIoUAssign(Strict):
    strategy: Literal["max_iou"] = "max_iou"
    fg_iou_thresh: float = Field(0.5, ge=0.0, le=1.0)
    bg_iou_thresh: float = Field(0.4, ge=0.0, le=1.0)
    low_quality_matches: bool = True
    center_in_gt: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> "MaxIoUAssign":
        if self.bg_iou_thresh > self.fg_iou_thresh:
            raise ValueError("bg_iou_thresh must be <= fg_iou_thresh")
        return self


class FCOSAssign(Strict):
    strategy: Literal["fcos"] = "fcos"
    # None: derived from the strides (default_scale_ranges); else one (lo, hi) per level.
    scale_ranges: ScaleRanges | None = None
    _scale_ranges = field_validator("scale_ranges")(_check_scale_ranges)
    center_sampling_radius: float | None = Field(None, gt=0.0)


class TopkScaleAssign(Strict):
    strategy: Literal["topk_scale"] = "topk_scale"
    topk: int = Field(9, ge=1)
    scale_ranges: ScaleRanges | None = None
    _scale_ranges = field_validator("scale_ranges")(_check_scale_ranges)


class ATSSAssign(Strict):
    strategy: Literal["atss"] = "atss"
    topk: int = Field(9, ge=1)


class TaskAlignedAssign(Strict):
    """TOOD's task-aligned assignment (prediction-aware: ``atss_bench.assign.tood``)."""

    strategy: Literal["task_aligned"] = "task_aligned"
    topk: int = Field(13, ge=1)
    alpha: float = Field(1.0, ge=0.0)
    beta: float = Field(6.0, ge=0.0)
    # TOOD's warm-up: ATSS (topk 9) for the first N training steps, while predictions are
    # garbage (TOOD: the first 4 of 12 epochs). 0: task-aligned from the first step.
    warmup_iters: int = Field(0, ge=0)


class SimOTAAssign(Strict):
    """YOLOX's SimOTA dynamic-k assignment (prediction-aware: ``atss_bench.assign.simota``)."""

    strategy: Literal["simota"] = "simota"
    center_radius: float = Field(2.5, gt=0.0)
    candidate_topk: int = Field(10, ge=1)
    iou_weight: float = Field(3.0, ge=0.0)
    cls_weight: float = Field(1.0, ge=0.0)


# A plug-in rule: "pkg.module:function", "path/to/file.py:function" or an entry-point name.
PLUGIN_STRATEGY = (r"^(?:[A-Za-z_][\w.]*|[^:\x00-\x1f]{1,250}\.py):[A-Za-z_]\w*$"
                   r"|^[A-Za-z_][\w.-]{0,99}$")
PLUGIN_STRATEGY_MAX = 300
ASSIGNERS_ENTRY_POINT_GROUP = "atss_bench.assigners"  # plug-ins named by an installed package
PluginParam = Union[bool, int, float, str, None, list[Any]]


class PluginAssign(Strict):
    """A user's rule, named by import path or entry point, with its keyword params.

    ``rule`` (the qualified name) and ``source_sha256`` (of its module's source) are filled in
    where a recipe or flag is read (``atss_bench.assign.plugins.resolve_plugin_config``), never
    by reading a stored config, and are part of the run id: editing the rule makes new runs.
    """

    strategy: str = Field(pattern=PLUGIN_STRATEGY, max_length=PLUGIN_STRATEGY_MAX)
    params: dict[str, PluginParam] = Field(default_factory=dict)
    rule: str = ""
    source_sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")


BUILTIN_ASSIGN_CONFIGS: dict[str, type[Strict]] = {
    "max_iou": MaxIoUAssign, "fcos": FCOSAssign, "topk_scale": TopkScaleAssign, "atss": ATSSAssign,
    "task_aligned": TaskAlignedAssign, "simota": SimOTAAssign,
}
PLUGIN_TAG = "plugin"


def _assign_tag(value: Any) -> str:
    """Union tag: a built-in strategy's own name, anything else a plug-in."""
    strategy = value.get("strategy", "atss") if isinstance(value, dict) else getattr(
        value, "strategy", None)
    return strategy if strategy in BUILTIN_ASSIGN_CONFIGS else PLUGIN_TAG


AssignConfig = Annotated[
    Union[
        Annotated[MaxIoUAssign, Tag("max_iou")], Annotated[FCOSAssign, Tag("fcos")],
        Annotated[TopkScaleAssign, Tag("topk_scale")], Annotated[ATSSAssign, Tag("atss")],
        Annotated[TaskAlignedAssign, Tag("task_aligned")], Annotated[SimOTAAssign, Tag("simota")],
        Annotated[PluginAssign, Tag(PLUGIN_TAG)],
    ],
    Discriminator(_assign_tag),
]
# Strategy name -> config class: the built-ins, by name (plug-ins are PluginAssign).
ASSIGN_CONFIGS: dict[str, type[Strict]] = dict(BUILTIN_ASSIGN_CONFIGS)


class LossConfig(Strict):
    focal_alpha: float = Field(0.25, ge=0.0, le=1.0)
    focal_gamma: float = Field(2.0, ge=0.0)
    regression: Literal["smooth_l1", "giou"] = "giou"
    regression_weight: float = Field(2.0, ge=0.0)
    smooth_l1_beta: float = Field(1.0 / 9.0, ge=0.0)
    # Weight each positive's regression loss by its centerness target (official ATSS / FCOS).
    weight_by_centerness: bool = True
    # What the losses are divided by. "mean_pos": the positives averaged over processes (official
    # ATSS / FCOS). "retinanet": maskrcnn-benchmark's RetinaNet: this process's own positives, plus
    # its number of images for the classification loss (``/ (num_pos + N)``).
    normalizer: Literal["mean_pos", "retinanet"] = "mean_pos"
    centerness_weight: float = Field(1.0, ge=0.0)


ScaleRange = tuple[Annotated[float, Field(ge=0.0)], Annotated[float, Field(gt=0.0)]]


class TestAugConfig(Strict):
    """Test-time augmentation over the test scales (``data.test_min_size`` first, then
    ``data.test_extra_sizes``): the official ATSS ``TEST.BBOX_AUG`` (``engine.tta``). The
    defaults are the plain multi-scale test: no flip, no size ranges, class-wise NMS."""

    # Also detect on the horizontally flipped image at every scale (official H_FLIP and
    # SCALE_H_FLIP, both on for Table 8).
    flip: bool = False
    # Longer-side cap of the extra scales >= test_min_size (official MAX_SIZE 3000; smaller ones
    # keep data.max_size). None: the cap grows with the scale, data.max_size * size / test_min_size.
    max_size: Size | None = None
    # One (lo, hi) per data.test_extra_sizes entry (official SCALE_RANGES): that scale keeps the
    # boxes with lo^2 < w * h < hi^2, measured in that scale's resized pixels. [] = keep all.
    scale_ranges: list[ScaleRange] = Field(default_factory=list)
    # How the pooled detections are merged per class: "nms" (model.test.nms_thresh), "vote" or
    # "soft_vote" (box voting at vote_thresh; the official Table 8 test is "soft_vote" at 0.66).
    merge: Literal["nms", "vote", "soft_vote"] = "nms"
    vote_thresh: float = Field(0.66, ge=0.0, le=1.0)
    # Detections kept per image after merging; None: model.test.detections_per_img. The official
    # merge keeps MODEL.ATSS.PRE_NMS_TOP_N = 1000.
    detections_per_img: int | None = Field(None, ge=1)

    @field_validator("scale_ranges")
    @classmethod
    def _ranges_ordered(cls, ranges: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for lo, hi in ranges:
            if not lo < hi:
                raise ValueError(f"scale range ({lo}, {hi}): lo must be below hi")
        return ranges


class TestConfig(Strict):
    score_thresh: float = Field(0.05, ge=0.0, le=1.0)
    pre_nms_top_n: int = Field(1000, ge=1)
    nms_thresh: float = Field(0.6, ge=0.0, le=1.0)
    detections_per_img: int = Field(100, ge=1)
    # What score_thresh applies to: "cls", the class probability alone (official ATSS / FCOS),
    # or "score", the final score sqrt(cls x centerness) (torchvision's FCOS). Same without a
    # centerness branch.
    threshold_on: Literal["cls", "score"] = "cls"
    aug: TestAugConfig = Field(default_factory=TestAugConfig)


class ModelConfig(Strict):
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    fpn: FPNConfig = Field(default_factory=FPNConfig)
    head: HeadConfig = Field(default_factory=HeadConfig)
    anchors: AnchorConfig = Field(default_factory=AnchorConfig)
    regression: RegressionConfig = Field(default_factory=RegressionConfig)
    assign: AssignConfig = Field(default_factory=ATSSAssign)
    loss: LossConfig = Field(default_factory=LossConfig)
    test: TestConfig = Field(default_factory=TestConfig)


class MiniDataConfig(Strict):
    """Parameters of the synthetic mini-COCO generator (used when ``data.kind == "mini"``)."""

    seed: Seed = 0
    # Bounded: the generator writes every image (~10 KB each) into the cache.
    num_train: int = Field(600, ge=1, le=100_000)
    num_val: int = Field(150, ge=1, le=100_000)
    # Objects coloured around their category's hue; False: random colours, only shape tells.
    category_hue: bool = True


class DataConfig(Strict):
    kind: Literal["coco", "mini"] = "coco"
    # COCO root (kind coco): --data-root wins, then this, then $ATSS_BENCH_DATA. Mini data always
    # comes from the generator cache ($ATSS_BENCH_CACHE), so this is ignored for kind mini.
    root: str | None = None
    train_split: str = "train2017"
    val_split: str = "val2017"
    # Shorter side; several values = multi-scale training (one drawn per image).
    min_size: list[Size] = Field(default_factory=lambda: [800], min_length=1)
    max_size: Size = 1333
    test_min_size: Size = 800
    # Multi-scale testing (Table 8): extra shorter sides, detections merged by NMS; [] = single.
    test_extra_sizes: list[Size] = Field(default_factory=list)
    size_divisibility: int = Field(32, ge=1)
    # Batch landscape and portrait images apart (the official code's ASPECT_RATIO_GROUPING): a
    # batch is padded to its largest image, so mixing them pads more (engine.sampler).
    aspect_ratio_grouping: bool = False
    flip_prob: float = Field(0.5, ge=0.0, le=1.0)
    num_workers: int = Field(2, ge=0)
    # Evaluate on the first N val images only (None: all).
    val_images: int | None = Field(None, ge=1)
    mini: MiniDataConfig = Field(default_factory=MiniDataConfig)


class TrainConfig(Strict):
    images_per_batch: int = Field(16, ge=1)  # global batch, whatever the number of processes
    # "sgd" (the paper's, with ``momentum``) or "adamw" (betas 0.9 / 0.999, decoupled weight
    # decay): the CPU-scale mini profile trains from scratch in minutes, where AdamW learns faster.
    optimizer: Literal["sgd", "adamw"] = "sgd"
    base_lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    weight_decay_bias: float = Field(0.0, ge=0.0)
    bias_lr_factor: float = Field(2.0, gt=0.0)
    warmup: Literal["constant", "linear", "none"] = "constant"
    warmup_factor: float = Field(1.0 / 3.0, gt=0.0, le=1.0)
    warmup_iters: int = Field(500, ge=0)
    steps: list[int] = Field(default_factory=lambda: [60000, 80000])
    gamma: float = Field(0.1, gt=0.0)
    max_iter: int = Field(90000, ge=1)
    amp: bool = True  # mixed precision on CUDA; ignored on CPU
    checkpoint_period: int = Field(2500, ge=1)

    @model_validator(mode="after")
    def _steps_sorted(self) -> "TrainConfig":
        if self.steps != sorted(self.steps):
            raise ValueError("steps must be increasing")
        return self


class ExperimentConfig(Strict):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    seed: Seed = 0

    @model_validator(mode="after")
    def _scale_ranges_match_test_sizes(self) -> "ExperimentConfig":
        ranges, sizes = self.model.test.aug.scale_ranges, self.data.test_extra_sizes
        if ranges and len(ranges) != len(sizes):
            raise ValueError(f"model.test.aug.scale_ranges has {len(ranges)} ranges for "
                             f"{len(sizes)} data.test_extra_sizes: give one per extra size")
        if ranges and len({*sizes, self.data.test_min_size}) != len(sizes) + 1:
            raise ValueError("with model.test.aug.scale_ranges, data.test_extra_sizes must be "
                             "distinct and differ from data.test_min_size")
        return self


# Knobs that say where or how fast a run happens, not what it computes: left out of the run id.
RUNTIME_KEYS: frozenset[str] = frozenset({
    "data.root", "data.num_workers", "train.checkpoint_period",
})


# Knobs added after run ids were first stored, with the value that behaves as before they existed:
# at that value a knob is left out of the run id, so the runs already in a store keep their ids.
HASH_NEUTRAL: dict[str, Any] = {
    "train.optimizer": "sgd",
    "data.mini.category_hue": False,  # generator v1 coloured objects at random
    "data.aspect_ratio_grouping": False,
    "model.test.aug": TestAugConfig().model_dump(mode="json"),  # plain multi-scale test
    "model.backbone.dcn_stages": [3, 4, 5],  # DCN stages before the knob existed
    "model.head.dcn_in_tower": False,
    "model.loss.normalizer": "mean_pos",
    "model.anchors.offset": 0.5,  # official anchor centres
    "model.test.threshold_on": "cls",  # official candidate threshold
}


def _parent(tree: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str]:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree[key]
    return tree, leaf


def config_hash(config: ExperimentConfig, length: int = 12) -> str:
    """Short stable hash of the resolved config (key order and machine independent)."""
    tree = config.model_dump(mode="json")
    for dotted in RUNTIME_KEYS:
        node, leaf = _parent(tree, dotted)
        node.pop(leaf, None)
    for dotted, neutral in HASH_NEUTRAL.items():
        node, leaf = _parent(tree, dotted)
        if node.get(leaf) == neutral:
            del node[leaf]
    blob = json.dumps(tree, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
