"""One run directory -> one flat record (a DataFrame row), tolerant of partial or corrupt files.

A results folder is untrusted data, so this is the one place that checks what a record holds:
meta.json, status.json (``rundir.status_problem``) and metrics.json must be regular JSON files of
at most 1 MiB whose fields have the types the store writes (a seed is a non-negative int, a row id
a short text, an AP a finite number, ...). Anything else raises ``CorruptRecord`` with one phrase
saying which file and field, and ``store.scan_results`` skips the run with one warning line.
"""
from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atss_bench.job import rundir as rd
from atss_bench.job.dataset import recorded_in
from atss_bench.job.safeio import UnsafeFile, load_json_object
from atss_bench.recipes import METRICS

EXTRA_METRICS = ("AR1", "AR10", "AR100")
PROVENANCE_FIELDS = ("git_commit", "git_dirty", "device", "world_size", "images_per_sec",
                     "train_seconds", "eval_seconds", "config_hash")
COLUMNS = (
    "run_id", "recipe", "table", "row_id", "label", "profile", "seed", "status", "reason",
    *METRICS, *EXTRA_METRICS, "iter", "max_iter", "created", "started", "finished", "updated",
    "wall_time",
    *PROVENANCE_FIELDS, "dataset", "dataset_name", "host", "pid", "slurm_job_id", "run_dir",
    "retrain_failed",  # why the last --force retrain failed (its previous result is kept)
    "mixed_code",  # a resumed result trained by other code before (job.sessions); None: unknown
)
PROGRESS_KEYS = ("iter", "max_iter")
_THIS_HOST = socket.gethostname()


class CorruptRecord(Exception):
    """A run directory that cannot be read as a record (skipped with a warning)."""


_TEXT = "a text of at most 4096 characters"
_METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_SEED_LIMIT = 2**32  # numpy's seeds


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= rd.MAX_TEXT_CHARS


def _is_count(value: Any, limit: int = 2**63) -> bool:
    return type(value) is int and 0 <= value < limit


def _is_number(value: Any) -> bool:
    """A finite number, or NaN (a metric COCO could not compute); no inf, no 400-digit int."""
    return rd.finite_number(value) or (type(value) is float and math.isnan(value))


def _check(data: Mapping[str, Any], file: str, checks: Mapping[str, tuple[Any, str]]) -> None:
    """Each present, non-null field passes its check, else CorruptRecord naming file and field."""
    for key, (ok, expected) in checks.items():
        value = data.get(key)
        if value is not None and not ok(value):
            raise CorruptRecord(f"{file}: {key} is not {expected}")


META_CHECKS = {
    "run_id": (_is_text, _TEXT), "recipe": (_is_text, _TEXT), "row_id": (_is_text, _TEXT),
    "label": (_is_text, _TEXT), "profile": (_is_text, _TEXT), "created": (_is_text, _TEXT),
    "table": (lambda v: _is_text(v) or _is_count(v), "an integer or a text"),
    "seed": (lambda v: _is_count(v, _SEED_LIMIT), "an integer in [0, 2**32)"),
    "paper": (lambda v: isinstance(v, dict), "an object"),
}
PROVENANCE_CHECKS = {
    "git_commit": (_is_text, _TEXT), "device": (_is_text, _TEXT),
    "config_hash": (_is_text, _TEXT),
    "git_dirty": (lambda v: isinstance(v, bool), "true or false"),
    "mixed_code": (lambda v: isinstance(v, bool), "true or false"),
    "world_size": (_is_count, "a non-negative integer"),
    "iter": (_is_count, "a non-negative integer"),
    "max_iter": (_is_count, "a non-negative integer"),
    **{key: (_is_number, "a number") for key in ("images_per_sec", "train_seconds",
                                                   "eval_seconds", "wall_time")},
}


