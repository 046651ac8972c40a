"""Run one experiment into its run directory: idempotent, locked, failure recorded.

``run_experiment_job`` is the unit every launcher calls (inline, submitit local, SLURM): it
returns the stored metrics of a finished run without training, otherwise takes the run lock,
writes the spec, records the code that starts training (``provenance.capture_code``: commit, and
``code.patch`` when the checkout is dirty), trains through ``train_fn`` (the engine by default,
imported lazily) and writes metrics + provenance, then ``done``. Any exception is recorded as
``failed`` with a one-line reason (and the traceback in error.txt) and re-raised.

``force`` on a done run retrains into ``run_dir/.retrain/`` while the previous result stays in
place and readable as done; only a successful retrain moves its log, checkpoints and patch in and
then replaces metrics.json atomically. A failed retrain keeps the previous result (status.json
says ``retrain_failed``; the traceback is in ``.retrain/error.txt``) and raises
``RetrainFailedError``.

Each attempt that trains appends the code it runs to ``sessions.json`` (``job.sessions``; the
list restarts when training starts from scratch), so a result resumed from checkpoints says in
its provenance which code trained before (``earlier_sessions``) and whether it differed
(``mixed_code``).
"""
from __future__ import annotations

import importlib
import math
import os
import shutil
import time
import traceback
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from atss_bench.config import ExperimentConfig, config_hash
from atss_bench.data.identity import DatasetIdentity, resolve_dataset_identity
from atss_bench.errors import DataError, LaunchError, StoreError, TrainingError
from atss_bench.job import rundir as rd
from atss_bench.job import sessions
from atss_bench.job.dataset import check_stored_dataset, has_checkpoints
from atss_bench.job.provenance import PATCH_NAME, capture_code, collect_provenance, host_info
from atss_bench.recipes import METRICS, Experiment

# train_fn(config, run_dir, *, data_root=None, progress=True)
#     -> {"metrics": {"AP": ..., ...}, "provenance": {...}}
TrainFn = Callable[..., Mapping[str, Any]]
REASON_MAX_CHARS = 300
RETRAIN_DIR = ".retrain"  # a --force retrain of a done run trains here (see module doc)
# what a retrain never moves over the previous result: the record's own files
_NOT_PROMOTED = frozenset({rd.CONFIG, rd.META, rd.STATUS, rd.METRICS, rd.ERROR, rd.LOCK})


class RunBusyError(StoreError):
    """Another process holds the run's lock (the same run is being trained elsewhere)."""


class RetrainFailedError(TrainingError):
    """A ``--force`` retrain of a done run failed; the previous result is kept."""


def default_train_fn() -> TrainFn:
    """The engine's ``run_experiment``, imported only when a run actually trains."""
    try:
        from atss_bench.engine import run_experiment
    except ImportError as exc:
        raise LaunchError(f"the training engine is not available ({exc})",
                          hint="atss_bench.engine.run_experiment must be importable") from None
    return run_experiment


def resolve_train_fn(train_fn: TrainFn | str | None) -> TrainFn:
    """A callable, a ``"module:function"`` path (picklable for job launchers), or None (engine)."""
    if train_fn is None:
        return default_train_fn()
    if isinstance(train_fn, str):
        module, _, name = train_fn.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise LaunchError(f"train function '{train_fn}' not found ({exc})") from None
    return train_fn


def process_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's rank in a multi-process run (torchrun, or srun with several tasks), else 0.

    Only rank 0 keeps the run's records; the other ranks just train alongside it.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"])
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_PROCID"])
    return 0


def failure_reason(exc: BaseException) -> str:
    """One line: exception class and the first line of its message."""
    lines = str(exc).strip().splitlines()
    reason = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return reason if len(reason) <= REASON_MAX_CHARS else reason[: REASON_MAX_CHARS - 1] + "…"


def write_spec(run_dir: Path, experiment: Experiment,
               dataset: DatasetIdentity | None = None) -> None:
    """config.yaml (the resolved config) and meta.json (where the run comes from, and the
    ``dataset`` it trains on: kept from the previous meta.json when not given)."""
    config = experiment.config.model_dump(mode="json")
    rd.atomic_write_text(run_dir / rd.CONFIG, yaml.safe_dump(config, sort_keys=False))
    previous = rd.read_json(run_dir / rd.META) or {}
    rd.atomic_write_json(run_dir / rd.META, {
        "run_id": experiment.run_id, "recipe": experiment.recipe, "table": experiment.table,
        "row_id": experiment.row_id, "label": experiment.label, "profile": experiment.profile,
        "seed": experiment.seed, "paper": dict(experiment.paper),
        "created": previous.get("created") or rd.utc_now(),
        "dataset": dataset.to_json() if dataset is not None else previous.get("dataset"),
    })


