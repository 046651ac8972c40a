"""Join the store with the scheduler: what SLURM (or a local job) says about submitted runs.

A submitted run's status.json carries ``submitit_job_id`` (e.g. ``"44_1"``), ``cluster``,
``submitit_folder`` and the task's ``stdout`` / ``stderr`` paths (written by ``launch.submit``).
``refresh_job_states`` asks sacct (through submitit's parser) about every such run still recorded
as pending or running, and when the job is over but the run did not finish, records why:

    SLURM CANCELLED*                      -> cancelled
    SLURM TIMEOUT / DEADLINE              -> timed-out
    SLURM FAILED / OUT_OF_MEMORY / ... /
    COMPLETED without a finished run      -> failed, reason = the last line of the task's stderr

The write happens under the run's lock, after re-reading status.json, so a job that is working on
the run (it holds the lock) or that just finished is never overwritten. Runs are independent: one
unreadable record or failed job never hides the others.
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from atss_bench.job import rundir as rd

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
_TAIL_BYTES = 16384
SACCT_TIMEOUT_S = 20.0
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
    scheduler_state: str  # sacct's State ("RUNNING", "CANCELLED by 0"), "" when not asked
    stdout: str | None
    stderr: str | None
    reason: str | None = None
    error_line: str | None = None  # last line of stderr, for runs that did not finish
    updated: bool = False  # this refresh wrote the state into status.json

    @property
    def scheduler_active(self) -> bool:
        return slurm_state_word(self.scheduler_state) in ACTIVE_SLURM_STATES

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
    if not word or word == "UNKNOWN" or word in ACTIVE_SLURM_STATES:
        return None
    if word == "CANCELLED":
        return rd.CANCELLED
    if word in TIMED_OUT_SLURM_STATES:
        return rd.TIMED_OUT
    return rd.FAILED  # FAILED, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL, PREEMPTED, COMPLETED, ...


def last_error_line(path: str | Path | None) -> str | None:
    """The last meaningful line of a task's stderr: the exception line of a traceback, else the
    scheduler's own last word (``slurmstepd: error: *** JOB 45 ... CANCELLED ...``)."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - _TAIL_BYTES))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    lines = [line.strip() for line in lines if line.strip()]
    own = [line for line in lines if not _SCHEDULER_LINE.match(line)
           and not line.startswith(("Traceback", "^", "File "))]
    banners = [line for line in lines if "***" in line]  # slurmstepd: *** JOB 45 CANCELLED ***
    errors = [line for line in lines if "error" in line.lower()]
    chosen = next((group[-1] for group in (own, banners, errors, lines) if group), None)
    return chosen[:300] if chosen else None


def _run(command: list[str], timeout_s: float) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def _squeue_states(main_ids: list[str], timeout_s: float) -> dict[str, str]:
    """Live jobs straight from the controller (sacct lags a second or two behind sbatch)."""
    if shutil.which("squeue") is None:
        return {}
    done = _run(["squeue", "--noheader", "--array", "--format=%i|%T", "--jobs",
                 ",".join(main_ids)], timeout_s)
    if done is None or done.returncode != 0:  # e.g. none of the ids is known any more
        return {}
    out = {}
    for line in done.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id and state:
            out[job_id] = state
    return out


def query_slurm_states(job_ids: list[str], timeout_s: float = SACCT_TIMEOUT_S
                       ) -> dict[str, str] | None:
    """The SLURM state of each job id (array tasks as ``"44_1"``): squeue for live jobs, else
    sacct (parsed by submitit). None when sacct is missing, fails or hangs; ids neither knows
    are left out."""
    if not job_ids:
        return {}
    if shutil.which("sacct") is None:
        return None
    from submitit.slurm.slurm import SlurmInfoWatcher  # only launch imports submitit

    wanted = [str(job_id) for job_id in job_ids]
    main_ids = sorted({job_id.split("_")[0] for job_id in wanted})
    live = _squeue_states(main_ids, timeout_s)
    command = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]
    for main_id in main_ids:
        command += ["-j", main_id]
    done = _run(command, timeout_s)
    if done is None or done.returncode != 0:
        return None
    info = SlurmInfoWatcher().read_info(done.stdout)
    out = {}
    for job_id in wanted:
        state = live.get(job_id) or info.get(job_id, {}).get("State")
        if state and state != "UNKNOWN":
            out[job_id] = state
    return out


