"""Reading and validating one COCO annotation file: the one place that parses ``instances_*.json``.

Anything read from a dataset is untrusted data. ``load_annotation_file`` returns the parsed dict
only when the file is:

1. a regular file (never opened otherwise: a FIFO would block; opened non-blocking and checked
   again once open, in case it was swapped) of at most ``MAX_BYTES`` (2 GiB; full COCO train is
   0.45 GiB);
2. UTF-8 JSON (a leading BOM is allowed) nested at most ``MAX_DEPTH`` levels (COCO needs 5:
   object, annotations, annotation, segmentation, polygon; a deeper document would break
   ``copy.deepcopy`` in evaluation);
3. a COCO object whose fields have exact types (a JSON ``true`` is not the number 1):

   - ``images``: objects with a unique ``id`` (int, 0 <= id < 2**63), a ``file_name`` relative to
     the split folder (not absolute, no ``..``, no NUL; may be absent only with
     ``require_file_names=False``) and a finite ``width`` and ``height`` in (0, ``MAX_SIDE``];
   - ``categories``: objects with a unique int ``id``; ``name``, if present, a string;
   - ``annotations`` (may be absent, as in COCO's image-info files): objects with an int ``id``,
     an ``image_id`` and ``category_id`` listed above, a ``bbox`` of 4 finite numbers
     ``[x, y, w, h]`` with w, h >= 0, an ``area`` (if present) finite and >= 0 and an
     ``iscrowd`` (if present) 0 or 1.

   Empty lists are valid (a split without objects) unless ``require_annotations``: then images,
   categories and annotations must all be non-empty (a val split without annotations cannot be
   evaluated). Other fields (segmentation, info, licenses, ...) are kept as they are.

Anything else is one ``DataError`` naming the file, and the split when one is given. The checks
add about 40% to ``json.loads`` (measured on coco-tiny scaled up 30x).
``annotation_area`` is the one rule for an annotation without ``area``: its box area w * h.
"""
from __future__ import annotations

import json
import math
import os
import stat
from itertools import compress
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from atss_bench.errors import DataError

MAX_BYTES = 2 * 1024**3
MAX_DEPTH = 32
MAX_ID = 2**63 - 1  # ids must fit int64 (numpy, torch)
MAX_SIDE = 2**31 - 1  # image width / height in pixels
LAYOUT = "expected <root>/annotations/instances_<split>.json and <root>/<split>/<file_name>"
_NUMBER = (int, float)
_IS_CONTAINER = frozenset((dict, list)).__contains__
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number",
               float: "a number", bool: "a boolean", type(None): "null"}


def load_annotation_file(path: str | Path, split: str | None = None, *,
                         require_annotations: bool = False,
                         require_file_names: bool = True) -> dict[str, Any]:
    """The parsed, validated annotation dict of ``path`` (module doc); DataError otherwise.
    ``require_file_names=False``: for readers of boxes only (statistics), an image may lack a
    ``file_name`` (one that is given must still be safe). An annotation without ``area`` gets
    its box area (``annotation_area``): COCOeval reads it, so a val split of boxes alone would
    otherwise fail only at the end of training."""
    path = Path(path)
    data = read_annotation_json(path, split)
    validate_annotations(data, path, split, require_annotations=require_annotations,
                         require_file_names=require_file_names)
    for annotation in data.get("annotations") or ():
        if "area" not in annotation:
            annotation["area"] = annotation_area(annotation)
    return data


def annotation_area(annotation: Mapping[str, Any]) -> float:
    """The annotation's ``area``, or its box area w * h when the file gives none."""
    area = annotation.get("area")
    if area is None:
        return float(annotation["bbox"][2]) * float(annotation["bbox"][3])
    return float(area)


