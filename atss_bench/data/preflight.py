"""Bad data fails before training, with a reason that names the split or the file.

The engine calls ``preflight_dataset`` after resolving the dataset and before building the model.
Per split (train, val):

1. ``annotations/instances_<split>.json`` exists, is a JSON object with images, annotations and
   categories (a val split without annotations would otherwise train for hours, then report a
   non-finite AP); every entry is well-formed: an image has an id, a relative ``file_name``
   inside the split folder and a positive size; an annotation points at a listed image and
   category and has a finite ``[x, y, w, h]`` box.
2. Every listed image is a regular file (never opened otherwise: a FIFO would block), not empty,
   and, by a tail read only, complete: a JPEG ends with its EOI marker ``FF D9`` and a PNG has its
   ``IEND`` chunk. A truncated image is ``DataError("truncated image <path> ...")``.

Full COCO takes a few seconds (one stat, one open and two small reads per image); a dataset that
passed is remembered under its fingerprint and realpath in ``$ATSS_BENCH_CACHE/dataset-checks.json``
and not checked again. Decode errors that only a full decode finds are reported by
``coco.CocoDetection`` with the file's name.
"""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from atss_bench.data.cache import JsonCache, default_cache_dir
from atss_bench.errors import DataError

CHECK_CACHE = "dataset-checks.json"
TAIL_BYTES = 1024  # JPEG EOI / PNG IEND must lie this close to the end (trailing padding allowed)
JPEG_MAGIC, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
PNG_MAGIC, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"
LAYOUT = "expected <root>/annotations/instances_<split>.json and <root>/<split>/<file_name>"


def preflight_dataset(root: str | Path, splits: Sequence[str], fingerprint: str, *,
                      loaded: Mapping[str, Any] | None = None,
                      cache_dir: Path | None = None) -> None:
    """Check ``splits`` of the COCO-layout dataset at ``root`` (see module doc); DataError naming
    the split or file on the first problem. ``loaded``: annotation dicts already read, by split."""
    root = Path(root)
    cache = JsonCache((cache_dir if cache_dir is not None else default_cache_dir()) / CHECK_CACHE)
    key = f"{fingerprint}|{os.path.realpath(root)}|{','.join(splits)}"
    if cache.get(key) is True:
        return
    for split in dict.fromkeys(splits):
        annotation_file = root / "annotations" / f"instances_{split}.json"
        dataset = (loaded or {}).get(split)
        if dataset is None:
            dataset = read_annotations(annotation_file, split)
        images = check_annotations(dataset, split, annotation_file)
        check_images(root / split, images, split, annotation_file)
    cache.put(key, True)
    cache.save()


def read_annotations(annotation_file: Path, split: str) -> Any:
    """The parsed JSON of a split's annotation file; DataError naming the split and the file."""
    try:
        info = os.stat(annotation_file)
    except OSError:
        raise DataError(f"split {split} has no annotation file: {annotation_file} not found",
                        hint=LAYOUT) from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"split {split}: annotation file {annotation_file} is not a regular file")
    try:
        fd = os.open(annotation_file, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            return json.loads(handle.read())
    except (OSError, ValueError, RecursionError) as exc:
        raise DataError(f"split {split}: {annotation_file} is not readable JSON "
                        f"({type(exc).__name__})") from None


def _entries(dataset: dict[str, Any], key: str, split: str, annotation_file: Path
             ) -> list[dict[str, Any]]:
    entries = dataset.get(key)
    if not isinstance(entries, list) or not entries:
        raise DataError(f"split {split} has no {key} in {annotation_file}",
                        hint="every split needs images, annotations and categories (a val split "
                             "without annotations cannot be evaluated)")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DataError(f"split {split}: {key}[{index}] in {annotation_file} is not an object")
    return entries


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_size(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _safe_name(name: Any) -> bool:
    """A relative path inside the split folder: no absolute path, no ``..``, no NUL."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def check_annotations(dataset: Any, split: str, annotation_file: Path) -> list[dict[str, Any]]:
    """Structure of one split's annotation dict (module doc, step 1); returns its images."""
    if not isinstance(dataset, dict):
        raise DataError(f"split {split}: {annotation_file} is not a COCO annotation object")
    images = _entries(dataset, "images", split, annotation_file)
    categories = _entries(dataset, "categories", split, annotation_file)
    annotations = _entries(dataset, "annotations", split, annotation_file)
    where = f"in {annotation_file} (split {split})"
    for index, image in enumerate(images):
        if not _is_id(image.get("id")) or not _safe_name(image.get("file_name")):
            raise DataError(f"images[{index}] {where} needs an integer id and a file_name "
                            "inside the split folder")
        if not (_is_size(image.get("width")) and _is_size(image.get("height"))):
            raise DataError(f"images[{index}] {where} needs a positive width and height")
    if not all(_is_id(c.get("id")) for c in categories):
        raise DataError(f"a category {where} has no integer id")
    image_ids, category_ids = {i["id"] for i in images}, {c["id"] for c in categories}
    for index, ann in enumerate(annotations):
        box = ann.get("bbox")
        if ann.get("image_id") not in image_ids or ann.get("category_id") not in category_ids:
            raise DataError(f"annotations[{index}] {where} names an unknown image or category")
        if not (isinstance(box, list) and len(box) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in box)):
            raise DataError(f"annotations[{index}] {where} has no finite [x, y, w, h] bbox")
    return images


def check_images(image_dir: Path, images: list[dict[str, Any]], split: str,
                 annotation_file: Path) -> None:
    """Every listed image exists as a regular, complete file (module doc, step 2)."""
    for image in images:
        path = image_dir / image["file_name"]
        try:
            info = os.stat(path)
        except OSError:
            raise DataError(f"image {path} listed in {annotation_file} is missing",
                            hint=f"split {split}: {LAYOUT}") from None
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"image {path} (split {split}) is not a regular file")
        if info.st_size == 0:
            raise DataError(f"truncated image {path} (split {split}): the file is empty")
        problem = _truncation(path, info.st_size)
        if problem:
            raise DataError(f"truncated image {path} (split {split}): {problem}",
                            hint="re-download or re-extract it, or drop it from the annotations")


def _truncation(path: Path, size: int) -> str | None:
    """Why a JPEG or PNG file is cut short (None: complete, or another format)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            head = os.pread(fd, 8, 0)
            tail = os.pread(fd, TAIL_BYTES, max(0, size - TAIL_BYTES))
        finally:
            os.close(fd)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if head.startswith(JPEG_MAGIC) and JPEG_END not in tail:
        return "no JPEG end marker FFD9"
    if head.startswith(PNG_MAGIC) and PNG_END not in tail:
        return "no PNG IEND chunk"
    return None
