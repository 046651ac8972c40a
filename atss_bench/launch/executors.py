"""ClusterSettings -> a submitit executor (slurm, local or debug), and the sbatch text it submits.

One task (process) per GPU: ``tasks_per_node = gpus_per_node`` (at least 1), so a job on
``nodes x gpus_per_node`` GPUs is one DDP process group (see ``launch.submitit_job``).

``render_sbatch_script`` is the script a submission would hand to sbatch, built by submitit's own
code (its SlurmExecutor, minus the check that srun exists), so ``submit --dry-run`` shows exactly
what would run. Every value in it was checked on the way in (``launch.settings``); the job name
and the job folder are checked here, where they are rendered.
"""
from __future__ import annotations

import shlex
import shutil
import sys
import unicodedata
from pathlib import Path
from typing import Any

import submitit
from submitit.slurm import slurm as slurm_backend

from atss_bench.errors import ConfigError, LaunchError
from atss_bench.launch.settings import ClusterSettings, check_job_name

SUBMITIT_DIR = "submitit"  # results_dir/submitit/<job id>/: sbatch script, pickles, logs


def job_folder(results_dir: Path, settings: ClusterSettings) -> Path:
    """submitit's folder pattern for a submission: one sub-folder per job (per array task).

    The folder is written into ``#SBATCH --output`` lines and the job's command, so a control
    character (a newline ends the line) or, for SLURM, a ``%`` (a file-name pattern) is refused."""
    results_dir = Path(results_dir).absolute()
    text = str(results_dir)
    percent = "%" if settings.cluster == "slurm" else ""
    bad = next((c for c in text if c in percent or unicodedata.category(c) in ("Cc", "Zl", "Zp")),
               None)
    if bad is not None:
        raise ConfigError(f"results folder {text!r}: character {bad!r} cannot go into a job "
                          "script", hint="use a results folder without control characters or %")
    return results_dir / SUBMITIT_DIR / settings.cluster / "%j"


def executor_parameters(settings: ClusterSettings, name: str) -> dict[str, Any]:
    """``AutoExecutor.update_parameters`` keywords for these settings (generic + cluster_*)."""
    if settings.cluster == "debug":
        return {}
    params: dict[str, Any] = {
        "name": check_job_name(name),
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


class _ScriptOnlySlurmExecutor(slurm_backend.SlurmExecutor):
    """submitit's SlurmExecutor that needs no srun here: it renders scripts, never submits."""

    @classmethod
    def affinity(cls) -> int:
        return 1

    def _submit_command(self, command: str) -> Any:  # pragma: no cover  (never called)
        raise LaunchError("internal: the dry-run executor cannot submit")


def _slurm_parameters(executor: slurm_backend.SlurmExecutor,
                      params: dict[str, Any]) -> dict[str, Any]:
    """AutoExecutor's translation for slurm: generic keys converted, ``slurm_`` keys unprefixed."""
    generic = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    specific = {k.removeprefix("slurm_"): v for k, v in params.items() if k.startswith("slurm_")}
    return {**executor._convert_parameters(generic), **specific}


def render_sbatch_script(results_dir: Path, settings: ClusterSettings, name: str,
                         num_tasks: int) -> str:
    """The sbatch script submitting ``num_tasks`` runs would write (a job array when > 1), as
    submitit's SlurmExecutor builds it (``_internal_process_submissions``); no cluster needed."""
    slurm = settings.model_copy(update={"cluster": "slurm"})
    params = executor_parameters(slurm, name)
    executor = _ScriptOnlySlurmExecutor(job_folder(results_dir, slurm),
                                        max_num_timeout=slurm.max_num_timeout,
                                        python=executor_kwargs(slurm)["slurm_python"])
    try:
        executor.update_parameters(**_slurm_parameters(executor, params))
    except (ValueError, TypeError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LaunchError(f"invalid SLURM parameters: {first}") from None
    if num_tasks > 1:
        executor.parameters["map_count"] = num_tasks
    return executor._make_submission_file_text(executor._submitit_command_str, "dry-run")


def sbatch_flags(results_dir: Path, settings: ClusterSettings, name: str,
                 num_tasks: int) -> list[str]:
    """The ``#SBATCH`` lines of ``render_sbatch_script`` (no cluster needed)."""
    text = render_sbatch_script(results_dir, settings, name, num_tasks)
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]
