"""One run directory -> one flat record (a DataFrame row), tolerant of partial or corrupt files."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from atss_bench.job import rundir as rd
from atss_bench.recipes import METRICS

EXTRA_METRICS = ("AR1", "AR10", "AR100")
PROVENANCE_FIELDS = ("git_commit", "git_dirty", "device", "world_size", "images_per_sec",
                     "train_seconds", "eval_seconds", "config_hash")
COLUMNS = (
    "run_id", "recipe", "table", "row_id", "label", "profile", "seed", "status", "reason",
    *METRICS, *EXTRA_METRICS, "iter", "max_iter", "created", "started", "finished", "updated",
    "wall_time",
    *PROVENANCE_FIELDS, "host", "pid", "slurm_job_id", "run_dir",
)
PROGRESS_KEYS = ("iter", "max_iter")
_THIS_HOST = socket.gethostname()


class CorruptRecord(Exception):
    """A run directory that cannot be read as a record (skipped with a warning)."""


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown: assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _progress(record: dict[str, Any], run_dir: Path, provenance: dict[str, Any]) -> None:
    if provenance.get("max_iter") is not None:
        record["iter"] = provenance.get("iter", provenance["max_iter"])
        record["max_iter"] = provenance["max_iter"]
        return
    last = rd.read_last_log_line(run_dir / rd.LOG, keys=PROGRESS_KEYS)
    if last:
        record["iter"] = last.get("iter")
        record["max_iter"] = last.get("max_iter")


def read_record(run_dir: Path) -> dict[str, Any]:
    """The flat record of one run; raises CorruptRecord when meta.json is missing or corrupt.

    State rules: no status.json yet -> pending; status done but metrics.json incomplete -> failed
    (the record is not done); running on this host by a process that is gone -> reason "stale".
    """
    meta = rd.read_json(run_dir / rd.META)
    if meta is None:
        raise CorruptRecord("meta.json missing or corrupt")
    if meta.get("run_id") not in (None, run_dir.name):
        raise CorruptRecord(f"meta.json names run {meta.get('run_id')!r}")
    status = rd.read_json(run_dir / rd.STATUS) or {"state": rd.PENDING}
    record: dict[str, Any] = {k: meta.get(k) for k in
                              ("recipe", "table", "row_id", "label", "profile", "seed", "created")}
    record["run_id"] = run_dir.name
    record["run_dir"] = str(run_dir)
    for key in ("reason", "started", "finished", "updated", "wall_time", "host", "pid",
                "slurm_job_id"):
        record[key] = status.get(key)
    state = status.get("state") if status.get("state") in rd.STATES else rd.FAILED
    provenance: dict[str, Any] = {}
    if state == rd.DONE:
        stored = rd.read_json(run_dir / rd.METRICS)
        if rd.complete_metrics(stored):
            assert stored is not None
            for name, value in stored["metrics"].items():
                record[name] = value
            provenance = stored["provenance"]
            for key in PROVENANCE_FIELDS:
                record[key] = provenance.get(key)
        else:
            state = rd.FAILED
            record["reason"] = "record incomplete: metrics.json missing or corrupt"
    elif state == rd.RUNNING and record["host"] == _THIS_HOST and not _pid_alive(record["pid"]):
        record["reason"] = f"stale: process {record['pid']} is gone (killed?)"
    record["status"] = state
    _progress(record, run_dir, provenance)
    return record
