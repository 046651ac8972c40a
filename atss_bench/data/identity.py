"""Dataset identity: what a run was trained and evaluated on, by content, never by path.

    kind "mini"  the generator's spec: ``mini.GENERATOR_VERSION`` + the ``data.mini`` params
                 (+ the generator's fixed defaults); no file is read.
    kind "coco"  per split (train, then val): sha256 of ``annotations/instances_<split>.json``
                 and the number of files in ``<root>/<split>/``.

``fingerprint`` = the first 16 hex digits of sha256 over that content (canonical JSON). The same
data copied or moved to another path keeps its fingerprint; one changed annotation, or an image
added or removed, changes it. ``name`` and ``root`` say where it was found, for people only.

Hashing full COCO (a 450 MB train annotation file, 118k images) takes seconds, so results are
cached in ``$ATSS_BENCH_CACHE/dataset-hashes.json``: a file's hash under its realpath + size +
mtime_ns, a folder's file count under its realpath + mtime_ns (adding or removing a file changes
a folder's mtime). Afterwards an identity costs a few ``stat`` calls. The cache is only a hint:
a corrupt, foreign or unwritable cache is ignored (and rewritten when possible).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atss_bench.config import DataConfig
from atss_bench.data.cache import JsonCache, default_cache_dir
from atss_bench.data.roots import resolve_dataset_root
from atss_bench.errors import DataError

KINDS = ("coco", "mini")
FINGERPRINT_CHARS = 16
HASH_CACHE = "dataset-hashes.json"
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_NAME_CHARS = 120
_ROOT_CHARS = 4096


def _one_line(text: str, limit: int) -> str:
    """Control characters (a newline in a folder name) out, length bounded: safe in a message."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


@dataclass(frozen=True)
class DatasetIdentity:
    """A dataset by content. ``splits``: ``{split: {"images": n, "annotations_sha256": hex}}``
    (``annotations_sha256`` is None for mini: nothing is read)."""

    kind: str
    fingerprint: str
    name: str
    root: str | None = None
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)

    def same_data(self, other: DatasetIdentity | None) -> bool:
        return other is not None and other.fingerprint == self.fingerprint

    def describe(self) -> str:
        """``'coco-tiny' (fingerprint 0123456789abcdef, at /data/coco-tiny)``, one line."""
        where = f", at {_one_line(self.root, 300)}" if self.root else ""
        return f"'{_one_line(self.name, _NAME_CHARS)}' (fingerprint {self.fingerprint}{where})"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "fingerprint": self.fingerprint, "name": self.name,
                "root": self.root, "splits": {k: dict(v) for k, v in self.splits.items()}}

    @classmethod
    def from_json(cls, data: Any) -> DatasetIdentity | None:
        """The identity recorded in a store file; None when absent or malformed (never raises)."""
        if not isinstance(data, dict):
            return None
        kind, fingerprint, name = data.get("kind"), data.get("fingerprint"), data.get("name")
        root, splits = data.get("root"), data.get("splits", {})
        if (kind not in KINDS or not isinstance(fingerprint, str) or not _HEX16.match(fingerprint)
                or not isinstance(name, str) or not (root is None or isinstance(root, str))):
            return None
        parsed = _parse_splits(splits)
        if parsed is None:
            return None
        return cls(kind, fingerprint, _one_line(name, _NAME_CHARS),
                   None if root is None else _one_line(root, _ROOT_CHARS), parsed)


def _parse_splits(splits: Any) -> dict[str, dict[str, Any]] | None:
    if not isinstance(splits, dict) or len(splits) > 16:
        return None
    out: dict[str, dict[str, Any]] = {}
    for split, info in splits.items():
        if not isinstance(info, dict):
            return None
        images, sha = info.get("images"), info.get("annotations_sha256")
        if not (isinstance(images, int) and not isinstance(images, bool) and images >= 0):
            return None
        if not (sha is None or (isinstance(sha, str) and _HEX64.match(sha))):
            return None
        out[_one_line(str(split), _NAME_CHARS)] = {"images": images, "annotations_sha256": sha}
    return out


