"""Who shows a batch's progress: on a terminal the caller (the CLI's bars, from the logs), so the
engine is asked for none; off a terminal the engine, as plain lines (``engine.monitor``)."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from atss_bench.job import batch, plan_runs, run_planned
from atss_bench.recipes import METRICS, load_recipe


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stdout, engine_progress", [(_Terminal(), False), (io.StringIO(), True)])
def test_engine_progress_only_off_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             stdout: io.StringIO, engine_progress: bool) -> None:
    asked: list[bool] = []

    def train(config, run_dir, *, data_root=None, progress=True):
        asked.append(progress)
        return {"metrics": {m: 1.0 for m in METRICS}, "provenance": {}}

    monkeypatch.setattr(batch.sys, "stdout", stdout)
    experiments = load_recipe("recipes/table4.yaml").experiments("mini", rows=["k3", "k5"])
    outcomes = run_planned(tmp_path, plan_runs(tmp_path, experiments), train_fn=train)
    assert [o.state for o in outcomes] == ["done", "done"]
    assert asked == [engine_progress, engine_progress]
