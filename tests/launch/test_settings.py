"""Cluster settings: flags > environment > config file > defaults, and their submitit mapping."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from atss_bench.errors import ConfigError, LaunchError
from atss_bench.launch.executors import (
    executor_kwargs,
    executor_parameters,
    render_sbatch_script,
    sbatch_flags,
)
from atss_bench.launch.settings import ClusterSettings, default_config_path, resolve_settings

CONFIG = """\
[cluster]
partition = "gpu"
gpus_per_node = 8
cpus_per_task = 10
time = 1440
account = "vision"
setup = ["module load cuda/12.1"]

[other]
ignored = true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_config_file_or_environment(tmp_path: Path) -> None:
    settings, sources = resolve_settings({}, environ={"XDG_CONFIG_HOME": str(tmp_path)})
    assert settings == ClusterSettings()
    assert (settings.cluster, settings.nodes, settings.gpus_per_node, settings.time) == \
        ("slurm", 1, 0, 720)
    assert sources == {}


def test_config_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG)
    env = {"ATSS_BENCH_CONFIG": str(path), "ATSS_BENCH_PARTITION": "a100",
           "ATSS_BENCH_TIME": "60", "ATSS_BENCH_QOS": ""}
    settings, sources = resolve_settings({"time": 30, "nodes": None, "qos": None}, environ=env)
    assert settings.partition == "a100" and sources["partition"] == "ATSS_BENCH_PARTITION"
    assert settings.time == 30 and sources["time"] == "--time"
    assert settings.gpus_per_node == 8 and sources["gpus_per_node"] == str(path)
    assert settings.account == "vision" and settings.setup == ["module load cuda/12.1"]
    assert settings.qos is None and "qos" not in sources  # empty variable = not set
    assert settings.nodes == 1 and "nodes" not in sources  # None flag = not given
    assert settings.tasks_per_node == 8  # one process per GPU


def test_default_config_path_follows_xdg_and_override(tmp_path: Path) -> None:
    assert default_config_path({"XDG_CONFIG_HOME": "/x"}) == Path("/x/atss-bench/config.toml")
    assert default_config_path({"ATSS_BENCH_CONFIG": "/y/c.toml"}) == Path("/y/c.toml")
    assert default_config_path({}).parts[-3:] == (".config", "atss-bench", "config.toml")


def test_setup_lines_from_environment_split_on_semicolons() -> None:
    settings, _ = resolve_settings({}, environ={"ATSS_BENCH_SETUP": "module load a; export B=1"})
    assert settings.setup == ["module load a", "export B=1"]


def test_unknown_key_in_config_file_names_it_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, "[cluster]\npartiton = 'gpu'\n")
    with pytest.raises(ConfigError) as err:
        resolve_settings({}, environ={"ATSS_BENCH_CONFIG": str(path)})
    assert "cluster.partiton" in err.value.message and str(path) in err.value.message
    assert err.value.hint == "did you mean 'partition'?"


def test_bad_value_names_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ATSS_BENCH_GPUS_PER_NODE: gpus_per_node"):
        resolve_settings({}, environ={"ATSS_BENCH_GPUS_PER_NODE": "eight"})
    with pytest.raises(ConfigError, match="--cluster: cluster") as err:
        resolve_settings({"cluster": "kubernetes"}, environ={})
    assert "slurm, local, debug" in (err.value.hint or "")


def test_invalid_toml_and_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_settings({}, environ={"ATSS_BENCH_CONFIG": str(write(tmp_path, "[cluster\n"))})
    with pytest.raises(ConfigError, match="not found"):
        resolve_settings({}, environ={"ATSS_BENCH_CONFIG": str(tmp_path / "missing.toml")})


def test_slurm_parameters_one_task_per_gpu() -> None:
    settings = ClusterSettings(partition="gpu", gpus_per_node=8, nodes=2, cpus_per_task=10,
                               mem_gb=64, time=1440, account="vision", qos="high",
                               constraint="volta32gb", array_parallelism=4)
    assert executor_parameters(settings, "atss-table7-full") == {
        "name": "atss-table7-full", "timeout_min": 1440, "nodes": 2, "tasks_per_node": 8,
        "gpus_per_node": 8, "cpus_per_task": 10, "mem_gb": 64, "slurm_signal_delay_s": 120,
        "slurm_partition": "gpu", "slurm_account": "vision", "slurm_qos": "high",
        "slurm_constraint": "volta32gb", "slurm_array_parallelism": 4,
    }
    kwargs = executor_kwargs(settings)
    assert kwargs["slurm_max_num_timeout"] == 3 and kwargs["slurm_python"]


