"""The submitit job: one run trained into the store, idempotent, requeueable, on 1..N processes.

``SubmititRun(results_dir, experiment)`` holds paths and a config only (never a model), so it
pickles small and by reference. ``__call__``:

- sets ``RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE / MASTER_ADDR / MASTER_PORT`` from
  ``submitit.JobEnvironment`` when the job has several tasks (one task per GPU, any number of
  nodes); the engine's ``init_distributed`` reads them;
- then calls ``job.run_experiment_job`` on every rank: a done run returns its stored metrics, a
  partial one resumes from its last checkpoint; only rank 0 takes the run lock and writes the
  store record, the other ranks just train alongside it (the engine writes nothing on them).

``checkpoint()`` returns a ``DelayedSubmission`` of a fresh instance: on preemption or time-out
submitit requeues it and the new attempt resumes through the engine's own checkpoints. While it
waits in the queue the run is recorded as ``pending`` ("requeued ..."); when submitit gives up
after too many time-outs it is recorded as ``timed-out``.

``SubmititChain`` runs several runs one after another in one job (``--cluster local`` uses it so
that a workstation trains N runs at a time, not all at once).
"""
from __future__ import annotations

import dataclasses
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import UncompletedJobError

from atss_bench.errors import TrainingError
from atss_bench.job import failure_reason, run_experiment_job
from atss_bench.job import rundir as rd
from atss_bench.recipes import Experiment

REQUEUED_REASON = "requeued (preempted or timed out): resumes from its last checkpoint"
MASTER_PORT_BASE = 20000


def job_environment() -> submitit.JobEnvironment | None:
    """The submitit environment of this process, or None outside a submitit job."""
    try:
        return submitit.JobEnvironment()
    except RuntimeError:
        return None


def master_port(job_id: str) -> int:
    """A port in [20000, 40000) derived from the (raw, per array task) job id: stable across
    requeues, different for jobs sharing a node."""
    digits = re.sub(r"\D", "", str(job_id)) or "0"
    return MASTER_PORT_BASE + int(digits) % 20000


def distributed_env(env: Any) -> dict[str, str]:
    """torch.distributed variables for a job with several tasks ({} for one task / no job)."""
    if env is None or env.num_tasks <= 1:
        return {}
    local = env.cluster in ("local", "debug")
    return {
        "RANK": str(env.global_rank),
        "WORLD_SIZE": str(env.num_tasks),
        "LOCAL_RANK": str(env.local_rank),
        "LOCAL_WORLD_SIZE": str(env.num_tasks // max(1, env.num_nodes)),
        "MASTER_ADDR": "127.0.0.1" if local else str(env.hostnames[0]),
        "MASTER_PORT": str(master_port(env.raw_job_id)),
    }


def _say(message: str) -> None:
    """One line in the job's stdout log (submitit's <job>_<task>_log.out)."""
    print(f"atss-bench: {message}", flush=True)


def _mark_interrupted(run_dir: Path, state: str, reason: str) -> None:
    """Best effort, under the run lock: the attempt ended without finishing the run."""
    try:
        lock = rd.RunLock(run_dir)
        if not lock.acquire(wait=False):
            return
        try:
            status = rd.read_json(run_dir / rd.STATUS) or {}
            if status.get("state") != rd.DONE:
                ended = {"requeued": rd.utc_now(), "finished": None} if state == rd.PENDING \
                    else {"finished": rd.utc_now()}
                rd.write_status(run_dir, state, reason=reason, **ended)
        finally:
            lock.release()
    except Exception:  # noqa: BLE001, S110  (never hide the signal being handled)
        pass


@dataclass(frozen=True)
class SubmititRun:
    """One experiment as a submitit callable (paths and config only; see module doc)."""

    results_dir: str
    experiment: Experiment
    train_fn: str | None = None  # "module:function"; None: the engine
    data_root: str | None = None

    @property
    def run_dir(self) -> Path:
        return rd.run_dir_for(self.results_dir, self.experiment.run_id)

    def __call__(self) -> dict[str, Any]:
        env = job_environment()
        os.environ.update(distributed_env(env))
        rank = env.global_rank if env is not None else 0
        exp = self.experiment
        where = f"job {env.job_id}, task {rank} of {env.num_tasks}" if env is not None \
            else "outside submitit"
        _say(f"run {exp.run_id} (table {exp.table}, row {exp.row_id}, seed {exp.seed}): {where} "
             f"on {socket.gethostname()}")
        try:  # ranks > 0 (RANK above) only train: the job layer keeps records on rank 0
            # progress: a task's stdout is its log file, so plain lines (engine.monitor)
            record = run_experiment_job(self.results_dir, exp, train_fn=self.train_fn,
                                        data_root=self.data_root, progress=True)
        except SystemExit:
            if rank == 0 and getattr(self, "_requeue_requested", False):
                _mark_interrupted(self.run_dir, rd.PENDING, REQUEUED_REASON)
                _say(f"run {exp.run_id}: {REQUEUED_REASON}")
            raise
        except UncompletedJobError as exc:  # raised by submitit: timed out too many times
            if rank == 0 and "timed-out" in str(exc):
                _mark_interrupted(self.run_dir, rd.TIMED_OUT, failure_reason(exc))
            raise
        resumed = (record.get("provenance") or {}).get("resumed_from")
        _say(f"run {exp.run_id}: done on rank {rank}, AP {record['metrics']['AP']:.2f}"
             + (f" (resumed from iteration {resumed})" if resumed else ""))
        return record

    def note_requeue(self) -> None:
        """Called by submitit's signal handler (through ``checkpoint``) before it requeues."""
        object.__setattr__(self, "_requeue_requested", True)

    def fresh(self) -> SubmititRun:
        return dataclasses.replace(self)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue a fresh instance; it resumes from the engine's last checkpoint."""
        self.note_requeue()
        return submitit.helpers.DelayedSubmission(self.fresh())


@dataclass(frozen=True)
class SubmititChain:
    """Several runs, one after another, in one job; one failure never stops the others."""

    runs: tuple[SubmititRun, ...]

    def __call__(self) -> list[dict[str, Any] | None]:
        results: list[dict[str, Any] | None] = []
        failures = []
        for run in self.runs:
            try:
                results.append(run())
            except Exception as exc:  # recorded in the run's status.json
                if isinstance(exc, UncompletedJobError):
                    raise
                failures.append(f"{run.experiment.run_id}: {failure_reason(exc)}")
                results.append(None)
        if failures:
            raise TrainingError(f"{len(failures)} of {len(self.runs)} runs failed: "
                                + "; ".join(failures))
        return results

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        for run in self.runs:
            run.note_requeue()
        return submitit.helpers.DelayedSubmission(
            SubmititChain(tuple(run.fresh() for run in self.runs)))
