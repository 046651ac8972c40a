"""Join the store with the scheduler: what SLURM (or a local job) says about submitted runs.

A submitted run's status.json carries ``submitit_job_id`` (e.g. ``"44_1"``) and ``cluster``
(written by ``launch.submit``). ``refresh_job_states`` asks the scheduler about every such run not
done (squeue for live jobs, sacct for ended ones) and, when the job is over but the run did not
finish, records why:

    SLURM CANCELLED*                      -> cancelled
    SLURM TIMEOUT / DEADLINE              -> timed-out
    SLURM FAILED / OUT_OF_MEMORY / ... /
    COMPLETED without a finished run      -> failed, reason = the last line of the task's stderr
    squeue and sacct both failed          -> kept as is; scheduler state UNREACHABLE (a plan never
                                             resubmits such a run: its job may still be queued)

A results folder is untrusted data (it may come from a pull request): nothing in it is unpickled
or executed, and the paths a record names (stdout, stderr, submitit_folder) are never followed.
A job's logs are found from the store layout and a validated job id,
``<results>/submitit/<cluster>/<job id>/<job id>_0_log.{out,err}``, reached without following
symlinks, regular files only, by their last ``LOG_TAIL_BYTES``. A ``--cluster local`` job's state
comes from its process (alive or not) and its logs (a traceback in stderr, submitit's success
line in stdout).

The write happens under the run's lock, after re-reading status.json, so a job that is working on
the run (it holds the lock) or that just finished is never overwritten; in a read-only store the
ended state is shown, not written. Runs are independent: one unreadable record or failed job
never hides the others (a record whose status.json fails ``rundir.status_problem`` is left to
``store.scan_results``, which warns about it once).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from atss_bench.errors import StoreError
from atss_bench.job import rundir as rd
from atss_bench.job.safeio import UnsafeFile, read_bytes, read_tail_confined
from atss_bench.launch.executors import SUBMITIT_DIR
from atss_bench.launch.slurm_query import UNREACHABLE, query_slurm_states

ACTIVE_SLURM_STATES = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
    "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING", "STOPPED", "RESV_DEL_HOLD",
    "READY", "PREEMPTED_REQUEUE",
})
TIMED_OUT_SLURM_STATES = frozenset({"TIMEOUT", "DEADLINE"})
REQUEUE_WAIT_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})
REQUEUED_BY_SLURM = "requeued by SLURM: the run resumes from its last checkpoint"
UNFINISHED = (rd.PENDING, rd.RUNNING)
TERMINAL = (rd.DONE, rd.FAILED, rd.CANCELLED, rd.TIMED_OUT)
LOG_TAIL_BYTES = 16384
LOG_CLUSTERS = ("slurm", "local")  # clusters whose jobs write submitit log files
# submitit's own lines in a local job's logs: success (INFO, stdout), failure (ERROR, stderr)
_SUBMITIT_SUCCESS = "Job completed successfully"
_SUBMITIT_FAILURE = "Submitted job triggered an exception"
# srun / slurmstepd messages and submitit's own log lines in a task's stderr
_SCHEDULER_LINE = re.compile(r"^(srun|slurmstepd(-\S+)?|sbatch|salloc):|^submitit (INFO|WARNING|"
                             r"ERROR|DEBUG) ")

# job ids -> {job id: SLURM state}; None when the scheduler cannot be asked.
StateQuery = Callable[[list[str]], "Mapping[str, str] | None"]


@dataclass(frozen=True)
class JobState:
    """One submitted run as the store and its scheduler see it (after the refresh)."""

    run_id: str
    row_id: str | None
    seed: int | None
    job_id: str
    cluster: str
    state: str  # the store's state (pending | running | done | failed | cancelled | timed-out)
    scheduler_state: str  # "RUNNING", "CANCELLED by 0", UNREACHABLE; "" when not asked/known
    stdout: str | None  # the task's log files, from the store layout (not from the record)
    stderr: str | None
    reason: str | None = None
    error_line: str | None = None  # last line of stderr, for runs that did not finish
    updated: bool = False  # this refresh wrote the state into status.json

    @property
    def scheduler_active(self) -> bool:
        return slurm_state_word(self.scheduler_state) in ACTIVE_SLURM_STATES

    @property
    def unreachable(self) -> bool:
        """The scheduler could not be asked about this job: it may still be queued."""
        return slurm_state_word(self.scheduler_state) == UNREACHABLE

    @property
    def finished(self) -> bool:
        """The run is over for good: a terminal store state and no job left in the queue."""
        return self.state in TERMINAL and not self.scheduler_active


def slurm_state_word(state: str) -> str:
    """``"CANCELLED by 0"`` -> ``"CANCELLED"``; ``"cancelled+"`` -> ``"CANCELLED"``."""
    word = state.strip().split(" ")[0] if state.strip() else ""
    return word.rstrip("+").upper()


def store_state_for(slurm_state: str) -> str | None:
    """The store state to record for an ended SLURM job whose run is unfinished (None: keep)."""
    word = slurm_state_word(slurm_state)
    if not word or word in ("UNKNOWN", UNREACHABLE) or word in ACTIVE_SLURM_STATES:
        return None
    if word == "CANCELLED":
        return rd.CANCELLED
    if word in TIMED_OUT_SLURM_STATES:
        return rd.TIMED_OUT
    return rd.FAILED  # FAILED, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL, PREEMPTED, COMPLETED, ...


def job_log_path(results_dir: str | Path, cluster: str, job_id: str, stream: str) -> Path | None:
    """Where submitit writes task 0's ``stream`` ("out" | "err") of a job, from the store layout;
    None for a cluster without log files or an id that is not a job id."""
    if cluster not in LOG_CLUSTERS or not rd.JOB_ID.match(job_id) or job_id.startswith("DEBUG"):
        return None
    return Path(results_dir) / SUBMITIT_DIR / cluster / job_id / f"{job_id}_0_log.{stream}"


def _read_job_log_tail(results_dir: Path, cluster: str, job_id: str,
                       stream: str = "err") -> str | None:
    """The tail of a job's stderr (or stdout), reached below ``results_dir`` without following
    symlinks."""
    if job_log_path(results_dir, cluster, job_id, stream) is None:
        return None
    names = (SUBMITIT_DIR, cluster, job_id, f"{job_id}_0_log.{stream}")
    data = read_tail_confined(results_dir, names, LOG_TAIL_BYTES)
    return None if data is None else data.decode("utf-8", "replace")


def error_line(text: str | None) -> str | None:
    """The last meaningful line of a task's stderr: the exception line of a traceback, else the
    scheduler's own last word (``slurmstepd: error: *** JOB 45 ... CANCELLED ...``)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    own = [line for line in lines if not _SCHEDULER_LINE.match(line)
           and not line.startswith(("Traceback", "^", "File "))]
    banners = [line for line in lines if "***" in line]  # slurmstepd: *** JOB 45 CANCELLED ***
    errors = [line for line in lines if "error" in line.lower()]
    chosen = next((group[-1] for group in (own, banners, errors, lines) if group), None)
    return chosen[:300] if chosen else None


