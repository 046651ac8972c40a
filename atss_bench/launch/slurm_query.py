"""Ask SLURM about jobs: squeue for live ones, sacct for ended ones, neither trusted alone.

squeue asks the controller (it knows a job the moment sbatch returns; a job it does not list is
out of the queue); sacct asks the accounting database (it knows ended jobs and how they ended, but
lags a second or two behind sbatch and fails when slurmdbd is down). When one fails the other's
answer stands; a job neither can vouch for is ``UNREACHABLE``, so that a caller never takes a
queued job for a gone one (and never submits its run a second time).
"""
from __future__ import annotations

import shutil
import subprocess

UNREACHABLE = "UNREACHABLE"  # not a SLURM state: neither squeue nor sacct could say
SACCT_TIMEOUT_S = 20.0


def _run(command: list[str], timeout_s: float) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def _squeue_states(main_ids: list[str], timeout_s: float) -> dict[str, str] | None:
    """Live jobs straight from the controller (sacct lags a second or two behind sbatch); a job
    not listed is not in the queue. None when squeue is missing or cannot reach the controller."""
    if shutil.which("squeue") is None:
        return None
    done = _run(["squeue", "--noheader", "--array", "--format=%i|%T", "--jobs",
                 ",".join(main_ids)], timeout_s)
    if done is None:
        return None
    if done.returncode != 0:  # "Invalid job id specified": none of the ids is queued any more
        return {} if "invalid job id" in done.stderr.lower() else None
    out = {}
    for line in done.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id and state:
            out[job_id] = state
    return out


def _sacct_states(main_ids: list[str], timeout_s: float) -> dict[str, str] | None:
    """Every job sacct knows, ended ones included (parsed by submitit); None when it fails."""
    if shutil.which("sacct") is None:
        return None
    from submitit.slurm.slurm import SlurmInfoWatcher  # only launch imports submitit

    command = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]
    for main_id in main_ids:
        command += ["-j", main_id]
    done = _run(command, timeout_s)
    if done is None or done.returncode != 0:
        return None
    try:
        info = SlurmInfoWatcher().read_info(done.stdout)
    except Exception:  # noqa: BLE001  (output we cannot parse: as if sacct had failed)
        return None
    return {job_id: str(fields.get("State", "")) for job_id, fields in info.items()}


def query_slurm_states(job_ids: list[str], timeout_s: float = SACCT_TIMEOUT_S
                       ) -> dict[str, str] | None:
    """The SLURM state of each job id (array tasks as ``"44_1"``): squeue for live jobs, else
    sacct. When one of them fails the other's answer stands; an id neither can vouch for is
    ``UNREACHABLE`` (squeue failed and sacct does not know it yet); None when both fail. Ids
    known to be out of the queue with no sacct record are left out."""
    if not job_ids:
        return {}
    wanted = [str(job_id) for job_id in job_ids]
    main_ids = sorted({job_id.split("_")[0] for job_id in wanted})
    live = _squeue_states(main_ids, timeout_s)
    ended = _sacct_states(main_ids, timeout_s)
    if live is None and ended is None:
        return None
    out = {}
    for job_id in wanted:
        state = (live or {}).get(job_id) or (ended or {}).get(job_id)
        if state and state != "UNKNOWN":
            out[job_id] = state
        elif live is None:  # not in sacct (yet): only squeue could have said it is gone
            out[job_id] = UNREACHABLE
    return out
