"""ClusterSettings -> a submitit executor (slurm, local or debug), and the sbatch text it submits.

One task (process) per GPU: ``tasks_per_node = gpus_per_node`` (at least 1), so a job on
``nodes x gpus_per_node`` GPUs is one DDP process group (see ``launch.submitit_job``).
"""
from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import submitit

from atss_bench.errors import LaunchError
from atss_bench.launch.settings import ClusterSettings

SUBMITIT_DIR = "submitit"  # results_dir/submitit/<job id>/: sbatch script, pickles, logs
MAP_COUNT_PLACEHOLDER = "nothing"


def job_folder(results_dir: Path, settings: ClusterSettings) -> Path:
    """submitit's folder pattern for a submission: one sub-folder per job (per array task)."""
    return Path(results_dir).absolute() / SUBMITIT_DIR / settings.cluster / "%j"


def executor_parameters(settings: ClusterSettings, name: str) -> dict[str, Any]:
    """``AutoExecutor.update_parameters`` keywords for these settings (generic + cluster_*)."""
    if settings.cluster == "debug":
        return {}
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": settings.time,
        "nodes": settings.nodes,
        "tasks_per_node": settings.tasks_per_node,
    }
    if settings.gpus_per_node:
        params["gpus_per_node"] = settings.gpus_per_node
    if settings.cluster == "local":
        if settings.nodes > 1:
            raise LaunchError(f"--cluster local runs on this machine: --nodes {settings.nodes} "
                              "is not possible", hint="use --nodes 1 or --cluster slurm")
        if settings.setup:
            params["local_setup"] = list(settings.setup)
        return params
    if settings.cpus_per_task is not None:
        params["cpus_per_task"] = settings.cpus_per_task
    if settings.mem_gb is not None:
        params["mem_gb"] = settings.mem_gb
    params["slurm_signal_delay_s"] = settings.signal_delay_s
    for key in ("partition", "account", "qos", "constraint", "array_parallelism"):
        value = getattr(settings, key)
        if value is not None:
            params[f"slurm_{key}"] = value
    if settings.setup:
        params["slurm_setup"] = list(settings.setup)
    return params


def executor_kwargs(settings: ClusterSettings) -> dict[str, Any]:
    """``AutoExecutor(...)`` constructor keywords (time-out requeues, the jobs' interpreter)."""
    if settings.cluster == "debug":
        return {}
    python = settings.python or shlex.quote(sys.executable)
    return {f"{settings.cluster}_max_num_timeout": settings.max_num_timeout,
            f"{settings.cluster}_python": python}


def check_cluster_available(settings: ClusterSettings) -> None:
    if settings.cluster == "slurm":
        missing = [tool for tool in ("sbatch", "srun", "sacct") if shutil.which(tool) is None]
        if missing:
            raise LaunchError(f"SLURM is not available here ({', '.join(missing)} not found)",
                              hint="submit from a SLURM login node, or use --cluster local")


def make_executor(results_dir: Path, settings: ClusterSettings, name: str) -> submitit.Executor:
    """A configured AutoExecutor for ``settings.cluster``; LaunchError for bad parameters."""
    check_cluster_available(settings)
    folder = job_folder(results_dir, settings)
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=settings.cluster,
                                         **executor_kwargs(settings))
        executor.update_parameters(**executor_parameters(settings, name))
    except (ValueError, NameError, AssertionError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LaunchError(f"submitit rejected the {settings.cluster} parameters: {first}") from None
    return executor


def sbatch_flags(results_dir: Path, settings: ClusterSettings, name: str,
                 num_tasks: int) -> list[str]:
    """The ``#SBATCH`` lines a job array of ``num_tasks`` would get (no cluster needed)."""
    from submitit.slurm import slurm as slurm_backend  # the text submitit itself would write

    params = {k.removeprefix("slurm_"): v for k, v in executor_parameters(settings, name).items()
              if not k.startswith("local_")}
    renamed = {"name": "job_name", "timeout_min": "time", "tasks_per_node": "ntasks_per_node"}
    params = {renamed.get(k, k): v for k, v in params.items()}
    if "mem_gb" in params:
        params["mem"] = slurm_backend._convert_mem(params.pop("mem_gb"))
    folder = job_folder(results_dir, settings)
    try:
        text = slurm_backend._make_sbatch_string(
            command=MAP_COUNT_PLACEHOLDER, folder=folder,
            map_count=num_tasks if num_tasks > 1 else None, **params)
    except (TypeError, ValueError) as exc:
        raise LaunchError(f"invalid SLURM parameters: {exc}") from None
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]
