"""A stored run is reused or resumed only on the dataset it was made on (content, not path)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import atss_bench.job.dataset as job_dataset
from atss_bench.cli.main import app
from atss_bench.config import DataConfig
from atss_bench.data.identity import resolve_dataset_identity
from atss_bench.errors import DataError
from atss_bench.job import (DatasetMismatchError, mark_pending, plan_runs, refuse_conflicts,
                            run_experiment_job)
from atss_bench.job import rundir as rd
from atss_bench.job.dataset import WAY_OUT
from atss_bench.recipes import METRICS, load_recipe
from tests.data.tiny_coco import write_tiny_coco

CALLS: list[str] = []


def fake_train(config, run_dir, *, data_root=None, progress=True):
    """Writes a checkpoint and a log line; AP 30 (k3), 31 (k5), 32 (k7)."""
    CALLS.append(str(data_root))
    (Path(run_dir) / rd.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / rd.CHECKPOINTS / "ckpt_00000001.pt").write_text("state")
    with open(Path(run_dir) / rd.LOG, "a") as log:
        log.write(json.dumps({"iter": 1, "max_iter": 1}) + "\n")
    ap = 30.0 + (config.model.assign.topk - 3) / 2
    return {"metrics": {m: ap for m in METRICS}, "provenance": {"device": "cpu"}}


def failing_train(config, run_dir, *, data_root=None, progress=True):
    fake_train(config, run_dir, data_root=data_root)
    raise RuntimeError("killed at iteration 1")


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    CALLS.clear()
    monkeypatch.setenv("ATSS_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ATSS_BENCH_DATA", raising=False)


@pytest.fixture()
def data(tmp_path: Path) -> tuple[Path, Path]:
    """Two datasets with the same layout and different content."""
    return write_tiny_coco(tmp_path / "coco-a"), write_tiny_coco(tmp_path / "coco-b", variant=1)


def coco_experiments(rows=("k3",)):
    return load_recipe("recipes/table4.yaml").experiments("full", rows=list(rows))


def fingerprint(root: Path) -> str:
    return resolve_dataset_identity(DataConfig(kind="coco"), str(root)).fingerprint


def files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != rd.LOCK}


def test_the_dataset_is_recorded_in_meta_and_metrics(tmp_path: Path, data) -> None:
    exp = coco_experiments()[0]
    record = run_experiment_job(tmp_path / "r", exp, train_fn=fake_train, data_root=str(data[0]))
    meta = rd.read_json(rd.run_dir_for(tmp_path / "r", exp.run_id) / rd.META)
    assert meta["dataset"]["fingerprint"] == fingerprint(data[0]) and meta["dataset"]["name"] \
        == "coco-a"
    assert record["provenance"]["dataset"] == meta["dataset"]
    assert record["run_id"] == exp.run_id  # the run id is still the config hash


def test_the_same_data_moved_to_another_path_keeps_the_run(tmp_path: Path, data) -> None:
    exp = coco_experiments()[0]
    first = run_experiment_job(tmp_path / "r", exp, train_fn=fake_train, data_root=str(data[0]))
    moved = tmp_path / "moved" / "coco"
    shutil.move(str(data[0]), moved)
    again = run_experiment_job(tmp_path / "r", exp, train_fn=fake_train, data_root=str(moved))
    assert again == first and len(CALLS) == 1
    assert plan_runs(tmp_path / "r", [exp], data_root=str(moved))[0].action == "skip"


def test_a_done_run_of_another_dataset_is_refused_naming_both(tmp_path: Path, data) -> None:
    exp = coco_experiments()[0]
    run_experiment_job(tmp_path / "r", exp, train_fn=fake_train, data_root=str(data[0]))
    run_dir = rd.run_dir_for(tmp_path / "r", exp.run_id)
    before = files(run_dir)
    with pytest.raises(DatasetMismatchError) as caught:
        run_experiment_job(tmp_path / "r", exp, train_fn=fake_train, data_root=str(data[1]))
    assert caught.value.message == (
        f"run {exp.run_id} (k3 seed 0) was made on dataset 'coco-a' (fingerprint "
        f"{fingerprint(data[0])}, at {data[0]}); this dataset is 'coco-b' (fingerprint "
        f"{fingerprint(data[1])}, at {data[1]})")
    assert caught.value.hint == WAY_OUT and "--force" in WAY_OUT and "--results DIR" in WAY_OUT
    assert files(run_dir) == before and len(CALLS) == 1  # untouched, nothing trained


def test_force_retrains_on_the_new_dataset(tmp_path: Path, data) -> None:
    exp = coco_experiments()[0]
    results = tmp_path / "r"
    run_experiment_job(results, exp, train_fn=fake_train, data_root=str(data[0]))
    record = run_experiment_job(results, exp, train_fn=fake_train, data_root=str(data[1]),
                                force=True)
    assert len(CALLS) == 2 and record["provenance"]["dataset"]["fingerprint"] == fingerprint(
        data[1])
    assert run_experiment_job(results, exp, train_fn=fake_train, data_root=str(data[1])) == record
    with pytest.raises(DatasetMismatchError, match="was made on dataset 'coco-b'"):
        run_experiment_job(results, exp, train_fn=fake_train, data_root=str(data[0]))


def test_a_partial_run_is_not_resumed_on_another_dataset(tmp_path: Path, data) -> None:
    exp = coco_experiments()[0]
    results = tmp_path / "r"
    with pytest.raises(RuntimeError):
        run_experiment_job(results, exp, train_fn=failing_train, data_root=str(data[0]))
    run_dir = rd.run_dir_for(results, exp.run_id)
    before = files(run_dir)
    with pytest.raises(DatasetMismatchError, match=r"\(k3 seed 0\) was made on dataset 'coco-a'"):
        run_experiment_job(results, exp, train_fn=fake_train, data_root=str(data[1]))
    assert files(run_dir) == before and len(CALLS) == 1
    plan = plan_runs(results, [exp], data_root=str(data[1]))
    assert plan[0].action == "conflict" and plan[0].detail.startswith(f"run {exp.run_id}")
    shutil.rmtree(run_dir / rd.CHECKPOINTS)  # nothing to resume: it simply trains again
    assert plan_runs(results, [exp], data_root=str(data[1]))[0].action == "resume"
    run_experiment_job(results, exp, train_fn=fake_train, data_root=str(data[1]))
    assert rd.read_json(run_dir / rd.META)["dataset"]["name"] == "coco-b"


def test_resuming_on_the_same_dataset_after_mark_pending_is_allowed(tmp_path: Path, data) -> None:
    exp = coco_experiments()[0]
    results = tmp_path / "r"
    with pytest.raises(RuntimeError):
        run_experiment_job(results, exp, train_fn=failing_train, data_root=str(data[0]))
    assert mark_pending(results, exp, slurm_job_id="42")  # rewrites meta.json: keeps the dataset
    meta = rd.read_json(rd.run_dir_for(results, exp.run_id) / rd.META)
    assert meta["dataset"]["fingerprint"] == fingerprint(data[0])
    run_experiment_job(results, exp, train_fn=fake_train, data_root=str(data[0]))
    assert len(CALLS) == 2


def _strip_dataset(run_dir: Path) -> None:
    for name in (rd.META, rd.METRICS):
        record = rd.read_json(run_dir / name)
        record.pop("dataset", None)
        record.get("provenance", {}).pop("dataset", None)
        rd.atomic_write_json(run_dir / name, record)


def test_legacy_coco_records_are_refused_legacy_mini_records_kept(tmp_path: Path, data) -> None:
    results = tmp_path / "r"
    coco = coco_experiments()[0]
    run_experiment_job(results, coco, train_fn=fake_train, data_root=str(data[0]))
    _strip_dataset(rd.run_dir_for(results, coco.run_id))
    with pytest.raises(DatasetMismatchError, match=r"was recorded before dataset fingerprints "
                                                   r"\(its dataset is unknown\); this dataset is "
                                                   r"'coco-a'"):
        run_experiment_job(results, coco, train_fn=fake_train, data_root=str(data[0]))
    mini = load_recipe("recipes/table4.yaml").experiments("mini", rows=["k3"])[0]
    stored = run_experiment_job(results, mini, train_fn=fake_train)
    _strip_dataset(rd.run_dir_for(results, mini.run_id))
    again = run_experiment_job(results, mini, train_fn=fake_train)
    assert again["metrics"] == stored["metrics"] and len(CALLS) == 2
    assert plan_runs(results, [mini])[0].action == "skip"


def test_a_stored_result_is_not_handed_out_when_its_dataset_cannot_be_checked(
        tmp_path: Path, data) -> None:
    exp = coco_experiments()[0]
    run_experiment_job(tmp_path / "r", exp, train_fn=fake_train, data_root=str(data[0]))
    with pytest.raises(DataError, match="no COCO dataset root given"):
        run_experiment_job(tmp_path / "r", exp, train_fn=fake_train)
    shutil.rmtree(data[0] / "val2017")
    with pytest.raises(DataError, match="split val2017: image folder"):
        run_experiment_job(tmp_path / "r", exp, train_fn=fake_train, data_root=str(data[0]))
    # planning from a machine without the data: no check, the job checks
    assert plan_runs(tmp_path / "r", [exp])[0].action == "skip"


def test_plan_computes_each_data_config_once_and_refuses_all_conflicts(
        tmp_path: Path, data, monkeypatch) -> None:
    exps = coco_experiments(("k3", "k5", "k7"))
    for exp in exps:
        run_experiment_job(tmp_path / "r", exp, train_fn=fake_train, data_root=str(data[0]))
    calls = []
    real = job_dataset.resolve_dataset_identity
    monkeypatch.setattr(job_dataset, "resolve_dataset_identity",
                        lambda d, r: calls.append(r) or real(d, r))
    plan = plan_runs(tmp_path / "r", exps, data_root=str(data[1]))
    assert [p.action for p in plan] == ["conflict"] * 3 and calls == [str(data[1])]
    with pytest.raises(DatasetMismatchError) as caught:
        refuse_conflicts(plan)
    assert caught.value.message == plan[0].detail + " (and 2 more runs)"
    assert [p.action for p in plan_runs(tmp_path / "r", exps, force=True,
                                        data_root=str(data[1]))] == ["rerun"] * 3


def test_malformed_recorded_datasets_are_treated_as_unknown(tmp_path: Path, data) -> None:
    exp = coco_experiments()[0]
    run_experiment_job(tmp_path / "r", exp, train_fn=fake_train, data_root=str(data[0]))
    run_dir = rd.run_dir_for(tmp_path / "r", exp.run_id)
    metrics = rd.read_json(run_dir / rd.METRICS)
    metrics["provenance"]["dataset"] = {"fingerprint": ["x"] * 3, "kind": {"a": 1}}
    rd.atomic_write_json(run_dir / rd.METRICS, metrics)
    with pytest.raises(DatasetMismatchError, match="recorded before dataset fingerprints"):
        run_experiment_job(tmp_path / "r", exp, train_fn=fake_train, data_root=str(data[0]))


# --- the CLI: run refuses before training anything ---------------------------------------------

runner = CliRunner()


def test_run_refuses_with_exit_2_and_dry_run_shows_the_conflict(tmp_path: Path, data) -> None:
    results = tmp_path / "r"
    exp = coco_experiments()[0]
    run_experiment_job(results, exp, train_fn=fake_train, data_root=str(data[0]))
    before = files(rd.run_dir_for(results, exp.run_id))
    args = ["run", "recipes/table4.yaml", "--rows", "k3", "--results", str(results),
            "--data-root", str(data[1])]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "conflict" in dry.output and "0 to train" in dry.output
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2, refused.output
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: run {exp.run_id} (k3 seed 0) was made")
    assert "'coco-a'" in lines[0] and "'coco-b'" in lines[0] and WAY_OUT in lines[0]
    assert files(rd.run_dir_for(results, exp.run_id)) == before and len(CALLS) == 1


def test_submit_refuses_before_submitting(tmp_path: Path, data, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    results = tmp_path / "r"
    exp = coco_experiments()[0]
    run_experiment_job(results, exp, train_fn=fake_train, data_root=str(data[0]))
    args = ["submit", "recipes/table4.yaml", "--rows", "k3", "--cluster", "local", "--results",
            str(results), "--data-root", str(data[1])]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "conflict" in dry.output and f"run {exp.run_id} (k3 seed 0) was made" in dry.output
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2 and WAY_OUT in refused.output, refused.output
    assert not (results / "submitit").exists() and len(CALLS) == 1
    assert rd.read_json(rd.run_dir_for(results, exp.run_id) / rd.STATUS)["state"] == "done"


def test_bad_data_fails_the_run_before_training_named_by_run_and_status(tmp_path: Path) -> None:
    from tests.launch.tiny import write_tiny_profile

    root = write_tiny_coco(tmp_path / "coco")
    image = root / "val2017" / "c.jpg"
    image.write_bytes(image.read_bytes()[:-40])
    results = tmp_path / "r"
    profile = write_tiny_profile(tmp_path / "profiles")
    run = runner.invoke(app, ["run", "recipes/table4.yaml", "--rows", "k3", "--profile",
                              str(profile), "--set", "data.kind=coco", "--results", str(results),
                              "--data-root", str(root)])
    assert run.exit_code == 1, run.output
    assert f"DataError: truncated image {image} (split val2017): no JPEG end marker" in run.output
    status = runner.invoke(app, ["status", "--results", str(results)])
    assert status.exit_code == 0, status.output
    assert "k3 [" in status.output and f"truncated image {image}" in status.output
    run_dir = next((results / rd.RUNS).iterdir())
    assert not (run_dir / rd.CHECKPOINTS).exists() and not (run_dir / rd.LOG).exists()


def test_a_failed_forced_retrain_on_other_data_keeps_the_recorded_dataset(tmp_path: Path,
                                                                         data) -> None:
    """meta.json names the dataset of the result it sits beside: the kept one until a retrain
    on the other dataset succeeds."""
    exp = coco_experiments()[0]
    run_experiment_job(tmp_path / "r", exp, train_fn=fake_train, data_root=str(data[0]))
    run_dir = rd.run_dir_for(tmp_path / "r", exp.run_id)
    with pytest.raises(Exception, match="killed at iteration 1"):
        run_experiment_job(tmp_path / "r", exp, train_fn=failing_train, data_root=str(data[1]),
                           force=True)
    assert rd.read_json(run_dir / rd.META)["dataset"]["fingerprint"] == fingerprint(data[0])
    record = run_experiment_job(tmp_path / "r", exp, train_fn=fake_train, data_root=str(data[1]),
                                force=True)
    assert rd.read_json(run_dir / rd.META)["dataset"]["fingerprint"] == fingerprint(data[1])
    assert record["provenance"]["dataset"]["fingerprint"] == fingerprint(data[1])
