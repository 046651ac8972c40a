"""One run's directory on disk: its layout, atomic writes, the run lock and tolerant readers.

    results/runs/<run_id>/
        config.yaml    resolved ExperimentConfig            (written by the run's job)
        meta.json      run_id, recipe, table, row, label, profile, seed, paper metrics, created
        status.json    state, reason, started/finished, host, pid, slurm_job_id, updated
        metrics.json   {"run_id", "metrics": {AP, ...}, "provenance": {...}}  (only on success)
        log.jsonl      training log, one JSON object a line (appended by the engine)
        error.txt      traceback of the last failed attempt
        checkpoints/   the engine's resumable checkpoints
        tensorboard/   the log as TensorBoard event files (when tensorboard is installed)
        lock           flock()-ed by the one process working on the run

Every file except log.jsonl is replaced whole (temp file in the same folder, fsync, os.replace),
so a reader sees the old or the new content, never half of it, even if the writer is SIGKILLed.
A run's files are only written by the process holding its ``lock``. Files honour the umask
(0644 under umask 022), so lab mates sharing a results folder can read each other's runs.

Readers treat the folder as untrusted data (``job.safeio``): regular files only, no symlinks,
bounded sizes; ``status_problem`` says whether a status.json can be trusted as a record.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import re
import tempfile
from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from atss_bench.errors import StoreError
from atss_bench.job.safeio import UnsafeFile, load_json_object, read_bytes

RUNS = "runs"
CONFIG = "config.yaml"
META = "meta.json"
STATUS = "status.json"
METRICS = "metrics.json"
LOG = "log.jsonl"
ERROR = "error.txt"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"  # engine.tensorboard.TENSORBOARD_DIR
LOCK = "lock"
TMP_SUFFIX = ".tmp"

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
CANCELLED, TIMED_OUT = "cancelled", "timed-out"  # written by the SLURM layer
STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED, TIMED_OUT)
CLUSTERS = ("slurm", "local", "debug")
# a scheduler job id as submitit records it: "44", "44_1" (array task), "DEBUG_140..." (debug)
JOB_ID = re.compile(r"^([0-9]{1,20}(_[0-9]{1,10})?|DEBUG_[0-9]{1,30})$")
MAX_TEXT_CHARS = 4096  # a label, row id, reason, ... longer than this is not ours

_LOG_TAIL_BYTES = 8192
_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_PROBE_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
                | getattr(os, "O_CLOEXEC", 0))


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


def _umask_from_proc() -> int | None:
    """This process's umask from /proc (Linux >= 4.7): read without changing it."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


@functools.cache
def _umask_once() -> int:
    """Elsewhere: set and restore it once (a moment another thread could see 0o022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def current_umask() -> int:
    proc = _umask_from_proc()
    return proc if proc is not None else _umask_once()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step: readers see the old or new file, never a mix.
    The file gets the mode a plain ``open()`` would give it (0o666 less the umask)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600: lab mates could not read
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
    """A JSON object from ``path``; None when missing, unreadable, corrupt, not an object, not a
    regular file or over ``safeio.MAX_JSON_BYTES`` (``safeio.load_json_object`` says why)."""
    try:
        return load_json_object(path)
    except UnsafeFile:
        return None


def read_last_log_line(path: Path, keys: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """The last complete JSON object of a log.jsonl having all ``keys`` (a torn line is skipped).

    ``keys=("iter", "max_iter")`` finds the last progress line (the engine ends with an eval line).
    """
    try:
        tail = read_bytes(path, _LOG_TAIL_BYTES, tail=True)
    except (OSError, UnsafeFile):
        return None
    for line in reversed(tail.splitlines()):
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(data, dict) and all(k in data for k in keys):
            return data
    return None


def _text_ok(value: Any) -> bool:
    return value is None or (isinstance(value, str) and len(value) <= MAX_TEXT_CHARS)


def _int_ok(value: Any, limit: int = 2**63) -> bool:
    return value is None or (type(value) is int and 0 <= value < limit)


def status_problem(status: Mapping[str, Any]) -> str | None:
    """Why a status.json cannot be trusted as a record (field types, sizes); None when it can.
    An unknown ``state`` word is not a problem here (readers show such a run as failed)."""
    state = status.get("state")
    if not isinstance(state, str) or len(state) > 64:
        return "status.json: state is not a short text"
    for key in ("reason", "started", "finished", "updated", "queued", "host", "slurm_job_id",
                "retrain_failed"):
        if not _text_ok(status.get(key)):
            return f"status.json: {key} is not a text of at most {MAX_TEXT_CHARS} characters"
    for key in ("pid", "attempt"):
        if not _int_ok(status.get(key), 2**31):
            return f"status.json: {key} is not an integer in [0, 2**31)"
    if status.get("wall_time") is not None and not finite_number(status["wall_time"]):
        return "status.json: wall_time is not a finite number"
    job_id = status.get("submitit_job_id")
    if job_id is not None and not (isinstance(job_id, str) and JOB_ID.match(job_id)):
        return "status.json: submitit_job_id is not a job id"
    if status.get("cluster") is not None and status.get("cluster") not in CLUSTERS:
        return f"status.json: cluster is not one of {', '.join(CLUSTERS)}"
    return None


def remove_stale_temp_files(run_dir: Path) -> None:
    """Temp files left by a writer that died between mkstemp and os.replace."""
    for tmp in run_dir.glob(f".*{TMP_SUFFIX}"):
        with suppress(OSError):
            tmp.unlink()


def finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite as a float: no NaN, inf or 400-digit int."""
    return type(value) in (int, float) and -1e308 < value < 1e308


def complete_metrics(data: dict[str, Any] | None) -> bool:
    """metrics.json is complete: an object with metrics (a finite AP at least) and provenance."""
    if not data:
        return False
    metrics = data.get("metrics")
    return (isinstance(metrics, dict) and finite_number(metrics.get("AP"))
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
    A filesystem without flock (NFS or Lustre mounted without locking) is a StoreError that says
    so, never a traceback; a lock file that cannot be opened (read-only store) is an OSError.
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
        fd = os.open(self.path, _LOCK_FLAGS, 0o666)  # 0644 under umask 022 (OSError if RO)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in _BUSY:
                return False
            raise lock_error(self.path.parent, exc) from None
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


def lock_error(run_dir: Path, exc: OSError) -> StoreError:
    """A flock failure other than "busy" (ENOLCK, EOPNOTSUPP, ENOSYS, ...): one line + the fix."""
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return StoreError(
        f"cannot lock {run_dir}: flock failed with {name} ({exc.strerror}); the "
        "filesystem of the results folder does not support file locking",
        hint="use a results folder on a filesystem with flock support (e.g. a local disk), or "
             "mount it with locking enabled (NFS: a lock manager or local_lock=flock; "
             "Lustre: -o flock)")


def lock_is_held(run_dir: Path) -> bool:
    """Whether some process (possibly this one, through another descriptor) holds the run lock.

    Only reads: the lock file is opened read-only and never created, and probed with a shared
    lock (which an exclusive holder refuses), so a read-only results folder can be planned.
    """
    try:
        fd = os.open(run_dir / LOCK, _PROBE_FLAGS)
    except OSError:  # missing (never locked), or unreadable: nobody we can see holds it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _BUSY:
            return True
        raise lock_error(run_dir, exc) from None
    finally:
        os.close(fd)  # closing drops our probe lock
    return False