def _fingerprint(content: dict[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_CHARS]


def mini_identity(data: DataConfig, root: Path | None = None) -> DatasetIdentity:
    """The generator spec's identity (no file is read; ``root`` is informational)."""
    from atss_bench.data.mini import MiniCocoSpec  # numpy / PIL only when asked for

    spec = MiniCocoSpec.from_params(**data.mini.model_dump())
    splits = {"train2017": {"images": spec.num_train, "annotations_sha256": None},
              "val2017": {"images": spec.num_val, "annotations_sha256": None}}
    return DatasetIdentity("mini", _fingerprint({"kind": "mini", "generator": spec.to_json()}),
                           f"mini-coco seed {spec.seed}", None if root is None else str(root),
                           splits)


def coco_identity(root: Path, splits: list[str], cache_dir: Path | None = None
                  ) -> DatasetIdentity:
    """Annotation hashes and image counts of ``splits`` under ``root``; DataError naming the
    split and file when one is missing or unreadable."""
    cache = JsonCache(_cache_path(cache_dir))
    content: dict[str, dict[str, Any]] = {}
    for split in dict.fromkeys(splits):  # train == val: counted once
        annotation_file = root / "annotations" / f"instances_{split}.json"
        content[split] = {"images": _count_files(root / split, split, cache),
                          "annotations_sha256": _file_sha256(annotation_file, split, cache)}
    cache.save()
    absolute = Path(os.path.abspath(root))
    name = absolute.name or str(absolute)
    return DatasetIdentity("coco", _fingerprint({"kind": "coco", "splits": content}), name,
                           str(absolute), content)


def dataset_identity(data: DataConfig, root: Path, cache_dir: Path | None = None
                     ) -> DatasetIdentity:
    """The identity of ``data`` found at ``root`` (the engine's resolved dataset root)."""
    if data.kind == "mini":
        return mini_identity(data, root)
    return coco_identity(Path(root), [data.train_split, data.val_split], cache_dir)


def resolve_dataset_identity(data: DataConfig, data_root: str | None) -> DatasetIdentity:
    """The identity of the dataset a run of ``data`` would use (root resolved as the engine
    does, ``roots.resolve_dataset_root``); DataError when it cannot be found or read."""
    return dataset_identity(data, resolve_dataset_root(data, data_root))


def _cache_path(cache_dir: Path | None) -> Path:
    return (cache_dir if cache_dir is not None else default_cache_dir()) / HASH_CACHE


def _regular_stat(path: Path, split: str, what: str) -> os.stat_result:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"split {split}: {what} {path} not found",
                        hint="expected <root>/annotations/instances_<split>.json and "
                             "<root>/<split>/; check --data-root / data.root") from None
    except OSError as exc:
        raise DataError(f"split {split}: cannot read {what} {path} ({exc.strerror})") from None
    return info


def _file_sha256(path: Path, split: str, cache: JsonCache) -> str:
    info = _regular_stat(path, split, "annotation file")
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"split {split}: annotation file {path} is not a regular file")
    key = f"sha256|{os.path.realpath(path)}|{info.st_size}|{info.st_mtime_ns}"
    cached = cache.get(key)
    if isinstance(cached, str) and _HEX64.match(cached):
        return cached
    try:
        digest = sha256_of_file(path)
    except OSError as exc:
        raise DataError(f"split {split}: cannot read annotation file {path} "
                        f"({exc.strerror or exc})") from None
    cache.put(key, digest)
    return digest


def sha256_of_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never blocks, even if swapped for a FIFO
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _count_files(folder: Path, split: str, cache: JsonCache) -> int:
    info = _regular_stat(folder, split, "image folder")
    if not stat.S_ISDIR(info.st_mode):
        raise DataError(f"split {split}: image folder {folder} is not a folder")
    key = f"count|{os.path.realpath(folder)}|{info.st_mtime_ns}"
    cached = cache.get(key)
    if isinstance(cached, int) and not isinstance(cached, bool) and cached >= 0:
        return cached
    try:
        with os.scandir(folder) as entries:
            count = sum(1 for e in entries if not e.name.startswith(".") and e.is_file())
    except OSError as exc:
        raise DataError(f"split {split}: cannot list image folder {folder} "
                        f"({exc.strerror or exc})") from None
    cache.put(key, count)
    return count