def test_cpu_only_job_asks_for_no_gpus_and_one_task() -> None:
    params = executor_parameters(ClusterSettings(), "x")
    assert "gpus_per_node" not in params and params["tasks_per_node"] == 1
    assert not any(k in params for k in ("slurm_partition", "cpus_per_task", "mem_gb"))


def test_local_and_debug_parameters() -> None:
    local = executor_parameters(ClusterSettings(cluster="local", gpus_per_node=2, time=30), "x")
    assert local == {"name": "x", "timeout_min": 30, "nodes": 1, "tasks_per_node": 2,
                     "gpus_per_node": 2}
    with pytest.raises(LaunchError, match="--nodes 2"):
        executor_parameters(ClusterSettings(cluster="local", nodes=2), "x")
    assert executor_parameters(ClusterSettings(cluster="debug", gpus_per_node=8), "x") == {}


def test_sbatch_header_of_a_job_array(tmp_path: Path) -> None:
    settings = ClusterSettings(partition="gpu", gpus_per_node=8, nodes=2, mem_gb=16, time=30,
                               account="vision", array_parallelism=2)
    lines = sbatch_flags(tmp_path, settings, "atss-table2-mini", 4)
    for expected in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu", "#SBATCH --nodes=2",
                     "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                     "#SBATCH --mem=16GB", "#SBATCH --time=30", "#SBATCH --account=vision",
                     "#SBATCH --job-name=atss-table2-mini", "#SBATCH --signal=USR2@120",
                     f"#SBATCH --output={tmp_path}/submitit/slurm/%A_%a/%A_%a_0_log.out"):
        assert expected in lines, (expected, lines)
    single = sbatch_flags(tmp_path, ClusterSettings(), "one", 1)
    assert not any(line.startswith("#SBATCH --array") for line in single)


# --- sbatch safety: every value that reaches the script is checked, whatever its source ---------

HOSTILE = ["gpu\nrm -rf ~", "gp\ru", "gpu part", "gpu'", 'gpu"', "$(id)", "`id`", "gpu;id",
           "gpu\x00", "", "g" * 129]
SBATCH_FIELDS = ["partition", "account", "qos", "constraint"]


def _source_cases(tmp_path: Path, field: str, value: str) -> list[tuple[dict, dict, str]]:
    """(flags, environ, the source the error must name) for one value from each source."""
    config = tmp_path / "config.toml"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
        .replace("\r", "\\r").replace("\x00", "\\u0000")
    config.write_text(f'[cluster]\n{field} = "{escaped}"\n')
    return [({field: value}, {}, f"--{field}: {field}:"),
            ({}, {f"ATSS_BENCH_{field.upper()}": value}, f"ATSS_BENCH_{field.upper()}: {field}:"),
            ({}, {"ATSS_BENCH_CONFIG": str(config)}, f"{config}: cluster.{field}:")]


@pytest.mark.parametrize("field", SBATCH_FIELDS)
@pytest.mark.parametrize("value", HOSTILE)
def test_unsafe_sbatch_value_from_any_source_names_source_and_value(
        tmp_path: Path, field: str, value: str) -> None:
    for flags, environ, where in _source_cases(tmp_path, field, value):
        if not value.strip() and environ and "ATSS_BENCH_CONFIG" not in environ:
            continue  # an empty or blank variable means "not set"
        with pytest.raises(ConfigError) as err:
            resolve_settings(flags, environ=environ)
        message = err.value.message
        assert message.startswith(where), message
        assert repr(value)[:100] in message and "\n" not in str(err.value)


@pytest.mark.parametrize("field,value", [
    ("partition", "gpu"), ("partition", "a100,v100-32g"), ("qos", "high_prio"),
    ("account", "def-prof.lab+x"), ("constraint", "[rack1|rack2]&volta32gb*2"),
    ("constraint", "(knl&snc4):x=1,y"),
])
def test_ordinary_slurm_names_pass(field: str, value: str) -> None:
    settings, sources = resolve_settings({field: value}, environ={})
    assert getattr(settings, field) == value and sources[field] == f"--{field}"


def test_comma_lists_must_be_well_formed() -> None:
    for value in ("a,,b", ",a", "a,"):
        with pytest.raises(ConfigError, match="separated by single commas"):
            resolve_settings({"partition": value}, environ={})
    with pytest.raises(ConfigError, match="character ',' is not allowed"):
        resolve_settings({"account": "a,b"}, environ={})


