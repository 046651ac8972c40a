"""Where a result came from: code version, package versions, machine.

Nothing here imports torch or pycocotools: versions come from the installed distributions'
metadata, so recording provenance costs milliseconds.
"""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "atss-bench", "pycocotools", "numpy", "pandas")
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding atss_bench/


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_info(root: Path = _PACKAGE_ROOT) -> dict[str, Any]:
    """Commit and dirty flag of the atss_bench checkout; None for both outside a git checkout."""
    if not (root / ".git").exists():
        return {"git_commit": None, "git_dirty": None}
    commit = _git(["rev-parse", "HEAD"], root)
    changes = _git(["status", "--porcelain", "--untracked-files=no"], root)
    dirty = None if changes is None else bool(changes)
    return {"git_commit": commit, "git_dirty": dirty}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def slurm_job_id() -> str | None:
    """The id users see in squeue: ``<array job>_<task>`` for array tasks, else SLURM_JOB_ID."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def host_info() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": slurm_job_id()}


def collect_provenance() -> dict[str, Any]:
    """Code and environment provenance for metrics.json (the engine adds device, speed, ...)."""
    return {**git_info(), "versions": package_versions(), "host": socket.gethostname(),
            "slurm_job_id": slurm_job_id()}