def _load(run_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        return load_json_object(run_dir / name)
    except UnsafeFile as exc:
        raise CorruptRecord(f"{name} {exc}") from None


def _check_metrics(stored: Mapping[str, Any]) -> None:
    """metrics.json of a done run: finite AP, numeric metrics with plain names, typed provenance
    (a metric name may not replace another column, e.g. ``run_id``)."""
    metrics = stored["metrics"]
    if "AP" in metrics and not rd.finite_number(metrics["AP"]):
        raise CorruptRecord("metrics.json: AP is not a finite number")
    for name, value in metrics.items():
        if not _METRIC_NAME.match(name) or (name in COLUMNS and name not in
                                            (*METRICS, *EXTRA_METRICS)):
            raise CorruptRecord(f"metrics.json: {name[:40]!r} is not a metric name")
        if not _is_number(value):
            raise CorruptRecord(f"metrics.json: {name} is not a number")
    _check(stored["provenance"], "metrics.json provenance", PROVENANCE_CHECKS)


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
    if last and _is_count(last["iter"]) and _is_count(last["max_iter"]):  # else: no progress
        record["iter"] = last["iter"]
        record["max_iter"] = last["max_iter"]


def read_record(run_dir: Path) -> dict[str, Any]:
    """The flat record of one run; raises CorruptRecord (one phrase: which file, what is wrong)
    when meta.json is missing, or meta.json / status.json / metrics.json is not what the store
    writes (see the module docstring).

    State rules: no status.json yet -> pending; an unknown state word -> failed; status done but
    metrics.json incomplete -> failed (the record is not done); running on this host by a
    process that is gone -> reason "stale".
    """
    meta = _load(run_dir, rd.META)
    if meta is None:
        raise CorruptRecord("meta.json missing")
    _check(meta, "meta.json", META_CHECKS)
    if meta.get("run_id") not in (None, run_dir.name):
        raise CorruptRecord(f"meta.json names run {meta['run_id'][:40]!r}")
    status = _load(run_dir, rd.STATUS) or {"state": rd.PENDING}
    problem = rd.status_problem(status)
    if problem is not None:
        raise CorruptRecord(problem)
    record: dict[str, Any] = {k: meta.get(k) for k in
                              ("recipe", "table", "row_id", "label", "profile", "seed", "created")}
    record["run_id"] = run_dir.name
    record["run_dir"] = str(run_dir)
    for key in ("reason", "started", "finished", "updated", "wall_time", "host", "pid",
                "slurm_job_id", "retrain_failed"):
        record[key] = status.get(key)
    state = status.get("state") if status.get("state") in rd.STATES else rd.FAILED
    provenance: dict[str, Any] = {}
    if state == rd.DONE:
        why = "missing or corrupt"
        try:
            stored = _load(run_dir, rd.METRICS)
        except CorruptRecord as exc:  # shown as a failed run, below: the record says done
            stored, why = None, str(exc).removeprefix(f"{rd.METRICS} ")
        if stored is not None and isinstance(stored.get("metrics"), dict) \
                and isinstance(stored.get("provenance"), dict):
            _check_metrics(stored)  # hostile values are skipped with a warning, not shown
        if rd.complete_metrics(stored):
            assert stored is not None
            for name, value in stored["metrics"].items():
                record[name] = value
            provenance = stored["provenance"]
            for key in (*PROVENANCE_FIELDS, "mixed_code"):
                record[key] = provenance.get(key)
        else:
            state = rd.FAILED
            record["reason"] = f"record incomplete: metrics.json {why}"
    elif state == rd.RUNNING and record["host"] == _THIS_HOST and not _pid_alive(record["pid"]):
        record["reason"] = f"stale: process {record['pid']} is gone (killed?)"
    record["status"] = state
    dataset = recorded_in(meta, {"provenance": provenance})  # fingerprint and name, or None
    record["dataset"] = dataset.fingerprint if dataset is not None else None
    record["dataset_name"] = dataset.name if dataset is not None else None
    _progress(record, run_dir, provenance)
    return record
