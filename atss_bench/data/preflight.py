"""Bad data fails before training, with a reason that names the split or the file.

The engine calls ``preflight_dataset`` after resolving the dataset and before building the model.
Per split (train, val):

1. ``annotations/instances_<split>.json`` is a valid COCO annotation file
   (``annotation_file.load_annotation_file``: regular, bounded, well-typed entries) with non-empty
   images, annotations and categories (``require_annotations``: a val split without annotations
   would otherwise train for hours, then report a non-finite AP).
2. Every listed image is a regular file (never opened otherwise: a FIFO would block), not empty,
   and, by a tail read only, complete: a JPEG ends with its EOI marker ``FF D9`` and a PNG has its
   ``IEND`` chunk. A truncated image is ``DataError("truncated image <path> ...")``.

Full COCO takes a few seconds (one stat, one open and two small reads per image); a dataset that
passed is remembered under its fingerprint and realpath in ``$ATSS_BENCH_CACHE/dataset-checks.json``
and not checked again. Decode errors that only a full decode finds are reported by
``coco.CocoDetection`` with the file's name.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Mapping, Sequence

from atss_bench.data.annotation_file import LAYOUT, load_annotation_file, validate_annotations
from atss_bench.data.cache import JsonCache, default_cache_dir
from atss_bench.errors import DataError

CHECK_CACHE = "dataset-checks.json"
TAIL_BYTES = 1024  # JPEG EOI / PNG IEND must lie this close to the end (trailing padding allowed)
JPEG_MAGIC, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
PNG_MAGIC, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"


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
            dataset = load_annotation_file(annotation_file, split, require_annotations=True)
        else:
            validate_annotations(dataset, annotation_file, split, require_annotations=True)
        check_images(root / split, dataset["images"], split, annotation_file)
    cache.put(key, True)
    cache.save()


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