def _is_zombie(pid: int) -> bool:
    """An exited child its parent has not reaped yet (Linux /proc; False elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def _local_outcome(status: Mapping[str, object]) -> tuple[str, str | None] | None:
    """(SLURM-like state, detail) of a --cluster local job (its id is the controller's pid);
    None when that cannot be told."""
    try:
        pid = int(str(status.get("submitit_job_id")))
        os.kill(pid, 0)
        if not _is_zombie(pid):
            return "RUNNING", None
    except ProcessLookupError:
        pass
    except PermissionError:
        return "RUNNING", None
    except (ValueError, OSError):
        return None
    folder = status.get("submitit_folder")
    result = Path(str(folder)) / f"{status.get('submitit_job_id')}_0_result.pkl" if folder else None
    try:
        with open(result, "rb") as handle:  # type: ignore[arg-type]
            outcome, detail = pickle.load(handle)
    except Exception:  # noqa: BLE001  (no result: the process was killed)
        return "CANCELLED", "the local job's process ended without a result (killed?)"
    if outcome != "error":
        return "COMPLETED", None
    lines = str(detail).strip().splitlines()
    return "FAILED", (lines[-1] if lines else None)


def _record_end(run_dir: Path, job_id: str, seen: str, state: str, reason: str) -> bool:
    """Write ``state`` if the run is still in the state ``seen``, recorded for this job, and
    nobody works on it (we get its lock). True when written."""
    lock = rd.RunLock(run_dir)
    if not lock.acquire(wait=False):
        return False
    try:
        status = rd.read_json(run_dir / rd.STATUS) or {}
        if status.get("state") != seen or str(status.get("submitit_job_id")) != job_id:
            return False
        if status.get("state") == rd.RUNNING and status.get("pid") is not None \
                and status.get("slurm_job_id") is None and status.get("cluster") == "slurm":
            return False  # taken over by a non-SLURM process (`atss-bench run`)
        rd.write_status(run_dir, state, reason=reason, finished=status.get("finished")
                        or rd.utc_now())
        return True
    finally:
        lock.release()


def _submitted_runs(results_dir: Path, run_ids: Iterable[str] | None) -> list[tuple[Path, dict]]:
    runs_dir = Path(results_dir) / rd.RUNS
    wanted = set(run_ids) if run_ids is not None else None
    try:
        names = sorted(p.name for p in runs_dir.iterdir() if not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        if wanted is not None and name not in wanted:
            continue
        status = rd.read_json(runs_dir / name / rd.STATUS)
        if status and status.get("submitit_job_id"):
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
                        if s.get("cluster", "slurm") == "slurm" and s.get("state") != rd.DONE})
    slurm_states = query(slurm_ids) if slurm_ids else {}
    out = []
    for run_dir, status in sorted(submitted, key=lambda item: _job_order(item[1])):
        try:
            out.append(_join(run_dir, status, slurm_states, record))
        except Exception as exc:  # noqa: BLE001  (one bad record never hides the others)
            out.append(JobState(run_dir.name, None, None, str(status.get("submitit_job_id")),
                                str(status.get("cluster", "?")), "failed", "", None, None,
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


def _join(run_dir: Path, status: dict, slurm_states: Mapping[str, str] | None,
          record: bool) -> JobState:
    job_id = str(status["submitit_job_id"])
    cluster = str(status.get("cluster", "slurm"))
    scheduler_state, detail = "", None
    if cluster == "slurm":
        scheduler_state = (slurm_states or {}).get(job_id, "")
    elif cluster == "local" and status.get("state") in UNFINISHED:
        local = _local_outcome(status)
        if local is not None:
            scheduler_state, detail = local
    state, reason = status.get("state", rd.PENDING), status.get("reason")
    error_line, updated = None, False
    if state != rd.DONE:
        error_line = last_error_line(status.get("stderr")) or detail
    new_state = store_state_for(scheduler_state) if state in UNFINISHED else \
        _failed_run_state(scheduler_state) if state == rd.FAILED else None
    if new_state is not None:
        why = _end_reason(job_id, new_state, scheduler_state, detail or error_line) \
            if new_state != rd.PENDING else f"{REQUEUED_BY_SLURM}; last attempt: {reason}"
        if not record:
            state, reason = new_state, why
        elif _record_end(run_dir, job_id, state, new_state, why):
            state, reason, updated = new_state, why, True
    meta = rd.read_json(run_dir / rd.META) or {}
    return JobState(
        run_id=run_dir.name, row_id=meta.get("row_id"), seed=meta.get("seed"), job_id=job_id,
        cluster=cluster, state=state, scheduler_state=scheduler_state,
        stdout=status.get("stdout"), stderr=status.get("stderr"), reason=reason,
        error_line=error_line, updated=updated)
