"""A finished CPU run is never reused as a CUDA run of the same id, nor the other way round."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.devices import DEVICE_ENV, recorded_device
from atss_bench.job import DeviceMismatchError, plan_runs, refuse_conflicts, run_planned
from atss_bench.job import rundir as rd
from atss_bench.recipes import load_recipe

REPO_ROOT = Path(__file__).resolve().parents[2]
TABLE4 = REPO_ROOT / "recipes" / "table4.yaml"


@pytest.mark.parametrize(("device", "kind"), [
    ("cpu", "cpu"), ("cuda (NVIDIA H200)", "cuda"), ("cuda:1", "cuda"), (" CUDA ", "cuda"),
    ("mps", None), ("", None), (None, None), (3, None), (["cuda"], None), ("x" * 100_000, None)])
def test_the_device_type_a_record_names(device: object, kind: str | None) -> None:
    assert recorded_device({"device": device}) == kind
    for provenance in (None, {}, [], ["cuda"], "cuda", 7):  # whatever a record holds is data
        assert recorded_device(provenance) is None


def _trained_on(device: str):
    def train(config, run_dir, *, data_root=None, progress=True):
        metrics = {m: 30.0 for m in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")}
        return {"metrics": metrics, "provenance": {"device": device, "world_size": 1}}
    return train


@pytest.fixture()
def cuda_store(tmp_path: Path) -> tuple[Path, list]:
    experiments = load_recipe(TABLE4).experiments("mini", seeds=1, rows=["k3", "k7"])
    run_planned(tmp_path, plan_runs(tmp_path, experiments[:1]),
                train_fn=_trained_on("cuda (NVIDIA H200)"))
    return tmp_path, experiments


def test_a_cuda_record_is_a_conflict_for_a_cpu_run(cuda_store) -> None:
    store, experiments = cuda_store
    k3 = experiments[0].run_id
    plan = plan_runs(store, experiments, device="cpu")
    assert [p.action for p in plan] == ["conflict", "run"] and plan[0].conflict == "device"
    assert plan[0].detail == (f"run {k3} (k3 seed 0) was trained on cuda; here it would train "
                              "on cpu, another sample of the same run id")
    with pytest.raises(DeviceMismatchError) as caught:
        refuse_conflicts(plan)
    assert caught.value.message == plan[0].detail and "--device" in caught.value.hint
    # the same device, an unknown one (submit) or --force: no conflict
    assert [p.action for p in plan_runs(store, experiments, device="cuda")] == ["skip", "run"]
    assert [p.action for p in plan_runs(store, experiments)] == ["skip", "run"]
    assert [p.action for p in plan_runs(store, experiments, device="cpu", force=True)] == \
        ["rerun", "run"]


def test_run_refuses_it_in_one_line_and_keeps_the_record(cuda_store,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store, experiments = cuda_store
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    metrics = rd.run_dir_for(store, experiments[0].run_id) / rd.METRICS
    before = metrics.read_bytes()
    result = CliRunner().invoke(app, ["run", str(TABLE4), "-p", "mini", "--rows", "k3,k7",
                                      "--results", str(store)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: run {experiments[0].run_id} (k3 seed 0)"
                                                   " was trained on cuda; here it would train on cpu")
    assert metrics.read_bytes() == before
    assert not rd.run_dir_for(store, experiments[1].run_id).exists()  # nothing trained
