"""`--device` on `run` and `check`: a choice the jobs inherit, bad ones exit 2 in one line."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.devices import DEVICE_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
CI_RECIPE = REPO_ROOT / "recipes" / "ci.yaml"
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def _restore_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands set the variable for the jobs they start; undone after each test."""
    monkeypatch.setenv(DEVICE_ENV, "auto")


@pytest.mark.parametrize("command", [("run", CI_RECIPE, "-p", "mini", "--dry-run"), ("check",)])
@pytest.mark.parametrize("bad", ["gpu", "cuda:0", "[red]x"])
def test_an_unknown_device_is_one_line_and_exit_2(command: tuple, bad: str,
                                                  tmp_path: Path) -> None:
    result = invoke(*command, "--device", bad, "--results", tmp_path)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device ") and "auto, cpu, cuda" in lines[0]
    assert "Traceback" not in result.output and not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_exit_2_before_anything_runs(tmp_path: Path) -> None:
    result = invoke("run", CI_RECIPE, "-p", "mini", "--device", "cuda", "--results", tmp_path)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == ("error: --device cuda, but torch sees no CUDA GPU here  "
                                     "(hint: --device cpu or auto, or a CUDA build of torch)")
    assert not any(tmp_path.iterdir())


def test_the_choice_reaches_the_jobs_through_the_environment(tmp_path: Path) -> None:
    result = invoke("run", CI_RECIPE, "-p", "mini", "--device", "cpu", "--dry-run",
                    "--results", tmp_path)
    assert result.exit_code == 0, result.output
    assert os.environ[DEVICE_ENV] == "cpu"


def test_run_without_device_keeps_the_environment(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert invoke("run", CI_RECIPE, "-p", "mini", "--dry-run", "--results", tmp_path).exit_code == 0
    assert os.environ[DEVICE_ENV] == "cpu"


def test_check_trains_on_cpu_unless_told_otherwise(tmp_path: Path) -> None:
    """The committed CI baseline's runs are CPU runs: CUDA (AMP) ones are not comparable."""
    result = invoke("check", "--baseline", tmp_path / "missing.json", "--results", tmp_path)
    assert result.exit_code == 2 and "missing.json" in result.output, result.output
    assert os.environ[DEVICE_ENV] == "cpu"
