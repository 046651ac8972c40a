"""The ground truth of one COCO split as training sees it, read from the annotation file alone.

No image is decoded: image sizes come from the ``images`` entries of the annotation file, read and
validated by ``data.annotation_file.load_annotation_file`` (an annotation without ``area`` gets
its box area w * h). Each image is resized like evaluation does (``get_resize_size`` with the test
shorter side); its GT boxes go through the training target path of ``CocoDetection.load_target``
and the resize of ``DetectionTransform``, vectorised over the whole split:

1. non-crowd annotations only; bbox (x, y, w, h) -> (x0, y0, x1, y1) in float32;
2. clipped to the original image, boxes narrower or shorter than 1 px dropped;
3. multiplied by (new_w / old_w, new_h / old_h), float32 (torchvision's box resize).

GTs are stored image by image (``gt_offsets``), in the annotation file's order within an image.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_convert

from atss_bench.data import get_resize_size
from atss_bench.data.annotation_file import annotation_area, load_annotation_file
from atss_bench.errors import DataError


@dataclass(frozen=True)
class SplitGroundTruth:
    """Images (sorted by id) and their usable non-crowd GT boxes, resized.

    Per image [I]: ``image_ids``, ``orig_sizes`` and ``sizes`` (height, width) before / after
    resizing; ``gt_offsets`` [I + 1]: the GTs of image i are ``gt_offsets[i]:gt_offsets[i + 1]``.
    Per GT [G]: ``boxes`` float32 [G, 4] xyxy in resized pixels, ``areas`` the annotation's
    original ``area`` (what COCOeval's size ranges use) and ``annotation_ids``.
    """

    image_ids: np.ndarray
    orig_sizes: np.ndarray
    sizes: np.ndarray
    gt_offsets: np.ndarray
    boxes: Tensor
    areas: np.ndarray
    annotation_ids: np.ndarray

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_gt(self) -> int:
        return len(self.areas)

    def image_position(self, image_id: int) -> int:
        """Index of ``image_id`` in ``image_ids``; DataError if the split has no such image."""
        position = int(np.searchsorted(self.image_ids, image_id))
        if position == self.num_images or self.image_ids[position] != image_id:
            raise DataError(f"no image with id {image_id} in this split",
                            hint=f"ids range from {self.image_ids.min()} to "
                                 f"{self.image_ids.max()}" if self.num_images else "no images")
        return position


def load_split_ground_truth(annotation_file: str | Path, min_size: int,
                            max_size: int) -> SplitGroundTruth:
    """Read ``annotation_file`` and resize every image to shorter side ``min_size`` (longer side
    at most ``max_size``); see the module docstring for the GT path."""
    data = load_annotation_file(annotation_file)  # validated: ids, sizes and boxes are typed
    images = sorted(data["images"], key=lambda image: image["id"])
    image_ids = np.array([image["id"] for image in images], dtype=np.int64)
    orig = np.array([(image["height"], image["width"]) for image in images],
                    dtype=np.int64).reshape(-1, 2)
    anns = [a for a in data.get("annotations", []) if not a.get("iscrowd", 0)]
    ann_image = np.array([a["image_id"] for a in anns], dtype=np.int64)
    bboxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
    areas = np.array([annotation_area(a) for a in anns], dtype=np.float64)
    ann_ids = np.array([a["id"] for a in anns], dtype=np.int64)
    if (orig < 1).any():
        raise DataError(f"{annotation_file}: an image has a width or height below 1")
    sizes = np.array([get_resize_size(int(h), int(w), min_size, max_size) for h, w in orig],
                     dtype=np.int64).reshape(-1, 2)

    image_index = np.searchsorted(image_ids, ann_image)  # every image_id is listed (validated)
    resized, clipped_w, clipped_h = _clipped_resized_boxes(bboxes, orig[image_index],
                                                           sizes[image_index])
    keep = ((clipped_w >= 1.0) & (clipped_h >= 1.0)).numpy()
    order = np.argsort(image_index[keep], kind="stable")  # image by image, file order within
    image_index = image_index[keep][order]
    counts = np.bincount(image_index, minlength=len(image_ids))
    return SplitGroundTruth(
        image_ids=image_ids,
        orig_sizes=orig,
        sizes=sizes,
        gt_offsets=np.concatenate(([0], np.cumsum(counts))).astype(np.int64),
        boxes=resized[torch.from_numpy(np.flatnonzero(keep)[order])],
        areas=areas[keep][order],
        annotation_ids=ann_ids[keep][order],
    )


def _clipped_resized_boxes(bboxes: Tensor, orig_hw: np.ndarray, new_hw: np.ndarray
                           ) -> tuple[Tensor, Tensor, Tensor]:
    """bbox xywh [A, 4] of images of (height, width) ``orig_hw`` [A, 2], resized to ``new_hw``
    [A, 2] -> (resized xyxy [A, 4], clipped width [A], clipped height [A]) before resizing."""
    xyxy = box_convert(bboxes, "xywh", "xyxy")  # [A, 4]
    height, width = (torch.from_numpy(orig_hw[:, i]).to(xyxy) for i in (0, 1))  # [A]
    limit = torch.stack((width, height, width, height), dim=1)  # [A, 4]
    clipped = torch.minimum(xyxy.clamp(min=0), limit)  # clip_boxes_to_image, per box
    # torchvision's box resize: float32 ratios new / old (Python floats rounded to float32)
    ratio_w = torch.from_numpy(new_hw[:, 1] / orig_hw[:, 1]).float()  # [A]
    ratio_h = torch.from_numpy(new_hw[:, 0] / orig_hw[:, 0]).float()
    ratios = torch.stack((ratio_w, ratio_h, ratio_w, ratio_h), dim=1)  # [A, 4]
    return clipped.mul(ratios), clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
