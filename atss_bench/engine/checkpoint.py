"""Atomic, checksummed training checkpoints and RNG-state capture.

File format (``ckpt_<iteration:08d>.pt``)::

    b"ATSSCKPT1\\n" + sha256(payload).hexdigest() + b"\\n" + payload

where ``payload`` is a ``torch.save`` of the state dict. A file is written to a temporary name in
the same folder, fsync'ed, renamed over the final name (``os.replace``, atomic on POSIX) and the
folder is fsync'ed, so a run killed at any moment leaves either the old file or the complete new
one. On load the checksum is verified *before* unpickling anything: a truncated or garbled file
is reported and skipped (the previous checkpoint is used instead), never loaded. The last
``keep`` (2) checkpoints are kept.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atss_bench.errors import TrainingError

log = logging.getLogger(__name__)

MAGIC = b"ATSSCKPT1\n"
_DIGEST_LEN = 64
_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


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
    """Write ``state`` as the checkpoint of ``iteration`` and prune all but the newest ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    path = checkpoint_path(directory, iteration)
    write_atomic(path, MAGIC + digest + b"\n" + payload)
    for _, old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in directory.glob(".ckpt_*.tmp.*"):  # left by killed runs
        if not stale.name.endswith(f".tmp.{os.getpid()}"):
            stale.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify the checksum, then unpickle (``weights_only``). Raises ``TrainingError`` when the
    file is truncated, garbled or not a checkpoint."""
    data = Path(path).read_bytes()
    header_len = len(MAGIC) + _DIGEST_LEN + 1
    if len(data) < header_len or not data.startswith(MAGIC) or data[header_len - 1:header_len] != b"\n":
        raise TrainingError(f"{path}: not an atss-bench checkpoint (bad header)")
    digest = data[len(MAGIC):len(MAGIC) + _DIGEST_LEN].decode("ascii", errors="replace")
    payload = memoryview(data)[header_len:]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise TrainingError(f"{path}: checksum mismatch (truncated or corrupt checkpoint)")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as exc:  # checksum ok but unreadable: a format from another version
        raise TrainingError(f"{path}: unreadable checkpoint: {exc}") from exc


def load_latest_checkpoint(
    directory: Path, map_location: str | torch.device = "cpu",
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that passes its checksum, or None. Corrupt files
    are logged and skipped, newest first."""
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
