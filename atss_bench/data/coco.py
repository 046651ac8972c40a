"""COCO-format detection dataset (real COCO or mini-COCO) over the standard layout.

    <root>/annotations/instances_<split>.json
    <root>/<split>/<file_name>

Targets follow the official ATSS code (maskrcnn-benchmark): crowd boxes are left out of training
targets, boxes are clipped to the image and those narrower or shorter than 1 px dropped, and
(for training) images without any usable annotation are removed. Labels are contiguous
``0 .. num_classes - 1`` in ascending COCO category id order.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision.ops import box_convert, clip_boxes_to_image, remove_small_boxes

from ..errors import DataError
from .annotation_file import load_annotation_file
from .roots import DATA_ROOT_ENV, resolve_data_root
from .transforms import DetectionTransform

__all__ = ["BadImageError", "CocoDetection", "coco_split_paths", "collate_detection",
           "load_coco", "resolve_data_root"]
LAYOUT_HINT = ("expected the COCO layout <root>/annotations/instances_<split>.json and "
               "<root>/<split>/*.jpg; set --data-root or " + DATA_ROOT_ENV)
Target = dict[str, Any]


class BadImageError(DataError):
    """An image file that cannot be decoded; the message names the file.

    A DataLoader worker's exception reaches the main process rebuilt by torch as
    ``type(exc)("Caught BadImageError in DataLoader worker process 0.\nOriginal Traceback ...")``,
    whose first line (the run's one-line failure reason) would not name the file. Built from such
    a text, this class takes back its original message from the traceback's last line.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(_original_message(message, type(self)), hint)


def _original_message(text: str, cls: type) -> str:
    if not text.startswith(f"Caught {cls.__name__} "):
        return text
    marker = f"{cls.__module__}.{cls.__qualname__}: "
    start = text.rfind(marker)
    if start < 0:
        return text
    return text[start + len(marker):].split("\n", 1)[0]


def coco_split_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation JSON, image directory) of ``split`` under ``root``; DataError if missing."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist", hint=LAYOUT_HINT)
    annotation_file = root / "annotations" / f"instances_{split}.json"
    if not annotation_file.is_file():
        what = "is not a regular file" if annotation_file.exists() else "not found"
        raise DataError(f"annotations/instances_{split}.json {what} under {root}",
                        hint=LAYOUT_HINT)
    image_dir = root / split
    if not image_dir.is_dir():
        raise DataError(f"image directory {split}/ not found under {root}", hint=LAYOUT_HINT)
    return annotation_file, image_dir


def load_coco(annotation_file: Path) -> COCO:
    """pycocotools' COCO index of ``annotation_file``, read and validated by
    ``annotation_file.load_annotation_file`` (DataError naming the file if malformed), never by
    pycocotools itself."""
    coco = COCO()
    coco.dataset = load_annotation_file(annotation_file)
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def _has_valid_annotation(anns: list[dict[str, Any]]) -> bool:
    """maskrcnn-benchmark's rule: some annotation (crowd included) has a box wider and taller
    than 1 px."""
    return any(ann["bbox"][2] > 1 and ann["bbox"][3] > 1 for ann in anns)


