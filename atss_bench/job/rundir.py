"""One run's directory on disk: its layout, atomic writes, the run lock and tolerant readers.

    results/runs/<run_id>/
        config.yaml    resolved ExperimentConfig            (written by the run's job)
        meta.json      run_id, recipe, table, row, label, profile, seed, paper metrics, created
        status.json    state, reason, started/finished, host, pid, slurm_job_id, updated
        metrics.json   {"run_id", "metrics": {AP, ...}, "provenance": {...}}  (only on success)
        log.jsonl      training log, one JSON object a line (appended by the engine)
        error.txt      traceback of the last failed attempt
        checkpoints/   the engine's resumable checkpoints
        lock           flock()-ed by the one process working on the run

Every file except log.jsonl is replaced whole (temp file in the same folder, fsync, os.replace),
so a reader sees the old or the new content, never half of it, even if the writer is SIGKILLed.
A run's files are only written by the process holding its ``lock``.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RUNS = "runs"
CONFIG = "config.yaml"
META = "meta.json"
STATUS = "status.json"
METRICS = "metrics.json"
LOG = "log.jsonl"
ERROR = "error.txt"
CHECKPOINTS = "checkpoints"
LOCK = "lock"
TMP_SUFFIX = ".tmp"

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
CANCELLED, TIMED_OUT = "cancelled", "timed-out"  # written by the SLURM layer
STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED, TIMED_OUT)

_LOG_TAIL_BYTES = 8192


def utc_now() -> str:
    """ISO-8601 UTC timestamp with seconds, e.g. ``2026-01-31T12:00:00+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_dir_for(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / RUNS / run_id


def _fsync_dir(directory: Path) -> None:
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step: readers see the old or new file, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=False, allow_nan=True) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when missing, unreadable, corrupt or not an object."""
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_last_log_line(path: Path, keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The last complete JSON object of a log.jsonl having all ``keys`` (a torn line is skipped).

    ``keys=("iter", "max_iter")`` finds the last progress line (the engine ends with an eval line).
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _LOG_TAIL_BYTES))
            tail = handle.read()
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and all(k in data for k in keys):
            return data
    return None


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files left by a writer that died between mkstemp and os.replace."""
    for tmp in run_dir.glob(f".*{TMP_SUFFIX}"):
        with suppress(OSError):
            tmp.unlink()


def complete_metrics(data: dict[str, Any] | None) -> bool:
    """metrics.json is complete: an object with numeric metrics (AP at least) and provenance."""
    if not data:
        return False
    metrics = data.get("metrics")
    return (isinstance(metrics, dict) and isinstance(metrics.get("AP"), (int, float))
            and isinstance(data.get("provenance"), dict))


def read_done_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The stored metrics.json of a finished run: status says done *and* metrics are complete."""
    status = read_json(run_dir / STATUS)
    if not status or status.get("state") != DONE:
        return None
    metrics = read_json(run_dir / METRICS)
    return metrics if complete_metrics(metrics) else None


def write_status(run_dir: Path, state: str, **fields: Any) -> dict[str, Any]:
    """Replace status.json, keeping earlier fields (started, host, ...) unless overridden."""
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}")
    status = read_json(run_dir / STATUS) or {}
    status.update(fields)
    status["state"] = state
    status["updated"] = utc_now()
    atomic_write_json(run_dir / STATUS, status)
    return status


class RunLock:
    """Exclusive ``flock`` on ``run_dir/lock``: one process per run at a time.

    The kernel drops the lock when its process dies (even by SIGKILL), so a lock never goes stale.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = False) -> bool:
        """Take the lock; with ``wait=False`` return False at once if another process holds it."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "RunLock":
        self.acquire(wait=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_is_held(run_dir: Path) -> bool:
    """Whether some process (possibly this one, through another descriptor) holds the run lock."""
    if not (run_dir / LOCK).exists():
        return False
    probe = RunLock(run_dir)
    if probe.acquire(wait=False):
        probe.release()
        return False
    return True