def test_setup_and_python_are_single_lines_from_file_or_environment_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ATSS_BENCH_SETUP: setup: must be a single line"):
        resolve_settings({}, environ={"ATSS_BENCH_SETUP": "module load a\nrm -rf ~"})
    config = write(tmp_path, '[cluster]\nsetup = ["ok", "module load a\\rrm -rf ~"]\n')
    with pytest.raises(ConfigError) as err:
        resolve_settings({}, environ={"ATSS_BENCH_CONFIG": str(config)})
    assert err.value.message.startswith(f"{config}: cluster.setup: must be a single line")
    assert "'\\r'" in err.value.message
    with pytest.raises(ConfigError, match=r"^ATSS_BENCH_PYTHON: python: must be a single line"):
        resolve_settings({}, environ={"ATSS_BENCH_PYTHON": "python3\x00"})
    for field, value in (("setup", ["module load a"]), ("python", "python3")):
        with pytest.raises(ConfigError, match=f"^--{field}: {field} is shell text"):
            resolve_settings({field: value}, environ={})
    shell, _ = resolve_settings({}, environ={"ATSS_BENCH_SETUP": "export X=$HOME; cd 'a b'"})
    assert shell.setup == ["export X=$HOME", "cd 'a b'"]  # shell by design, one line each


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_memory_must_be_finite(value: str) -> None:
    with pytest.raises(ConfigError, match="^ATSS_BENCH_MEM_GB: mem_gb: Input should be a finite"):
        resolve_settings({}, environ={"ATSS_BENCH_MEM_GB": value})


def test_unsafe_job_name_or_results_folder_never_reaches_a_script(tmp_path: Path) -> None:
    for name in ("atss-table2\nrm -rf ~-mini", "atss table", "atss-$(id)"):
        with pytest.raises(ConfigError, match=r"^job name "):
            executor_parameters(ClusterSettings(), name)
        with pytest.raises(ConfigError, match=r"^job name "):
            render_sbatch_script(tmp_path, ClusterSettings(), name, 2)
    for folder in ("res\nults", "res%jults"):
        with pytest.raises(ConfigError, match="cannot go into a job script"):
            render_sbatch_script(tmp_path / folder, ClusterSettings(), "atss-table2-mini", 1)
    assert not any(tmp_path.iterdir())  # nothing written


# The scripts submitit wrote for `atss-bench submit recipes/table2.yaml --profile mini
# --partition gpu --gpus-per-node 2 --mem-gb 16 --account vision` (4 runs; --rows iou_box: 1),
# captured from a fake sbatch before the checks above existed: ordinary scripts stay the same.
GOLDEN_HEADER = """\
#!/bin/bash

# Parameters
#SBATCH --account=vision
{array}#SBATCH --error={folder}/submitit/slurm/{job}/{job}_0_log.err
#SBATCH --gpus-per-node=2
#SBATCH --job-name=atss-table2-mini
#SBATCH --mem=16GB
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --open-mode=append
#SBATCH --output={folder}/submitit/slurm/{job}/{job}_0_log.out
#SBATCH --partition=gpu
#SBATCH --signal=USR2@120
#SBATCH --time=720
#SBATCH --wckey=submitit
"""
GOLDEN_COMMAND = """
# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output {folder}/submitit/slurm/{job}/{job}_%t_log.out \
--error {folder}/submitit/slurm/{job}/{job}_%t_log.err {python} -u -m submitit.core._submit \
{folder}/submitit/slurm/%j
"""


def golden_script(folder: Path, num_tasks: int, setup: tuple[str, ...] = ()) -> str:
    """The expected sbatch script (``folder`` must need no shell quoting)."""
    job = "%A_%a" if num_tasks > 1 else "%j"
    array = f"#SBATCH --array=0-{num_tasks - 1}%{num_tasks}\n" if num_tasks > 1 else ""
    text = GOLDEN_HEADER.format(array=array, folder=folder, job=job)
    if setup:
        text += "\n# setup\n" + "".join(f"{line}\n" for line in setup)
    return text + GOLDEN_COMMAND.format(folder=folder, job=job, python=shlex.quote(sys.executable))


def test_rendered_script_is_what_submitit_wrote_before(tmp_path: Path) -> None:
    settings = ClusterSettings(partition="gpu", gpus_per_node=2, mem_gb=16, account="vision")
    for num_tasks in (4, 1):
        assert render_sbatch_script(tmp_path, settings, "atss-table2-mini", num_tasks) == \
            golden_script(tmp_path, num_tasks)
    with_setup = settings.model_copy(update={"setup": ["module load cuda/12.1", "export A=$B"]})
    assert render_sbatch_script(tmp_path, with_setup, "atss-table2-mini", 1) == \
        golden_script(tmp_path, 1, ("module load cuda/12.1", "export A=$B"))