def read_annotation_json(path: Path, split: str | None = None) -> Any:
    """The parsed JSON of an annotation file (steps 1 and 2 of the module doc)."""
    raw = _read_regular_file(path, split)
    not_coco = f"{_prefix(split)}{path} is not a COCO annotation file"
    if not raw:
        raise DataError(f"{not_coco}: the file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{not_coco}: invalid UTF-8 at byte {exc.start}") from None
    del raw
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{not_coco}: invalid JSON ({exc.msg} at line {exc.lineno} "
                        f"column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise DataError(f"{not_coco}: invalid JSON ({' '.join(str(exc).split())[:120]})") from None
    except RecursionError:
        raise DataError(f"{not_coco}: nested too deeply") from None
    if _deeper_than(data, MAX_DEPTH):
        raise DataError(f"{not_coco}: nested more than {MAX_DEPTH} levels deep")
    return data


def _read_regular_file(path: Path, split: str | None) -> bytes:
    prefix = _prefix(split)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise DataError(f"{prefix}annotation file {path} is not a regular file")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        what = f"split {split} has no annotation file: " if split else "annotation file "
        raise DataError(f"{what}{path} not found", hint=LAYOUT) from None
    except OSError as exc:
        raise DataError(f"{prefix}cannot read annotation file {path} "
                        f"({exc.strerror or type(exc).__name__})") from None
    too_large = f"{prefix}annotation file {path} is larger than the {MAX_BYTES} bytes allowed"
    try:
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise DataError(f"{prefix}annotation file {path} is not a regular file")
            if info.st_size > MAX_BYTES:
                raise DataError(too_large)
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise DataError(f"{prefix}cannot read annotation file {path} "
                        f"({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_BYTES:  # grew since fstat
        raise DataError(too_large)
    return raw


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than ``limit`` levels: level by level, each node's children
    filtered at C speed (a polygon's numbers are never looped over in Python)."""
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        next_level: list[Any] = []
        for node in level:
            children = node.values() if type(node) is dict else node
            next_level.extend(compress(children, map(_IS_CONTAINER, map(type, children))))
        level = next_level
    return False


def validate_annotations(data: Any, path: Path, split: str | None = None, *,
                         require_annotations: bool = False,
                         require_file_names: bool = True) -> None:
    """Structure and types of a parsed annotation file (step 3 of the module doc)."""
    if type(data) is not dict:
        raise DataError(f"{_prefix(split)}{path} is not a COCO annotation file: its top level is "
                        f"{_JSON_TYPES.get(type(data), 'not an object')}, not an object")
    images = _entries(data, "images", path, split, require_annotations)
    categories = _entries(data, "categories", path, split, require_annotations)
    annotations = _entries(data, "annotations", path, split, require_annotations,
                           optional=not require_annotations)
    where = _where(path, split)
    image_ids = _check_images(images, where, require_file_names)
    category_ids = _check_categories(categories, where)
    _check_annotations(annotations, image_ids, category_ids, where)


def _prefix(split: str | None) -> str:
    return f"split {split}: " if split else ""


def _where(path: Path, split: str | None) -> str:
    return f"in {path} (split {split})" if split else f"in {path}"


def _entries(data: dict[str, Any], key: str, path: Path, split: str | None, required: bool,
             optional: bool = False) -> list[dict[str, Any]]:
    if key not in data and optional:
        return []
    entries = data.get(key)
    if key not in data or (required and entries == []):
        raise DataError(f"split {split} has no {key} in {path}" if split
                        else f"no {key} in {path}",
                        hint="every split needs images, annotations and categories (a val split "
                             "without annotations cannot be evaluated)" if required else None)
    where = _where(path, split)
    if type(entries) is not list:
        raise DataError(f"{key} {where} is {_JSON_TYPES.get(type(entries))}, not a list")
    for index, entry in enumerate(entries):
        if type(entry) is not dict:
            raise DataError(f"{key}[{index}] {where} is not an object")
    return entries


def _is_id(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_ID


def _is_finite(value: Any) -> bool:
    return type(value) in _NUMBER and math.isfinite(value)


def _is_size(value: Any) -> bool:
    return _is_finite(value) and 0 < value <= MAX_SIDE


def _safe_name(name: Any) -> bool:
    """A relative path inside the split folder: no absolute path, no ``..``, no NUL."""
    if type(name) is not str or not name or "\x00" in name:
        return False
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def _check_images(images: list[dict[str, Any]], where: str, require_file_names: bool
                  ) -> set[int]:
    ids: set[int] = set()
    for index, image in enumerate(images):
        name_ok = ("file_name" not in image and not require_file_names
                   or _safe_name(image.get("file_name")))
        if not _is_id(image.get("id")) or not name_ok:
            raise DataError(f"images[{index}] {where} needs an integer id and a file_name "
                            "inside the split folder")
        if not (_is_size(image.get("width")) and _is_size(image.get("height"))):
            raise DataError(f"images[{index}] {where} needs a positive width and height")
        if image["id"] in ids:
            raise DataError(f"images[{index}] {where} repeats image id {image['id']}")
        ids.add(image["id"])
    return ids


def _check_categories(categories: list[dict[str, Any]], where: str) -> set[int]:
    ids: set[int] = set()
    for index, category in enumerate(categories):
        if not _is_id(category.get("id")):
            raise DataError(f"categories[{index}] {where} has no integer id")
        if "name" in category and type(category["name"]) is not str:
            raise DataError(f"categories[{index}] {where} has a name that is not a string")
        if category["id"] in ids:
            raise DataError(f"categories[{index}] {where} repeats category id {category['id']}")
        ids.add(category["id"])
    return ids


def _check_annotations(annotations: list[dict[str, Any]], image_ids: set[int],
                       category_ids: set[int], where: str) -> None:
    for index, ann in enumerate(annotations):
        problem = _annotation_problem(ann, image_ids, category_ids)
        if problem:
            raise DataError(f"annotations[{index}] {where} {problem}")


def _annotation_problem(ann: dict[str, Any], image_ids: set[int], category_ids: set[int]
                        ) -> str | None:
    image_id, category_id = ann.get("image_id"), ann.get("category_id")
    if type(image_id) is not int or image_id not in image_ids \
            or type(category_id) is not int or category_id not in category_ids:
        return "names an unknown image or category"
    if not _is_id(ann.get("id")):
        return "has no integer id"
    box = ann.get("bbox")
    if not (type(box) is list and len(box) == 4 and all(map(_is_finite, box))):
        return "has no finite [x, y, w, h] bbox"
    if box[2] < 0 or box[3] < 0:
        return "has a bbox with a negative width or height"
    if "area" in ann and not (_is_finite(ann["area"]) and ann["area"] >= 0):
        return "has an area that is not a finite number >= 0"
    if "iscrowd" in ann and not (type(ann["iscrowd"]) is int and ann["iscrowd"] in (0, 1)):
        return "has an iscrowd that is not 0 or 1"
    return None
