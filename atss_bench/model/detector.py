"""DenseDetector: backbone -> FPN -> shared dense head, with anchors, targets, losses, inference.

RetinaNet, FCOS and ATSS variants differ only in the parts handed to the constructor (built from
config by ``atss_bench.model.build_detector``).

Input: a list of [3, H, W] float images in [0, 1] (torchvision's convention). The detector
normalises them (ImageNet mean / std) and zero-pads them into one batch whose sides are divisible
by ``size_divisibility``; it never resizes (the data pipeline does), so eval-mode boxes are in the
input images' pixel coordinates, clipped to each image.
Train mode: ``model(images, targets)``, targets a list of {"boxes": [K, 4] xyxy float,
"labels": [K] int64 in 0..C-1} -> {"loss_cls", "loss_reg"[, "loss_centerness"]}.
On CPU the batch is made channels-last (NHWC), which oneDNN's convolutions run faster.
Eval mode: ``model(images)`` -> list of {"boxes" [D, 4], "scores" [D], "labels" [D]}.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from atss_bench.boxes import generate_anchors
from atss_bench.model.backbone import Backbone
from atss_bench.model.coder import RegressionCoder
from atss_bench.model.fpn import FPN
from atss_bench.model.head import DenseHead
from atss_bench.model.losses import LossSettings, compute_losses
from atss_bench.model.postprocess import InferenceSettings, postprocess_detections
from atss_bench.model.targets import Assigner, build_targets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AnchorSettings:
    """Anchors of level stride S: #A = scales_per_octave x len(aspect_ratios), base size
    octave_base_scale * S, centred at ((x + offset) S, (y + offset) S)
    (``atss_bench.boxes.generate_anchors``)."""

    strides: tuple[int, ...]
    octave_base_scale: float = 8.0
    scales_per_octave: int = 1
    aspect_ratios: tuple[float, ...] = (1.0,)
    offset: float = 0.5

    @property
    def num_anchors_per_location(self) -> int:
        return self.scales_per_octave * len(self.aspect_ratios)


class DenseDetector(nn.Module):
    pixel_mean: Tensor
    pixel_std: Tensor

    def __init__(self, backbone: Backbone, fpn: FPN, head: DenseHead, anchors: AnchorSettings,
                 coder: RegressionCoder, assigner: Assigner, loss: LossSettings,
                 inference: InferenceSettings, num_classes: int,
                 size_divisibility: int = 32) -> None:
        super().__init__()
        if len(anchors.strides) != fpn.num_levels:
            raise ValueError(f"{len(anchors.strides)} anchor strides for {fpn.num_levels} levels")
        self.backbone, self.fpn, self.head = backbone, fpn, head
        self.anchor_settings = anchors
        self.coder, self.assigner = coder, assigner
        self.loss_settings, self.inference_settings = loss, inference
        self.num_classes = num_classes
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(3, 1, 1), False)
        self._anchor_cache: dict[tuple, tuple[list[Tensor], list[Tensor]]] = {}
        # NHWC batches on CPU (see preprocess); False keeps NCHW, torchvision's layout, which
        # the parity tests use to compare bit for bit (a layout changes float rounding only).
        # channels_last_train = False keeps NCHW in training only (build_detector: frozen BN).
        self.channels_last = True
        self.channels_last_train = True
        if assigner.warmup_iters:
            # Training steps taken, for a rule with a warm-up (TOOD): saved in checkpoints, so
            # a resumed run switches rules at the same step. Absent otherwise (state_dict keys
            # of every other detector unchanged).
            self.register_buffer("assign_step", torch.zeros((), dtype=torch.int64))

    def preprocess(self, images: Sequence[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Normalise and zero-pad: list of [3, H, W] -> [B, 3, H', W'] and the (H, W) sizes."""
        if len(images) == 0:
            raise ValueError("no images")
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        div = self.size_divisibility
        height = int(math.ceil(max(h for h, _ in sizes) / div) * div)
        width = int(math.ceil(max(w for _, w in sizes) / div) * div)
        batch = self.pixel_mean.new_zeros((len(images), 3, height, width))
        for b, (image, (h, w)) in enumerate(zip(images, sizes)):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"images must be [3, H, W], got {list(image.shape)}")
            batch[b, :, :h, :w] = (image.to(batch) - self.pixel_mean) / self.pixel_std
        nhwc = self.channels_last and (self.channels_last_train or not self.training)
        if batch.device.type == "cpu" and nhwc:
            # oneDNN convolutions run ~7-10% faster on NHWC (measured: R-50 FPN train step and
            # inference); every later conv follows the input's layout. CUDA is left as it is.
            # Except training with frozen BN (the paper's setting): there NCHW steps ~4% faster
            # (GroupNorm and conv backward are slower on NHWC; benchmarks/bench_step.py).
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, sizes

    def anchors_per_level(self, feature_sizes: list[tuple[int, int]], device: torch.device
                          ) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: anchors [H*W*A, 4] and their strides [H*W*A] (float32, cached)."""
        key = (tuple(feature_sizes), str(device))
        if key not in self._anchor_cache:
            s = self.anchor_settings
            anchors = generate_anchors(feature_sizes, s.strides, s.octave_base_scale,
                                       s.scales_per_octave, s.aspect_ratios, device=device,
                                       dtype=torch.float32, offset=s.offset)
            strides = [torch.full((len(a),), float(st), device=device)
                       for a, st in zip(anchors, s.strides)]
            if len(self._anchor_cache) > 32:
                self._anchor_cache.clear()
            self._anchor_cache[key] = (anchors, strides)
        return self._anchor_cache[key]

    def forward(self, images: Sequence[Tensor],
                targets: Sequence[Mapping[str, Tensor]] | None = None
                ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("train mode needs targets (call model.eval() for inference)")
        if targets is not None and len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        batch, image_sizes = self.preprocess(images)
        features = self.fpn(self.backbone(batch))
        outputs = self.head(features)
        anchors, strides = self.anchors_per_level(
            [(f.shape[-2], f.shape[-1]) for f in features], batch.device)
        if not self.training or targets is None:
            return postprocess_detections(self.inference_settings, self.coder, outputs.cls,
                                          outputs.reg, outputs.centerness, anchors, strides,
                                          image_sizes)
        all_anchors, all_strides = torch.cat(anchors), torch.cat(strides)  # [N, 4], [N]
        cls, reg = torch.cat(outputs.cls, 1), torch.cat(outputs.reg, 1)  # [B, N, C], [B, N, 4]
        assigner = self._assigner_for_this_step()
        batch_targets = build_targets(assigner, all_anchors, [len(a) for a in anchors],
                                      targets, self.num_classes,
                                      self._predictions(assigner.inputs, cls, reg, all_anchors,
                                                        all_strides))
        centerness = torch.cat(outputs.centerness, 1) if outputs.centerness is not None else None
        return compute_losses(self.loss_settings, self.coder, cls, reg, centerness, all_anchors,
                              all_strides, batch_targets)

    @torch.no_grad()
    def assignment_inputs(self, images: Sequence[Tensor], inputs: Sequence[str]
                          ) -> tuple[Tensor, list[int], dict[str, Tensor]]:
        """What a prediction-aware rule gets from a training step on ``images``, without targets
        or losses (``atss-bench inspect-assign --checkpoint``): anchors [N, 4], anchors per level
        and the detached ``_predictions`` it asks for (``inputs``). Runs in the current mode."""
        batch, _ = self.preprocess(images)
        features = self.fpn(self.backbone(batch))
        outputs = self.head(features)
        anchors, strides = self.anchors_per_level(
            [(f.shape[-2], f.shape[-1]) for f in features], batch.device)
        all_anchors, all_strides = torch.cat(anchors), torch.cat(strides)
        cls, reg = torch.cat(outputs.cls, 1), torch.cat(outputs.reg, 1)
        return all_anchors, [len(a) for a in anchors], self._predictions(
            inputs, cls, reg, all_anchors, all_strides)

    def _assigner_for_this_step(self) -> Assigner:
        """The rule in force now (a warm-up rule first, if any); counts training steps."""
        if not self.assigner.warmup_iters:
            return self.assigner
        step = int(self.assign_step)
        self.assign_step += 1
        return self.assigner.at_step(step)

    def _predictions(self, inputs: Sequence[str], cls: Tensor, reg: Tensor, anchors: Tensor,
                     strides: Tensor) -> dict[str, Tensor]:
        """The detached predictions a prediction-aware rule asks for (none for the others):
        pred_scores [B, N, C] sigmoid scores, pred_boxes [B, N, 4] decoded boxes, float32."""
        predictions = {}
        if "pred_scores" in inputs:
            predictions["pred_scores"] = cls.detach().float().sigmoid()
        if "pred_boxes" in inputs:
            batch_size, num_anchors = reg.shape[:2]
            boxes = self.coder.decode(reg.detach().float().reshape(-1, 4),
                                      anchors.repeat(batch_size, 1), strides.repeat(batch_size))
            predictions["pred_boxes"] = boxes.reshape(batch_size, num_anchors, 4)
        return predictions
