"""--force on a done run: the previous result stays until the retrain succeeds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.errors import TrainingError
from atss_bench.job import plan_runs, run_experiment_job, run_planned
from atss_bench.job import rundir as rd
from atss_bench.job.runner import RETRAIN_DIR, RetrainFailedError
from atss_bench.recipes import METRICS, load_recipe
from atss_bench.store import load_results


def experiment():
    return load_recipe("recipes/table4.yaml").experiments("mini", rows=["k3"])[0]


def make_train(ap: float, checkpoint: str, fail: BaseException | None = None):
    """Logs 2 iterations and writes one checkpoint file, then returns AP or raises ``fail``."""
    def train(config, run_dir, *, data_root=None, progress=True):
        (Path(run_dir) / rd.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / rd.CHECKPOINTS / checkpoint).write_text(checkpoint)
        with open(Path(run_dir) / rd.LOG, "a") as log:
            for i in (1, 2):
                log.write(json.dumps({"iter": i, "max_iter": 2, "ap": ap}) + "\n")
        if fail is not None:
            raise fail
        return {"metrics": {m: ap for m in METRICS}, "provenance": {"device": "cpu"}}
    return train


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of the previous result, by path."""
    files = [run_dir / rd.METRICS, run_dir / rd.LOG, *sorted((run_dir / rd.CHECKPOINTS).iterdir())]
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in files}


@pytest.fixture
def done_run(tmp_path: Path) -> Path:
    exp = experiment()
    run_experiment_job(tmp_path, exp, train_fn=make_train(30.0, "ckpt_2.pt"))
    return rd.run_dir_for(tmp_path, exp.run_id)


@pytest.mark.parametrize("fail", [RuntimeError("boom: diverged"), KeyboardInterrupt()])
def test_a_failed_retrain_keeps_the_previous_result(tmp_path: Path, done_run: Path, fail):
    before = snapshot(done_run)
    expected = RetrainFailedError if isinstance(fail, Exception) else KeyboardInterrupt
    with pytest.raises(expected) as raised:
        run_experiment_job(tmp_path, experiment(), force=True,
                           train_fn=make_train(10.0, "ckpt_new.pt", fail=fail))
    assert snapshot(done_run) == before  # metrics, log and checkpoints: byte for byte
    status = rd.read_json(done_run / rd.STATUS)
    assert status["state"] == "done" and status["attempt"] == 1
    reason = "RuntimeError: boom: diverged" if isinstance(fail, Exception) else "KeyboardInterrupt"
    assert status["retrain_failed"] == reason
    assert status["retrain_error"] == f"{RETRAIN_DIR}/error.txt"
    assert "Traceback" in (done_run / RETRAIN_DIR / "error.txt").read_text()
    assert not (done_run / RETRAIN_DIR / rd.CHECKPOINTS).exists()  # its disk is given back
    if expected is RetrainFailedError:
        assert str(raised.value) == "RuntimeError: boom: diverged (the previous result is kept)"
        assert isinstance(raised.value, TrainingError)
    assert rd.read_done_metrics(done_run)["metrics"]["AP"] == 30.0
    frame = load_results(tmp_path)
    assert list(frame["status"]) == ["done"] and list(frame["AP"]) == [30.0]


def test_a_failed_retrain_is_a_failed_outcome_of_the_batch(tmp_path: Path, done_run: Path):
    plan = plan_runs(tmp_path, [experiment()], force=True)
    assert [p.action for p in plan] == ["rerun"]
    outcomes = run_planned(tmp_path, plan, train_fn=make_train(1.0, "x", RuntimeError("nan")))
    assert [o.state for o in outcomes] == ["failed"]
    assert outcomes[0].reason == ("RetrainFailedError: RuntimeError: nan "
                                  "(the previous result is kept)")
    assert [p.action for p in plan_runs(tmp_path, [experiment()])] == ["skip"]  # still done


def test_a_successful_retrain_replaces_the_result(tmp_path: Path, done_run: Path):
    (done_run / "code.patch").write_text("the previous result's patch")
    record = run_experiment_job(tmp_path, experiment(), force=True,
                                train_fn=make_train(40.0, "ckpt_new.pt"))
    assert record["metrics"]["AP"] == 40.0 and record["provenance"]["iter"] == 2
    assert rd.read_done_metrics(done_run) == record
    assert sorted(p.name for p in (done_run / rd.CHECKPOINTS).iterdir()) == ["ckpt_new.pt"]
    lines = [json.loads(line) for line in (done_run / rd.LOG).read_text().splitlines()]
    assert [line["ap"] for line in lines] == [40.0, 40.0]  # only the new run's log
    assert not (done_run / RETRAIN_DIR).exists()
    status = rd.read_json(done_run / rd.STATUS)
    assert (status["state"], status["attempt"], status["retrain_failed"]) == ("done", 2, None)
    if record["provenance"]["code_patch"] is None:  # clean checkout: the old patch is gone too
        assert not (done_run / "code.patch").exists()


def test_a_retrain_after_a_failed_one_starts_clean(tmp_path: Path, done_run: Path):
    with pytest.raises(RetrainFailedError):
        run_experiment_job(tmp_path, experiment(), force=True,
                           train_fn=make_train(1.0, "bad.pt", RuntimeError("x")))
    run_experiment_job(tmp_path, experiment(), force=True, train_fn=make_train(41.0, "good.pt"))
    status = rd.read_json(done_run / rd.STATUS)
    assert status["retrain_failed"] is None and status["retrain_error"] is None
    assert sorted(p.name for p in (done_run / rd.CHECKPOINTS).iterdir()) == ["good.pt"]
    assert rd.read_done_metrics(done_run)["metrics"]["AP"] == 41.0


def test_force_on_a_failed_run_still_retrains_in_place(tmp_path: Path):
    exp = experiment()
    with pytest.raises(RuntimeError):
        run_experiment_job(tmp_path, exp, train_fn=make_train(1.0, "a.pt", RuntimeError("x")))
    run_experiment_job(tmp_path, exp, force=True, train_fn=make_train(33.0, "b.pt"))
    run_dir = rd.run_dir_for(tmp_path, exp.run_id)
    assert sorted(p.name for p in (run_dir / rd.CHECKPOINTS).iterdir()) == ["b.pt"]
    assert not (run_dir / RETRAIN_DIR).exists()
    assert rd.read_done_metrics(run_dir)["metrics"]["AP"] == 33.0


def test_status_shows_a_failed_retrain_beside_the_kept_result(tmp_path: Path, done_run: Path):
    with pytest.raises(RetrainFailedError):
        run_experiment_job(tmp_path, experiment(), force=True,
                           train_fn=make_train(1.0, "x.pt", RuntimeError("[red]nan[/] loss")))
    frame = load_results(tmp_path)
    assert list(frame["retrain_failed"]) == ["RuntimeError: [red]nan[/] loss"]
    result = CliRunner().invoke(app, ["status", "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("retrain failed"))
    assert "RuntimeError: [red]nan[/] loss (the previous result is kept; see" in line
    assert line.endswith(f"{RETRAIN_DIR}/error.txt)")
    assert "| 30.0 " in result.output or " 30.0 " in result.output  # the kept AP is listed
