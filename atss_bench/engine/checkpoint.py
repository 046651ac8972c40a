"""Atomic, checksummed training checkpoints and RNG-state capture.

File format (``ckpt_<iteration:08d>.pt``)::

    b"ATSSCKPT1\\n" + sha256(payload).hexdigest() + b"\\n" + payload

where ``payload`` is a ``torch.save`` of the state dict. A file is written to a temporary name in
the same folder, fsync'ed, renamed over the final name (``os.replace``, atomic on POSIX) and the
folder is fsync'ed, so a run killed at any moment leaves either the old file or the complete new
one.

Reading is safe on a folder anyone could have written to:

- only regular files are read (a symlink, FIFO or device named ``ckpt_*.pt`` is refused without
  being opened for reading, so a FIFO never blocks);
- the checksum is verified *before* unpickling anything: a truncated or garbled file is reported
  and skipped (the previous checkpoint is used instead), never loaded;
- the payload is unpickled with ``torch.load(weights_only=True)``: tensors, containers and plain
  Python values only. Everything the engine saves is such data (state dicts, RNG states as
  tensors / ints / strings / tuples, see ``capture_rng_state``); a file that would build any other
  object (a planted pickle whose ``__reduce__`` runs code) is refused, even with a valid checksum.

Pruning (``save_checkpoint(keep=N)``) never deletes the checkpoint just written and keeps the
newest N *readable* ones counting it (readable: ``load_checkpoint`` succeeds, the same test
resuming uses); older readable ones and corrupt ones (bad header or checksum) are deleted. Files
unreadable for another reason (an I/O error, not a regular file, refused by ``weights_only``) are
skipped: neither counted nor deleted. So after unreadable files with higher iteration numbers
(say ckpt_5000 and ckpt_7500), a restarted run keeps every new checkpoint it writes. Checking
costs one load of each other file kept (N - 1 per save; a full-COCO checkpoint is ~0.3 GB).
"""
from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import random
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atss_bench.errors import TrainingError

log = logging.getLogger(__name__)

MAGIC = b"ATSSCKPT1\n"
_DIGEST_LEN = 64
_HEADER_LEN = len(MAGIC) + _DIGEST_LEN + 1
_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


class CorruptCheckpoint(TrainingError):
    """A regular file with a bad header or checksum: it can never load (safe to delete)."""


def checkpoint_path(directory: Path, iteration: int) -> Path:
    return Path(directory) / f"ckpt_{iteration:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every checkpoint-named file, oldest first (validity unchecked)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: temp file in the same folder, fsync, ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_checkpoint(directory: Path, iteration: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``iteration``; keep it and the newest ``keep`` - 1
    other readable checkpoints (see the module docstring)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    path = checkpoint_path(directory, iteration)
    write_atomic(path, MAGIC + digest + b"\n" + payload)
    prune_checkpoints(directory, keep, newest=path)
    for stale in directory.glob(".ckpt_*.tmp.*"):  # left by killed runs
        if not stale.name.endswith(f".tmp.{os.getpid()}"):
            stale.unlink(missing_ok=True)
    return path


def prune_checkpoints(directory: Path, keep: int, newest: Path) -> list[Path]:
    """Delete all but ``newest`` and the newest ``keep`` - 1 other readable checkpoints, and
    every corrupt one; skip (keep) files unreadable for another reason. Returns the deleted."""
    kept, deleted = 1, []
    for iteration, path in reversed(list_checkpoints(directory)):
        if path == newest:
            continue
        if kept < keep:
            try:
                load_checkpoint(path)
            except CorruptCheckpoint as exc:
                log.warning("deleting corrupt checkpoint of iteration %d: %s", iteration, exc)
            except (TrainingError, OSError) as exc:
                log.warning("skipping checkpoint of iteration %d: %s", iteration, exc)
                continue
            else:
                kept += 1
                continue
        elif not _is_regular_file(path):
            continue  # not written by us: neither counted nor deleted
        path.unlink(missing_ok=True)
        deleted.append(path)
    return deleted


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_regular_file(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a symlink, FIFO, device or folder)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TrainingError(f"{path}: a symbolic link, not a checkpoint file") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise TrainingError(f"{path}: not a regular file")
        return handle.read()


def _read_payload(path: Path) -> memoryview:
    """The verified payload of a checkpoint file. Raises ``CorruptCheckpoint`` (bad header or
    checksum), ``TrainingError`` (not a regular file) or ``OSError``; unpickles nothing."""
    data = _read_regular_file(Path(path))
    if (len(data) < _HEADER_LEN or not data.startswith(MAGIC)
            or data[_HEADER_LEN - 1:_HEADER_LEN] != b"\n"):
        raise CorruptCheckpoint(f"{path}: not an atss-bench checkpoint (bad header)")
    digest = data[len(MAGIC):len(MAGIC) + _DIGEST_LEN].decode("ascii", errors="replace")
    payload = memoryview(data)[_HEADER_LEN:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CorruptCheckpoint(f"{path}: checksum mismatch (truncated or corrupt checkpoint)")
    return payload


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify the checksum, then unpickle with ``weights_only=True`` (data only, never code).
    Raises ``TrainingError`` when the file is truncated, garbled, not a checkpoint, not a regular
    file, or holds anything but tensors and plain values."""
    payload = _read_payload(path)
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # checksum ok but refused: foreign objects, another format
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TrainingError(f"{path}: unreadable checkpoint: {first_line}") from None
    if not isinstance(state, dict):
        raise TrainingError(f"{path}: unreadable checkpoint: a {type(state).__name__}, not a dict")
    return state


def load_latest_checkpoint(
    directory: Path, map_location: str | torch.device = "cpu",
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that loads, or None. Unreadable files (corrupt,
    refused by ``weights_only``, not regular files) are logged and skipped, newest first."""
    for iteration, path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path, map_location)
        except (TrainingError, OSError) as exc:
            log.warning("skipping checkpoint of iteration %d: %s", iteration, exc)
    return None


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG, as tensors and plain Python values (loadable with ``weights_only``)."""
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.random.get_rng_state(),
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                  "cached_gaussian": float(np_cached)},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
