"""`atss-bench submit --cluster slurm`: the paper's resources for COCO-scale (full profile) runs,
the time estimate in --dry-run, CPU-only full-profile submissions refused unless --force-cpu."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atss_bench.cli.main import app

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLE2 = REPO_ROOT / "recipes" / "table2.yaml"
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own ~/.config/atss-bench and ATSS_BENCH_* settings never leak into a test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in list(os.environ):
        if name.startswith("ATSS_BENCH_") and name != "ATSS_BENCH_CACHE":
            monkeypatch.delenv(name)


def sbatch(output: str, key: str) -> str | None:
    match = re.search(rf"^#SBATCH --{key}=(\S+)$", output, re.MULTILINE)
    return match.group(1) if match else None


def test_full_profile_dry_run_asks_for_the_papers_gpus_and_the_estimated_time(tmp_path) -> None:
    results = tmp_path / "results"
    result = invoke("submit", TABLE2, "--cluster", "slurm", "--dry-run", "--results", results)
    assert result.exit_code == 0, result.output
    out = result.output
    assert (sbatch(out, "gpus-per-node"), sbatch(out, "ntasks-per-node"), sbatch(out, "nodes"),
            sbatch(out, "time")) == ("8", "8", "1", "457")
    assert "gpus_per_node = 8  (paper: 8 GPUs on one node)" in out
    assert "time = 457  (estimate, see below)" in out
    estimate = next(line for line in out.splitlines() if line.startswith("time estimate: "))
    assert "90000 iterations x 0.20 s on each of 8 GPUs" in estimate
    assert "457 min per attempt, 1 attempt(s)" in estimate
    assert not results.exists()  # a dry run writes nothing


def test_given_gpus_and_time_win_and_the_requeues_cover_the_schedule(tmp_path) -> None:
    result = invoke("submit", TABLE2, "--cluster", "slurm", "--gpus-per-node", "4",
                    "--time", "120", "--rows", "iou_box", "--dry-run", "--results", tmp_path)
    assert result.exit_code == 0, result.output
    out = result.output
    assert (sbatch(out, "gpus-per-node"), sbatch(out, "time")) == ("4", "120")
    # (144000 s / 4 + 275 s) x 1.5 = 906.9 min: 8 attempts of 120 min, so 8 time-out requeues
    assert "max_num_timeout = 8  (estimate: 8 attempts)" in out
    assert "907" not in out and "120 min per attempt, 8 attempt(s)" in out


def test_cpu_only_full_profile_exits_2_with_one_line_and_a_hint(tmp_path) -> None:
    results = tmp_path / "results"
    result = invoke("submit", TABLE2, "--cluster", "slurm", "--gpus-per-node", "0",
                    "--results", results)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: these runs train on COCO")
    assert "gpus_per_node = 0, from --gpus-per-node" in lines[0]
    assert "--gpus-per-node 8" in lines[0] and "--force-cpu" in lines[0]
    assert not results.exists()  # refused before anything was planned or written


def test_cpu_only_from_the_config_file_is_refused_too(tmp_path, monkeypatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[cluster]\ngpus_per_node = 0\n')
    monkeypatch.setenv("ATSS_BENCH_CONFIG", str(config))
    result = invoke("submit", TABLE2, "--cluster", "slurm", "--dry-run", "--results", tmp_path)
    assert result.exit_code == 2 and f"from {config}" in result.output


def test_force_cpu_keeps_the_plain_defaults(tmp_path) -> None:
    result = invoke("submit", TABLE2, "--cluster", "slurm", "--gpus-per-node", "0",
                    "--force-cpu", "--dry-run", "--results", tmp_path)
    assert result.exit_code == 0, result.output
    out = result.output
    assert sbatch(out, "gpus-per-node") is None and sbatch(out, "time") == "720"
    assert "time estimate" not in out


def test_force_cpu_alone_means_no_gpus(tmp_path) -> None:
    """--force-cpu without --gpus-per-node is a CPU-only submission, not the paper's 8 GPUs."""
    result = invoke("submit", TABLE2, "--cluster", "slurm", "--force-cpu", "--dry-run",
                    "--results", tmp_path)
    assert result.exit_code == 0, result.output
    assert sbatch(result.output, "gpus-per-node") is None and sbatch(result.output, "time") == "720"


@pytest.mark.parametrize("args", [("--profile", "mini", "--cluster", "slurm"),
                                  ("--cluster", "local")])
def test_mini_profile_and_local_runs_keep_todays_defaults(tmp_path, args) -> None:
    result = invoke("submit", TABLE2, *args, "--dry-run", "--results", tmp_path)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "time estimate" not in out and "paper:" not in out
    if "slurm" in args:
        assert sbatch(out, "gpus-per-node") is None and sbatch(out, "time") == "720"
        assert sbatch(out, "ntasks-per-node") == "1"
    else:
        assert "gpus_per_node = 0  (default)" in out and "time = 720  (default)" in out
        assert "'timeout_min': 720" in out and "'gpus_per_node'" not in out