def mark_pending(results_dir: str | Path, experiment: Experiment, **fields: Any) -> bool:
    """Record a queued run (e.g. with its slurm_job_id); False if it is done or busy."""
    run_dir = rd.run_dir_for(results_dir, experiment.run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = rd.RunLock(run_dir)
    if not lock.acquire(wait=False):
        return False
    try:
        if rd.read_done_metrics(run_dir) is not None:
            return False
        write_spec(run_dir, experiment)
        rd.write_status(run_dir, rd.PENDING, reason=None, queued=rd.utc_now(), **fields)
        return True
    finally:
        lock.release()


def run_experiment_job(
    results_dir: str | Path,
    experiment: Experiment,
    *,
    train_fn: TrainFn | str | None = None,
    force: bool = False,
    data_root: str | None = None,
    progress: bool = True,
    wait: bool = False,
) -> dict[str, Any]:
    """Train ``experiment`` unless its run is done; return its metrics.json content.

    A run already being trained by another process raises ``RunBusyError`` (``wait=True`` blocks
    on its lock instead, then returns its result). ``force`` retrains from scratch. A stored run
    (done, or with checkpoints) made on another dataset raises ``DatasetMismatchError`` (see
    ``job.dataset``) unless ``force``.
    """
    run_dir = rd.run_dir_for(results_dir, experiment.run_id)
    if not force and (stored := rd.read_done_metrics(run_dir)) is not None:
        if process_rank() == 0:
            _current_dataset(run_dir, experiment, data_root, force, stored)
        return stored
    train = resolve_train_fn(train_fn)
    if process_rank() != 0:  # rank 0 holds the lock and writes; the others only train with it
        result = train(experiment.config, run_dir, data_root=data_root, progress=False)
        return {"run_id": experiment.run_id, **dict(result)}
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = rd.RunLock(run_dir)
    if not lock.acquire(wait=wait):
        raise RunBusyError(f"run {experiment.run_id} is being trained by another process",
                           hint=f"see {run_dir / rd.STATUS}")
    try:
        stored = None if force else rd.read_done_metrics(run_dir)
        dataset = _current_dataset(run_dir, experiment, data_root, force, stored)
        if stored is not None:
            return stored  # finished by the process we waited for
        return _train_locked(run_dir, experiment, _recording_dataset(train, dataset), force,
                             data_root, progress, dataset)
    finally:
        lock.release()


def _current_dataset(run_dir: Path, experiment: Experiment, data_root: str | None, force: bool,
                     stored: dict[str, Any] | None) -> DatasetIdentity | None:
    """The dataset this run uses now (None: not resolvable here; the engine will say why).
    Unless ``force``, a stored run (done, or with checkpoints) of another dataset is refused."""
    reused = not force and (stored is not None or has_checkpoints(run_dir))
    try:
        current = resolve_dataset_identity(experiment.config.data, data_root)
    except DataError:
        if stored is not None and not force:
            raise  # a stored result is never handed out unchecked
        return None
    if reused:
        check_stored_dataset(run_dir, experiment, current, stored)
    return current


def _recording_dataset(train: TrainFn, dataset: DatasetIdentity | None) -> TrainFn:
    """``train`` whose result's provenance always names the dataset (any train function)."""
    if dataset is None:
        return train

    def train_recording(*args: Any, **kwargs: Any) -> Mapping[str, Any]:
        result = train(*args, **kwargs)
        if isinstance(result, Mapping) and isinstance(result.get("provenance") or {}, Mapping):
            provenance = {"dataset": dataset.to_json(), **dict(result.get("provenance") or {})}
            return {**result, "provenance": provenance}
        return result

    return train_recording


def _clear_outputs(run_dir: Path, force: bool) -> None:
    """Before a run that is not done trains in place: a stale patch, metrics and traceback go
    (``force``: its log, checkpoints and sessions too, it starts from scratch)."""
    rd.remove_stale_temp_files(run_dir)
    restart = (rd.LOG, sessions.SESSIONS) if force else ()
    for name in (rd.METRICS, rd.ERROR, PATCH_NAME) + restart:
        with suppress(FileNotFoundError):
            (run_dir / name).unlink()
    if force:
        shutil.rmtree(run_dir / rd.CHECKPOINTS, ignore_errors=True)
        shutil.rmtree(run_dir / rd.TENSORBOARD, ignore_errors=True)


def _store_of(run_dir: Path) -> Path:
    return run_dir.parent.parent  # results/runs/<run_id> -> results


def _attempt(run_dir: Path) -> int:
    return int((rd.read_json(run_dir / rd.STATUS) or {}).get("attempt") or 0) + 1


def _train_locked(run_dir: Path, experiment: Experiment, train: TrainFn, force: bool,
                  data_root: str | None, progress: bool,
                  dataset: DatasetIdentity | None = None) -> dict[str, Any]:
    if force and rd.read_done_metrics(run_dir) is not None:
        return _retrain_locked(run_dir, experiment, train, data_root, progress, dataset)
    _clear_outputs(run_dir, force)
    fresh = not has_checkpoints(run_dir)  # nothing to resume: the session list restarts
    write_spec(run_dir, experiment, dataset)
    started, attempt = rd.utc_now(), _attempt(run_dir)
    rd.write_status(run_dir, rd.RUNNING, reason=None, started=started, finished=None,
                    attempt=attempt, **host_info())
    start = time.monotonic()
    try:
        code = capture_code(run_dir, exclude=[_store_of(run_dir)])  # the code that trains
        session = sessions.session_entry(attempt, started, code)
        earlier = sessions.start_session(run_dir, session, fresh=fresh)
        result = train(experiment.config, run_dir, data_root=data_root, progress=progress)
        record = _metrics_record(experiment, result, run_dir, time.monotonic() - start, code,
                                 _resume_provenance(result, earlier, session))
        rd.atomic_write_json(run_dir / rd.METRICS, record)
    except BaseException as exc:
        _record_failure(run_dir, exc, time.monotonic() - start)
        raise
    rd.write_status(run_dir, rd.DONE, finished=rd.utc_now(),
                    wall_time=record["provenance"]["wall_time"])
    return record


def _retrain_locked(run_dir: Path, experiment: Experiment, train: TrainFn,
                    data_root: str | None, progress: bool,
                    dataset: DatasetIdentity | None) -> dict[str, Any]:
    """``force`` on a done run: train into ``run_dir/.retrain``; the done result stays until
    the retrain succeeds (module doc)."""
    staging = run_dir / RETRAIN_DIR
    shutil.rmtree(staging, ignore_errors=True)  # a retrain killed earlier
    staging.mkdir()
    write_spec(run_dir, experiment)  # meta.json keeps the kept result's dataset until promotion
    started = rd.utc_now()
    rd.write_status(run_dir, rd.DONE, retrain_started=started, retrain_failed=None,
                    retrain_error=None)
    start = time.monotonic()
    try:
        code = capture_code(staging, exclude=[_store_of(run_dir)])
        session = sessions.session_entry(_attempt(run_dir), started, code)
        earlier = sessions.start_session(staging, session, fresh=True)  # starts from scratch
        result = train(experiment.config, staging, data_root=data_root, progress=progress)
        record = _metrics_record(experiment, result, staging, time.monotonic() - start, code,
                                 _resume_provenance(result, earlier, session))
    except BaseException as exc:
        _record_retrain_failure(run_dir, staging, exc)
        if isinstance(exc, Exception):
            raise RetrainFailedError(
                f"{failure_reason(exc)} (the previous result is kept)") from exc
        raise
    _promote(staging, run_dir)
    write_spec(run_dir, experiment, dataset)
    rd.atomic_write_json(run_dir / rd.METRICS, record)  # the new result, in one step
    rd.write_status(run_dir, rd.DONE, reason=None, started=started, finished=rd.utc_now(),
                    wall_time=record["provenance"]["wall_time"], attempt=_attempt(run_dir),
                    retrain_started=None, **host_info())
    shutil.rmtree(staging, ignore_errors=True)
    return record


def _promote(staging: Path, run_dir: Path) -> None:
    """Move a successful retrain's outputs (log, checkpoints, code.patch, ...) over the previous
    ones; an output the retrain did not write is removed (it belonged to the previous result)."""
    trash = staging / ".previous"
    trash.mkdir()
    names = {rd.LOG, rd.CHECKPOINTS, rd.TENSORBOARD, PATCH_NAME, sessions.SESSIONS}
    names |= {p.name for p in staging.iterdir() if not p.name.startswith(".")}
    for name in sorted(names - _NOT_PROMOTED):
        old, new = run_dir / name, staging / name
        if old.exists() or old.is_symlink():
            os.replace(old, trash / name)  # a folder cannot be renamed over a non-empty one
        if new.exists() or new.is_symlink():
            os.replace(new, old)


def _record_retrain_failure(run_dir: Path, staging: Path, exc: BaseException) -> None:
    """Best effort: the previous result stays done; the retrain's reason goes into status.json,
    its traceback (and log) stay in the staging folder, its checkpoints are dropped."""
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        rd.atomic_write_text(staging / rd.ERROR, text)
        shutil.rmtree(staging / rd.CHECKPOINTS, ignore_errors=True)
        rd.write_status(run_dir, rd.DONE, retrain_failed=failure_reason(exc),
                        retrain_error=f"{RETRAIN_DIR}/{rd.ERROR}")
    except Exception:  # noqa: BLE001  (disk full, permissions: the original error matters more)
        pass


def _resume_provenance(result: Any, earlier: list[dict[str, Any]] | None,
                       session: Mapping[str, Any]) -> dict[str, Any]:
    """``earlier_sessions`` and ``mixed_code`` when the engine resumed (``job.sessions``)."""
    provenance = result.get("provenance") if isinstance(result, Mapping) else None
    return sessions.resume_provenance(provenance, earlier, session)


def _metrics_record(experiment: Experiment, result: Any, run_dir: Path,
                    wall_time: float, code: Mapping[str, Any] | None = None,
                    resume: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json's content; ``code``: what ``capture_code`` saw when training started;
    ``resume``: the earlier sessions of a resumed result (``_resume_provenance``)."""
    if not isinstance(result, Mapping) or not isinstance(result.get("metrics"), Mapping):
        raise TrainingError(f"train function returned {type(result).__name__}, "
                            "expected a dict with 'metrics' and 'provenance'")
    metrics = {str(k): float(v) for k, v in result["metrics"].items()
               if isinstance(v, (int, float))}
    missing = [m for m in METRICS if m not in metrics]
    if missing:
        raise TrainingError(f"train function returned no {', '.join(missing)}")
    if not math.isfinite(metrics["AP"]):
        raise TrainingError(f"non-finite AP {metrics['AP']}")
    last = rd.read_last_log_line(run_dir / rd.LOG, keys=("iter", "max_iter")) or {}
    config: ExperimentConfig = experiment.config
    provenance = {
        **collect_provenance(code),
        **dict(result.get("provenance") or {}),
        **dict(resume or {}),
        "config_hash": config_hash(config),
        "wall_time": round(wall_time, 3),
        "iter": last.get("iter"),
        "max_iter": last.get("max_iter", config.train.max_iter),
    }
    return {"run_id": experiment.run_id, "metrics": metrics, "provenance": provenance,
            "finished": rd.utc_now()}


def _record_failure(run_dir: Path, exc: BaseException, wall_time: float) -> None:
    """Best effort: never let bookkeeping hide the original exception."""
    try:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        rd.atomic_write_text(run_dir / rd.ERROR, text)
        rd.write_status(run_dir, rd.FAILED, reason=failure_reason(exc), finished=rd.utc_now(),
                        wall_time=round(wall_time, 3))
    except Exception:  # noqa: BLE001  (disk full, permissions: the original error matters more)
        pass


@dataclass
class RunJob:
    """A picklable job for launchers: paths and configs only, never a model.

    ``train_fn`` is a ``"module:function"`` path (None: the engine) so the job pickles by reference.
    Calling it twice is safe: a finished run returns its stored metrics.
    """

    results_dir: str
    experiment: Experiment
    force: bool = False
    data_root: str | None = None
    train_fn: str | None = None
    wait: bool = False

    def __call__(self) -> dict[str, Any]:
        return run_experiment_job(self.results_dir, self.experiment, train_fn=self.train_fn,
                                  force=self.force, data_root=self.data_root, progress=False,
                                  wait=self.wait)