class CocoDetection(Dataset):
    """``dataset[i]`` -> (image [3, H, W] float RGB in [0, 1], target).

    target: ``boxes`` float32 [K, 4] xyxy in resized pixels, ``labels`` int64 [K] contiguous,
    ``image_id`` int, ``orig_size`` and ``size`` (height, width) before / after resizing, and
    ``scale`` (x, y) = resized / original (see ``transforms.map_boxes_to_original``).
    ``remove_images_without_annotations`` defaults to ``train`` (official training removes them,
    evaluation keeps every image). ``flip_prob`` applies only when ``train``.

    ``cache_bytes``: keep every decoded image and its training boxes and labels in memory (in
    each loader worker, which lives as long as its loader) when the whole split's images fit in
    this many bytes, by the sizes its annotation file gives; otherwise, and with 0 (the default),
    every image is decoded from its file each time. A cached image is the very bitmap a new
    decode gives (decoding is deterministic) and the transforms never modify their input, so the
    samples are identical either way (``tests/data/test_image_cache.py``).
    """

    def __init__(self, root: str | Path, split: str, *, train: bool,
                 min_size: int | Sequence[int] = 800, max_size: int = 1333,
                 flip_prob: float = 0.5,
                 remove_images_without_annotations: bool | None = None,
                 cache_bytes: int = 0) -> None:
        annotation_file, self.image_dir = coco_split_paths(root, split)
        self.root, self.split, self.train = Path(root), split, train
        self.coco = load_coco(annotation_file)
        self.contiguous_to_cat_id: list[int] = sorted(self.coco.cats)
        self.cat_id_to_contiguous: dict[int, int] = {
            cat_id: label for label, cat_id in enumerate(self.contiguous_to_cat_id)}
        self.class_names: list[str] = [self.coco.cats[c]["name"] for c in self.contiguous_to_cat_id]
        remove_empty = (train if remove_images_without_annotations is None
                        else remove_images_without_annotations)
        self.ids: list[int] = [i for i in sorted(self.coco.imgs) if not remove_empty
                               or _has_valid_annotation(self.coco.imgToAnns.get(i, []))]
        self.transform = DetectionTransform(min_size, max_size, flip_prob if train else 0.0)
        # image id -> (decoded image, training boxes, labels); None: no cache (see class doc)
        self._cache: dict[int, tuple[Image.Image, torch.Tensor, torch.Tensor]] | None = (
            {} if 0 < self.decoded_bytes() <= cache_bytes else None)

    def decoded_bytes(self) -> int:
        """Memory the split's decoded RGB images take (PIL keeps 4 bytes a pixel), from the
        annotation file's sizes."""
        return sum(4 * int(self.coco.imgs[i]["width"]) * int(self.coco.imgs[i]["height"])
                   for i in self.ids)

    @property
    def caches_images(self) -> bool:
        return self._cache is not None

    @property
    def num_classes(self) -> int:
        return len(self.contiguous_to_cat_id)

    def __len__(self) -> int:
        return len(self.ids)

    def aspect_ratio_groups(self) -> list[int]:
        """Per sample: 0 if the image is wider than tall, else 1 (the official grouping's
        ``bisect_right([1], h / w)``), from the annotation file's sizes, without decoding."""
        return [int(self.coco.imgs[i]["height"] >= self.coco.imgs[i]["width"]) for i in self.ids]

    def load_image(self, image_id: int) -> Image.Image:
        """The image as RGB (grayscale, CMYK, palette and RGBA files are converted)."""
        path = self.image_dir / self.coco.imgs[image_id]["file_name"]
        try:
            with Image.open(path) as image:
                image.load()
                return image if image.mode == "RGB" else image.convert("RGB")
        except FileNotFoundError as error:
            raise DataError(f"image {path} listed in the annotations is missing",
                            hint=LAYOUT_HINT) from error
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            detail = " ".join(str(error).split()) or type(error).__name__
            raise BadImageError(f"cannot decode image {path}: {detail}") from error

    def load_target(self, image_id: int, height: int, width: int) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
        """Training boxes (xyxy, original pixels) and contiguous labels: no crowds, clipped,
        boxes under 1 px dropped."""
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes = clip_boxes_to_image(box_convert(boxes, "xywh", "xyxy"), (height, width))
        labels = torch.tensor([self.cat_id_to_contiguous[a["category_id"]] for a in anns],
                              dtype=torch.int64)
        keep = remove_small_boxes(boxes, 1.0)
        return boxes[keep], labels[keep]

    def load_sample(self, image_id: int) -> tuple[Image.Image, torch.Tensor, torch.Tensor]:
        """The image and its training boxes and labels (``load_image``, ``load_target``), from
        the cache when it is on (the image is shared: never modify it in place)."""
        cached = self._cache.get(image_id) if self._cache is not None else None
        if cached is None:
            image = self.load_image(image_id)
            cached = (image, *self.load_target(image_id, image.height, image.width))
            if self._cache is not None:
                self._cache[image_id] = cached
        image, boxes, labels = cached
        return image, boxes.clone(), labels.clone()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        image_id = self.ids[index]
        image, boxes, labels = self.load_sample(image_id)
        orig_size = (image.height, image.width)
        tensor, boxes, _ = self.transform(image, boxes)
        size = (int(tensor.shape[1]), int(tensor.shape[2]))
        target: Target = {
            "boxes": boxes,
            "labels": labels,
            "image_id": image_id,
            "orig_size": orig_size,
            "size": size,
            "scale": (size[1] / orig_size[1], size[0] / orig_size[0]),
        }
        return tensor, target


def collate_detection(batch: Sequence[tuple[torch.Tensor, Target]]
                      ) -> tuple[list[torch.Tensor], list[Target]]:
    """DataLoader collate: images and targets as lists (sizes differ; the model batches them)."""
    return [image for image, _ in batch], [target for _, target in batch]
