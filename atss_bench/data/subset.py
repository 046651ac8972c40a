"""Write a smaller real COCO in the same layout: a random sample of one split's images.

The new ``annotations/instances_<split>.json`` keeps every top-level field (info, licenses, all
categories) and only the chosen images and their annotations; image files are hard-linked where
the file system allows it, copied otherwise. Images go to a temporary directory renamed into place,
and the annotation file (written last, then renamed) marks the split complete. The source file is
read and validated by ``annotation_file.load_annotation_file`` (file names stay inside the split).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import DataError
from .annotation_file import load_annotation_file
from .coco import coco_split_paths


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_coco_subset(root: str | Path, split: str, num_images: int, out_dir: str | Path, *,
                      seed: int = 0, overwrite: bool = False) -> Path:
    """Sample ``num_images`` images of ``split`` under ``root`` into ``out_dir``; returns out_dir.

    The same ``seed`` picks the same images. An existing ``out_dir/<split>`` is a DataError unless
    ``overwrite``; other splits already in ``out_dir`` are left alone.
    """
    annotation_file, image_dir = coco_split_paths(root, split)
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir == Path(root).expanduser().absolute():
        raise DataError(f"subset output {out_dir} is the source dataset",
                        hint="choose a new directory")
    data = load_annotation_file(annotation_file, split)
    images = data["images"]
    if not 1 <= num_images <= len(images):
        raise DataError(f"cannot take {num_images} images from {split}: it has {len(images)}",
                        hint=f"choose --num-images between 1 and {len(images)}")
    split_dir = out_dir / split
    if split_dir.exists() and not overwrite:
        raise DataError(f"{split_dir} already exists", hint="choose another directory or overwrite")

    all_ids = sorted(image["id"] for image in images)
    chosen = set(np.random.default_rng(seed).choice(all_ids, num_images, replace=False).tolist())
    subset = {**data,
              "images": [image for image in images if image["id"] in chosen],
              "annotations": [a for a in data.get("annotations", []) if a["image_id"] in chosen]}

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{split}.tmp-", dir=out_dir))
    try:
        for image in subset["images"]:
            source = image_dir / image["file_name"]
            if not source.is_file():
                raise DataError(f"image {source} listed in {annotation_file.name} is missing")
            (tmp_dir / image["file_name"]).parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(source, tmp_dir / image["file_name"])
        os.chmod(tmp_dir, 0o755)
        target = out_dir / "annotations" / f"instances_{split}.json"
        if split_dir.exists():  # overwrite: drop the old annotations first, so a run killed
            target.unlink(missing_ok=True)  # from here on leaves no complete-looking split
            shutil.rmtree(split_dir)
        os.rename(tmp_dir, split_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)

    target.parent.mkdir(exist_ok=True)
    tmp_json = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp_json.write_text(json.dumps(subset, sort_keys=True, separators=(",", ":")) + "\n")
    os.replace(tmp_json, target)
    return out_dir
