"""Pytest plumbing for tests that run real jobs on a SLURM cluster.

Every test in this folder gets the ``slurm`` marker (deselect them with ``-m "not slurm"``).
Tests ask for the ``slurm_cluster`` fixture: it skips when no usable cluster answers, or fails
when ``ATSS_BENCH_REQUIRE_SLURM=1`` (CI sets it, so SLURM tests can never be skipped silently).
Bring a one-node cluster up with ``tests/slurm/cluster.sh start`` (root, Debian packages).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SLURM_TEST_DIR = Path(__file__).resolve().parent
REPO_ROOT = SLURM_TEST_DIR.parents[1]
REQUIRE_ENV = "ATSS_BENCH_REQUIRE_SLURM"
SKIP_REASON = (
    "SLURM cluster not running: start it with tests/slurm/cluster.sh start "
    "(needs root + Debian packages)"
)
USABLE_NODE_STATES = frozenset({"idle", "mixed", "allocated", "completing"})
PROBE_TIMEOUT_S = 20


@dataclass(frozen=True)
class SlurmCluster:
    """What the tests need to know about the running cluster."""

    partition: str  # the default partition
    nodes: tuple[str, ...]  # nodes of that partition in a usable state


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slurm: runs jobs on a real SLURM cluster (tests/slurm/cluster.sh start)"
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` deselection sees the items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLURM_TEST_DIR in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.slurm)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False
    )


def _first_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0][:200] if lines else f"exit code {done.returncode}"


def probe_cluster() -> SlurmCluster | str:
    """The running cluster, or why there is none usable (one line)."""
    missing = [tool for tool in ("scontrol", "sinfo", "sacct") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found"
    try:
        # `scontrol ping` answers at once; sinfo retries ~9 s when the controller is down.
        ping = _run("scontrol", "ping")
        if ping.returncode != 0:
            return f"scontrol ping: {_first_line(ping)}"
        # submitit reads job states through sacct: without accounting, results hang forever.
        sacct = _run("sacct", "--noheader", "--allocations", "--starttime=now", "--format=JobID")
        if sacct.returncode != 0:
            return f"accounting (sacct) failed: {_first_line(sacct)}"
        sinfo = _run("sinfo", "--noheader", "--format=%P|%T|%N")
    except subprocess.TimeoutExpired as err:
        return f"{err.cmd[0]} did not answer within {PROBE_TIMEOUT_S}s"
    if sinfo.returncode != 0:
        return f"sinfo failed: {_first_line(sinfo)}"
    partition, nodes = "", []
    for line in sinfo.stdout.splitlines():
        name, state, node_list = line.strip().split("|")
        if name.endswith("*") and state in USABLE_NODE_STATES:
            partition = name.rstrip("*")
            nodes.append(node_list)
    if not partition:
        return f"no usable node in the default partition: {sinfo.stdout.strip()!r}"
    return SlurmCluster(partition=partition, nodes=tuple(nodes))


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The running cluster; skips (or fails under ATSS_BENCH_REQUIRE_SLURM=1) without one."""
    found = probe_cluster()
    if isinstance(found, SlurmCluster):
        return found
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{SKIP_REASON} [{found}; {REQUIRE_ENV}=1 forbids skipping]", pytrace=False)
    pytest.skip(f"{SKIP_REASON} [{found}]")


@pytest.fixture
def slurm_executor(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    """Factory for a submitit AutoExecutor on the cluster whose jobs can import the project.

    Jobs run this interpreter with the repository root on PYTHONPATH (sbatch exports the
    submitting environment). Extra keyword arguments go to ``update_parameters``.
    """
    import submitit

    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT), *inherited]))

    def make(folder: Path | None = None, **parameters: Any) -> submitit.AutoExecutor:
        executor = submitit.AutoExecutor(
            folder=folder or tmp_path / "submitit",
            cluster="slurm",
            slurm_python=shlex.quote(sys.executable),  # the jobs use this very interpreter
        )
        defaults = {
            "slurm_partition": slurm_cluster.partition,
            "timeout_min": 5,
            "cpus_per_task": 1,
        }
        executor.update_parameters(**{**defaults, **parameters})
        return executor

    return make