def last_error_line(path: str | Path | None) -> str | None:
    """``error_line`` of a stderr file's tail (a regular file only: no symlink, FIFO, device)."""
    if not path:
        return None
    try:
        data = read_bytes(path, LOG_TAIL_BYTES, tail=True)
    except (OSError, UnsafeFile):
        return None
    return error_line(data.decode("utf-8", "replace"))


def _is_zombie(pid: int) -> bool:
    """An exited child its parent has not reaped yet (Linux /proc; False elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def _local_outcome(results_dir: Path, job_id: str) -> tuple[str, str | None] | None:
    """(SLURM-like state, detail) of a --cluster local job (its id is the controller's pid),
    from its process and its stderr (never from submitit's result pickle); None when that cannot
    be told."""
    try:
        pid = int(job_id)
        os.kill(pid, 0)
        if not _is_zombie(pid):
            return "RUNNING", None
    except ProcessLookupError:
        pass
    except PermissionError:
        return "RUNNING", None
    except (ValueError, OSError, OverflowError):
        return None
    stderr = _read_job_log_tail(results_dir, "local", job_id) or ""
    if _SUBMITIT_FAILURE in stderr or "Traceback (most recent call last)" in stderr:
        return "FAILED", error_line(stderr)
    if _SUBMITIT_SUCCESS in (_read_job_log_tail(results_dir, "local", job_id, "out") or ""):
        return "COMPLETED", None
    return "CANCELLED", "the local job's process ended without a result (killed?)"


def _record_end(run_dir: Path, job_id: str, seen: str, state: str, reason: str) -> bool | None:
    """Write ``state`` if the run is still in the state ``seen``, recorded for this job, and
    nobody works on it (we get its lock). True when written, False when not (someone else's
    turn), None when the store cannot be written (read-only, no flock)."""
    lock = rd.RunLock(run_dir)
    try:
        if not lock.acquire(wait=False):
            return False
    except (OSError, StoreError):  # a read-only store, a filesystem without flock
        return None
    try:
        status = rd.read_json(run_dir / rd.STATUS) or {}
        if status.get("state") != seen or str(status.get("submitit_job_id")) != job_id:
            return False
        if status.get("state") == rd.RUNNING and status.get("pid") is not None \
                and status.get("slurm_job_id") is None and status.get("cluster") == "slurm":
            return False  # taken over by a non-SLURM process (`atss-bench run`)
        try:
            rd.write_status(run_dir, state, reason=reason, finished=status.get("finished")
                            or rd.utc_now())
        except OSError:
            return None
        return True
    finally:
        lock.release()


def _submitted_runs(results_dir: Path, run_ids: Iterable[str] | None) -> list[tuple[Path, dict]]:
    runs_dir = Path(results_dir) / rd.RUNS
    wanted = set(run_ids) if run_ids is not None else None
    try:
        names = sorted(p.name for p in runs_dir.iterdir() if not p.name.startswith("."))
    except OSError:  # missing, not a folder, unreadable: no jobs to follow
        return []
    out = []
    for name in names:
        if wanted is not None and name not in wanted:
            continue
        if (runs_dir / name).is_symlink():
            continue
        status = rd.read_json(runs_dir / name / rd.STATUS)
        if status and status.get("submitit_job_id") and rd.status_problem(status) is None \
                and status.get("state") in rd.STATES:
            out.append((runs_dir / name, status))
    return out


def _job_order(status: Mapping[str, object]) -> tuple[int, ...]:
    """Submission order: job id 44_10 after 44_9."""
    parts = str(status.get("submitit_job_id", "")).split("_")
    return tuple(int(p) if p.isdigit() else -1 for p in parts)


def refresh_job_states(
    results_dir: str | Path,
    run_ids: Iterable[str] | None = None,
    *,
    record: bool = True,
    query: StateQuery = query_slurm_states,
) -> list[JobState]:
    """Every submitted run in ``results_dir`` (or only ``run_ids``) joined with its job's state;
    ended jobs whose run did not finish are recorded as cancelled / timed-out / failed
    (``record=False``: only reported, in ``JobState.state``, nothing written)."""
    submitted = _submitted_runs(Path(results_dir), run_ids)
    slurm_ids = sorted({str(s["submitit_job_id"]) for _, s in submitted
                        if (s.get("cluster") or "slurm") == "slurm" and s["state"] != rd.DONE})
    slurm_states = query(slurm_ids) if slurm_ids else {}
    if slurm_states is None:  # neither squeue nor sacct answered: every job may still be queued
        slurm_states = {job_id: UNREACHABLE for job_id in slurm_ids}
    out = []
    for run_dir, status in sorted(submitted, key=lambda item: _job_order(item[1])):
        try:
            out.append(_join(run_dir, status, slurm_states, record))
        except Exception as exc:  # noqa: BLE001  (one bad record never hides the others)
            out.append(JobState(run_dir.name, None, None, str(status.get("submitit_job_id")),
                                str(status.get("cluster") or "slurm"), "failed", "", None, None,
                                reason=f"could not read the job state: {exc}"))
    return out


def _failed_run_state(slurm_state: str) -> str | None:
    """A run that recorded its own failure while SLURM ended or requeued the job: a cancel or
    a time-out kills the run's data-loader workers first (the run then fails on their death);
    a requeued job will run it again."""
    word = slurm_state_word(slurm_state)
    if word == "CANCELLED":
        return rd.CANCELLED
    if word in TIMED_OUT_SLURM_STATES:
        return rd.TIMED_OUT
    if word in REQUEUE_WAIT_STATES:
        return rd.PENDING
    return None


def _end_reason(job_id: str, state: str, scheduler_state: str, detail: str | None) -> str:
    word = slurm_state_word(scheduler_state)
    if state == rd.CANCELLED:
        return f"job {job_id} cancelled" + (f" ({scheduler_state.strip()})" if word else "") \
            + (f": {detail}" if detail and "CANCELLED" not in detail else "")
    if state == rd.TIMED_OUT:
        return f"job {job_id} hit its time limit ({word})"
    what = "ended without finishing the run" if word == "COMPLETED" else f"ended {word}"
    return f"job {job_id} {what}" + (f": {detail}" if detail else "")


def _join(run_dir: Path, status: dict, slurm_states: Mapping[str, str],
          record: bool) -> JobState:
    results_dir = run_dir.parent.parent
    job_id = str(status["submitit_job_id"])
    cluster = str(status.get("cluster") or "slurm")
    scheduler_state, detail = "", None
    if cluster == "slurm":
        scheduler_state = slurm_states.get(job_id, "")
    elif cluster == "local" and status.get("state") in UNFINISHED:
        local = _local_outcome(results_dir, job_id)
        if local is not None:
            scheduler_state, detail = local
    state, reason = status["state"], status.get("reason")
    error, updated = None, False
    if state != rd.DONE:
        error = error_line(_read_job_log_tail(results_dir, cluster, job_id)) or detail
    new_state = store_state_for(scheduler_state) if state in UNFINISHED else \
        _failed_run_state(scheduler_state) if state == rd.FAILED else None
    if new_state is not None:
        why = _end_reason(job_id, new_state, scheduler_state, detail or error) \
            if new_state != rd.PENDING else f"{REQUEUED_BY_SLURM}; last attempt: {reason}"
        written = _record_end(run_dir, job_id, state, new_state, why) if record else None
        if written is not False:  # written, or shown only (dry run, read-only store)
            state, reason, updated = new_state, why, bool(written)
    meta = rd.read_json(run_dir / rd.META) or {}
    row_id, seed = meta.get("row_id"), meta.get("seed")
    stdout, stderr = (job_log_path(results_dir, cluster, job_id, s) for s in ("out", "err"))
    return JobState(
        run_id=run_dir.name, row_id=row_id if isinstance(row_id, str) else None,
        seed=seed if type(seed) is int else None, job_id=job_id, cluster=cluster, state=state,
        scheduler_state=scheduler_state, stdout=None if stdout is None else str(stdout),
        stderr=None if stderr is None else str(stderr), reason=reason, error_line=error,
        updated=updated)
