"""TensorBoard events beside log.jsonl: same values, resume cuts, optional package, retrains."""
from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from atss_bench.engine import run_experiment  # noqa: E402
from atss_bench.engine import tensorboard as tb  # noqa: E402
from atss_bench.engine import train as train_module  # noqa: E402
from atss_bench.engine.monitor import JsonlLog, read_log  # noqa: E402
from atss_bench.job import run_experiment_job  # noqa: E402
from atss_bench.job import rundir as rd  # noqa: E402
from atss_bench.recipes import METRICS, load_recipe  # noqa: E402
from tests.engine.conftest import tiny_config  # noqa: E402

TINY = {"max_iter": 3, "steps": [2], "checkpoint_period": 3}


def events(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def config_texts(acc: EventAccumulator) -> list[str]:
    return [e.tensor_proto.string_val[0].decode() for e in acc.Tensors("config/text_summary")]


def test_a_run_folder_holds_events_with_the_log_values(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(train_module, "LOG_PERIOD", 1)
    config = tiny_config(train=TINY)
    result = run_experiment(config, tmp_path / "run", progress=False)
    log = read_log(tmp_path / "run" / "log.jsonl")
    lines, final = [r for r in log if "loss" in r], log[-1]
    assert [r["iter"] for r in lines] == [1, 2, 3]
    acc = events(tmp_path / "run" / tb.TENSORBOARD_DIR)
    for key in ("loss", "loss_cls", "loss_reg", "loss_centerness", "lr"):
        assert scalars(acc, f"train/{key}") == [
            (r["iter"], pytest.approx(r[key], rel=1e-6)) for r in lines]
    assert scalars(acc, "train/it_per_s") == [
        (r["iter"], pytest.approx(r["it/s"], rel=1e-6)) for r in lines]
    for name, value in final["eval"].items():  # every COCO metric, NaN (no large objects) too
        [(step, stored)] = scalars(acc, f"eval/{name}")
        assert step == 3
        assert (math.isnan(stored) and math.isnan(value)) or stored == pytest.approx(value,
                                                                                     rel=1e-6)
    assert set(METRICS) <= {name for name in final["eval"]}
    [text] = config_texts(acc)
    assert "regression:" in text and f"seed: {config.seed}" in text
    assert result["metrics"]["AP"] == final["eval"]["AP"]


def test_without_the_package_training_is_the_same_and_noticed_once(tmp_path: Path, monkeypatch,
                                                                    caplog) -> None:
    config = tiny_config(train={**TINY, "max_iter": 2})
    with_tb = run_experiment(config, tmp_path / "with", progress=False)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    monkeypatch.setattr(tb, "_noticed", False)
    with caplog.at_level(logging.WARNING, logger=tb.__name__):
        without = run_experiment(config, tmp_path / "without", progress=False)
        assert tb.open_event_log(tmp_path / "other", config) is None
    assert [r.getMessage() for r in caplog.records] == [tb.NOTICE]
    assert not (tmp_path / "without" / tb.TENSORBOARD_DIR).exists()
    assert (tmp_path / "with" / tb.TENSORBOARD_DIR).is_dir()
    assert without["metrics"] == pytest.approx(with_tb["metrics"], nan_ok=True)
    losses = [[r.get("loss") for r in read_log(tmp_path / d / "log.jsonl")]
              for d in ("with", "without")]
    assert losses[0] == losses[1]


def _write(folder: Path, start: int, records: dict[int, float]) -> None:
    writer_class = tb._summary_writer_class()
    assert writer_class is not None
    log = JsonlLog(folder / "log.jsonl", sinks=[tb.EventLog(folder / "tb", tiny_config(),
                                                            writer_class)])
    log.truncate_after(start)
    for iteration, loss in records.items():
        log.write({"iter": iteration, "loss": loss, "lr": 0.1, "it/s": 2.0, "elapsed": 1.0})
    log.close()


def test_resume_hides_the_killed_runs_events_past_its_checkpoint(tmp_path: Path) -> None:
    _write(tmp_path, 0, {1: 11.0, 2: 12.0, 3: 13.0, 4: 14.0})  # killed after iter 4
    _write(tmp_path, 2, {3: 23.0, 4: 24.0})  # resumed from the checkpoint of iter 2
    acc = events(tmp_path / "tb")
    assert scalars(acc, "train/loss") == [(1, 11.0), (2, 12.0), (3, 23.0), (4, 24.0)]
    assert [r["loss"] for r in read_log(tmp_path / "log.jsonl")] == [11.0, 12.0, 23.0, 24.0]
    assert len(config_texts(acc)) == 1  # written by the fresh start only
    assert "elapsed" not in " ".join(acc.Tags()["scalars"])


def test_a_fresh_start_drops_old_events_only(tmp_path: Path) -> None:
    _write(tmp_path, 0, {1: 11.0, 2: 12.0})
    (tmp_path / "tb" / "notes.txt").write_text("mine")
    _write(tmp_path, 0, {1: 31.0})  # restarted from scratch (no checkpoint)
    assert scalars(events(tmp_path / "tb"), "train/loss") == [(1, 31.0)]
    assert len(list((tmp_path / "tb").glob(tb.EVENTS_PREFIX + "*"))) == 1
    assert (tmp_path / "tb" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("start", [0, 2])
def test_a_symlinked_events_folder_is_replaced_not_followed(tmp_path: Path, start: int) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / (tb.EVENTS_PREFIX + "keep")).write_text("not ours")
    run = tmp_path / "run"
    run.mkdir()
    (run / "tb").symlink_to(elsewhere)
    _write(run, start, {1: 1.0})
    assert sorted(p.name for p in elsewhere.iterdir()) == [tb.EVENTS_PREFIX + "keep"]
    assert (elsewhere / (tb.EVENTS_PREFIX + "keep")).read_text() == "not ours"
    assert not (run / "tb").is_symlink() and scalars(events(run / "tb"), "train/loss") == [(1, 1.0)]


def test_records_that_are_not_numbers_are_left_out() -> None:
    assert tb.train_scalars({"iter": 3, "max_iter": 9, "loss": 1.5, "loss_cls": 1, "lr": 0.01,
                             "it/s": 4.0, "time": 0.25, "elapsed": 9.0, "loss_x": "1",
                             "loss_b": True, "event": "checkpoint"}) == {
        "train/loss": 1.5, "train/loss_cls": 1.0, "train/lr": 0.01, "train/it_per_s": 4.0}
    assert tb.eval_scalars({"AP": 1.0, "note": "x", "APl": float("inf")}) == {
        "eval/AP": 1.0, "eval/APl": float("inf")}


def _fake_train(loss: float, with_events: bool):
    def train(config, run_dir, *, data_root=None, progress=True):
        run_dir = Path(run_dir)
        if with_events:
            (run_dir / rd.TENSORBOARD).mkdir(parents=True, exist_ok=True)
            (run_dir / rd.TENSORBOARD / f"{tb.EVENTS_PREFIX}{loss}").write_text(str(loss))
        with open(run_dir / rd.LOG, "a") as log:
            log.write(json.dumps({"iter": 1, "max_iter": 1, "loss": loss}) + "\n")
        return {"metrics": {m: loss for m in METRICS}, "provenance": {"device": "cpu"}}
    return train


@pytest.mark.parametrize("with_events", [True, False])
def test_a_retrain_replaces_the_previous_events(tmp_path: Path, with_events: bool) -> None:
    experiment = load_recipe("recipes/table4.yaml").experiments("mini", rows=["k3"])[0]
    run_experiment_job(tmp_path, experiment, train_fn=_fake_train(1.0, True))
    run_dir = rd.run_dir_for(tmp_path, experiment.run_id)
    run_experiment_job(tmp_path, experiment, force=True, train_fn=_fake_train(2.0, with_events))
    names = sorted(p.name for p in (run_dir / rd.TENSORBOARD).iterdir()) \
        if (run_dir / rd.TENSORBOARD).exists() else []
    assert names == ([f"{tb.EVENTS_PREFIX}2.0"] if with_events else [])
