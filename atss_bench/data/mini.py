"""Deterministic synthetic mini-COCO: small images of textured shapes in the standard COCO layout.

    <root>/annotations/instances_train2017.json   <root>/train2017/<12-digit id>.jpg
    <root>/annotations/instances_val2017.json     <root>/val2017/<12-digit id>.jpg
    <root>/mini_coco.json                         the generator version and parameters

Category = shape (disc, square, triangle, ring, cross, star, crescent, arrow), never colour, with
non-contiguous COCO ids. Each image is drawn from its own random stream ``(seed, split, index)``,
JSON is written with sorted keys and no timestamps, and JPEG settings are fixed, so the same
parameters give byte-identical files. A dataset is built in a temporary sibling directory and
renamed into place, so a killed run never leaves a complete-looking half dataset.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import numpy as np
from PIL import Image

from ..errors import DataError
from .cache import default_cache_dir
from .scene import compose_image
from .shapes import SHAPES

# Bump whenever the generator's output bytes change (drawing, JPEG settings, JSON layout): it is
# part of the generated folder's name and of the dataset fingerprint (data.identity), so runs made
# on the old images are never reused or resumed as if they were made on the new ones.
GENERATOR_VERSION = 1
MARKER = "mini_coco.json"
SPLITS = ("train2017", "val2017")
# Deliberately non-contiguous, like COCO's 1..90 with gaps, so label mapping bugs show up.
CATEGORY_IDS = (1, 3, 7, 12, 18, 27, 44, 62)
# Split-specific offsets keep image and annotation ids unique across splits (as in COCO).
_ID_BASE = {"train2017": 0, "val2017": 1_000_000}


@dataclass(frozen=True)
class MiniCocoSpec:
    """Everything that determines a generated dataset (its cache key)."""

    seed: int = 0
    num_train: int = 600
    num_val: int = 150
    short_side: tuple[int, int] = (224, 288)  # shorter image side, drawn uniformly (inclusive)
    num_categories: int = 8
    mean_objects: float = 7.5  # objects per non-empty image (COCO: 7.3), long-tailed
    max_objects: int = 20
    min_box_size: int = 4  # pixels, shorter box side
    # Objects coloured around their category's hue (False: random colours, only shape tells).
    category_hue: bool = True
    empty_fraction: float = 0.02  # images without objects (COCO ~1%); at least one per split
    crowd_fraction: float = 0.08  # images with one iscrowd=1 region (COCO ~8%); at least one
    grayscale_fraction: float = 0.02  # images stored as 1-channel JPEG (COCO ~1%); at least one
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        lo, hi = self.short_side
        checks = {
            "seed must be >= 0": self.seed >= 0,
            "num_train and num_val must be >= 1": min(self.num_train, self.num_val) >= 1,
            "short_side must be (lo, hi) with 32 <= lo <= hi": 32 <= lo <= hi,
            f"num_categories must be in 1..{len(SHAPES)}": 1 <= self.num_categories <= len(SHAPES),
            "mean_objects must be >= 1 and max_objects >= 1": min(self.mean_objects,
                                                                  self.max_objects) >= 1,
            "fractions must be in [0, 1]": all(0 <= f <= 1 for f in (
                self.empty_fraction, self.crowd_fraction, self.grayscale_fraction)),
        }
        for message, ok in checks.items():
            if not ok:
                raise DataError(f"invalid mini-COCO parameters: {message}", hint=str(self))

    @classmethod
    def from_params(cls, **params: Any) -> MiniCocoSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise DataError(f"unknown mini-COCO parameter(s): {', '.join(unknown)}",
                            hint=f"known: {', '.join(sorted(names))}")
        if "short_side" in params:
            params["short_side"] = tuple(params["short_side"])
        return cls(**params)

    def to_json(self) -> dict[str, Any]:
        """The marker content, as JSON gives it back (tuples become lists)."""
        payload = {"generator_version": GENERATOR_VERSION, "spec": dataclasses.asdict(self)}
        return json.loads(json.dumps(payload))

    def digest(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _count(fraction: float, total: int) -> int:
    return 0 if fraction <= 0 else min(total, max(1, round(fraction * total)))


def _image_size(rng: np.random.Generator, spec: MiniCocoSpec) -> tuple[int, int]:
    """(width, height): COCO-like aspects, 4:3 most often, about a quarter portrait."""
    short = int(rng.integers(spec.short_side[0], spec.short_side[1] + 1))
    aspect = float(rng.choice([4 / 3, 3 / 2, 1.0, 16 / 9], p=[0.6, 0.2, 0.1, 0.1]))
    long = int(round(short * aspect))
    return (short, long) if rng.random() < 0.25 else (long, short)


def _num_objects(rng: np.random.Generator, spec: MiniCocoSpec) -> int:
    """1 + negative binomial: mean ``mean_objects``, median below it, long tail, capped."""
    extra = spec.mean_objects - 1.0
    r = 1.2
    return min(spec.max_objects, 1 + int(rng.negative_binomial(r, r / (r + extra))))


def build_split(spec: MiniCocoSpec, split: str, out_dir: Path) -> dict[str, Any]:
    """Write the images of one split under ``out_dir / split``; return its COCO dict."""
    total = spec.num_train if split == "train2017" else spec.num_val
    split_code = SPLITS.index(split)
    # Which images are empty / crowded / grayscale: a stream apart from the per-image ones.
    order = np.random.default_rng([spec.seed, split_code, total, 1]).permutation(total)
    num_empty, num_crowd = _count(spec.empty_fraction, total), _count(spec.crowd_fraction, total)
    empty = set(order[:num_empty].tolist())
    crowd = set(order[num_empty:num_empty + num_crowd].tolist())
    gray = set(order[::-1][:_count(spec.grayscale_fraction, total)].tolist())
    categories = [(cid, name) for cid, name in zip(CATEGORY_IDS, SHAPES)][:spec.num_categories]
    (out_dir / split).mkdir(parents=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(total):
        rng = np.random.default_rng([spec.seed, split_code, index])
        width, height = _image_size(rng, spec)
        num_objects = 0 if index in empty else _num_objects(rng, spec)
        pixels, anns = compose_image(rng, width, height, categories=categories,
                                     num_objects=num_objects,
                                     with_crowd=index in crowd and index not in empty,
                                     min_box_size=spec.min_box_size,
                                     category_hue=spec.category_hue)
        image_id = _ID_BASE[split] + 2 * index + 1  # non-contiguous image ids too
        file_name = f"{image_id:012d}.jpg"
        picture = Image.fromarray(pixels, "RGB")
        if index in gray:
            picture = picture.convert("L")
        picture.save(out_dir / split / file_name, format="JPEG", quality=spec.jpeg_quality)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height,
                       "license": 0})
        for ann in anns:
            annotations.append({**ann, "id": _ID_BASE[split] + len(annotations) + 1,
                                "image_id": image_id})
    return {
        "info": {"description": "atss-bench synthetic mini-COCO", "version": str(GENERATOR_VERSION),
                 "year": 2017},
        "licenses": [{"id": 0, "name": "CC0 (synthetic)", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "shape"}
                       for cid, name in categories],
    }


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, sort_keys=True, separators=(",", ":")) + "\n")


def read_marker(root: Path) -> dict[str, Any] | None:
    """The parameters a complete generated dataset was built with; None if ``root`` is not one."""
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def generate_mini_coco(out_dir: str | Path, *, seed: int = 0, num_train: int = 600,
                       num_val: int = 150, overwrite: bool = False, **params: Any) -> Path:
    """Generate mini-COCO into ``out_dir`` (created) and return it.

    ``params`` are the other :class:`MiniCocoSpec` fields (``short_side``, ``mean_objects``, ...).
    If ``out_dir`` already holds a dataset generated with the same parameters it is returned
    untouched; any other existing ``out_dir`` is a DataError unless ``overwrite``.
    """
    spec = MiniCocoSpec.from_params(seed=seed, num_train=num_train, num_val=num_val, **params)
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists():
        if read_marker(out_dir) == spec.to_json():
            return out_dir
        if not overwrite:
            raise DataError(f"{out_dir} already exists and is not this mini-COCO",
                            hint="choose another directory or pass overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for split in SPLITS:
            _write_json(tmp / "annotations" / f"instances_{split}.json",
                        build_split(spec, split, tmp))
        _write_json(tmp / MARKER, spec.to_json())  # written last: marks the dataset complete
        os.chmod(tmp, 0o755)
        if read_marker(out_dir) == spec.to_json():  # a concurrent run finished first: use it
            return out_dir
        if out_dir.exists():  # only reached with overwrite=True
            shutil.rmtree(out_dir)
        try:
            os.rename(tmp, out_dir)
        except OSError:  # lost a race: another process renamed its copy first
            if read_marker(out_dir) != spec.to_json():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mini_coco_dir(cache_dir: str | Path | None = None, **params: Any) -> Path:
    """Where :func:`ensure_mini_coco` keeps the dataset for ``params`` (nothing is generated)."""
    spec = MiniCocoSpec.from_params(**params)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return cache / f"mini-coco-{spec.digest()}"


def ensure_mini_coco(cache_dir: str | Path | None = None, **params: Any) -> Path:
    """The cached mini-COCO for ``params`` (MiniCocoSpec fields), generated on first use.

    Lives in ``<cache_dir>/mini-coco-<hash of params>``. Safe when several processes ask at once:
    a lock file serialises generation, and the atomic rename in :func:`generate_mini_coco` keeps it
    correct even where locks are not honoured (the loser uses the winner's copy).
    """
    spec = MiniCocoSpec.from_params(**params)
    root = mini_coco_dir(cache_dir, **params)
    if read_marker(root) == spec.to_json():
        return root.absolute()
    cache = root.parent
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / f"mini-coco-{spec.digest()}.lock"):
        return generate_mini_coco(root, overwrite=True, **dataclasses.asdict(spec))
