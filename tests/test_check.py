"""`atss-bench check`: tolerance from seed noise, verdicts, exit code; a broken assigner fails."""
import functools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atss_bench import check
from atss_bench.assign import BACKGROUND
from atss_bench.assign import table as assign_table
from atss_bench.check import DEFAULT_BASELINE, CheckRow, run_check, update_baseline
from atss_bench.cli.main import app

RECIPE = check.DEFAULT_RECIPE
AP_BY_RULE = {"max_iou": 20.0, "atss": 30.0}


def fake_train(shift: float = 0.0):
    def train(config, run_dir, **_):
        # Seeds move AP by 0.2 per seed: std over seeds 0,1,2 = 0.2, so tolerance = max(0.6, 0.5).
        ap = AP_BY_RULE[config.model.assign.strategy] + 0.2 * config.seed + shift
        if config.model.regression.start == "point":
            ap += 1.0
        metrics = {m: ap for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
        return {"metrics": metrics, "provenance": {"device": "cpu"}}
    return train


def test_verdicts():
    assert CheckRow("a", "A", 10.0, 9.5, 0.6).verdict == "ok"
    assert CheckRow("a", "A", 10.0, 9.3, 0.6).verdict == "regression"
    assert CheckRow("a", "A", 10.0, 10.7, 0.6).verdict == "better"
    assert CheckRow("a", "A", 10.0, None, 0.6).verdict == "failed"
    assert CheckRow("a", "A", 10.0, 9.3, 0.6).delta == pytest.approx(-0.7)


def test_baseline_tolerance_comes_from_seed_noise(tmp_path: Path):
    baseline = update_baseline(RECIPE, tmp_path / "b.json", seeds=3, train_fn=fake_train())
    assert baseline["pooled_std_AP"] == pytest.approx(0.2)
    assert baseline["tolerance_AP"] == pytest.approx(0.6)
    assert baseline["rows"]["retinanet_iou"]["AP_mean"] == pytest.approx(20.2)
    assert baseline["rows"]["fcos_atss"]["AP_mean"] == pytest.approx(31.2)
    assert baseline["provenance"]["versions"]["torch"]
    on_disk = json.loads((tmp_path / "b.json").read_text())
    assert on_disk["rows"].keys() == {"retinanet_iou", "retinanet_atss", "fcos_atss"}


def test_check_passes_then_catches_a_regression(tmp_path: Path):
    path = tmp_path / "b.json"
    update_baseline(RECIPE, path, seeds=3, train_fn=fake_train())
    # Seed 0 is 0.2 below the mean: inside the tolerance.
    assert {r.verdict for r in run_check(RECIPE, path, train_fn=fake_train())} == {"ok"}
    rows = run_check(RECIPE, path, train_fn=fake_train(shift=-1.0))
    assert {r.verdict for r in rows} == {"regression"}


shifted_train = fake_train(shift=-1.0)  # module level: --jobs workers import it by name


def test_jobs_train_rows_in_worker_processes_with_the_same_verdicts(tmp_path: Path):
    path = tmp_path / "b.json"
    baseline = update_baseline(RECIPE, path, seeds=2, jobs=2, results_dir=tmp_path / "store",
                               train_fn=f"{__name__}:shifted_train")
    assert baseline["rows"]["fcos_atss"]["AP"] == pytest.approx([30.0, 30.2])
    rows = run_check(RECIPE, path, jobs=2, train_fn=f"{__name__}:shifted_train")
    assert [r.now for r in rows] == pytest.approx([19.0, 29.0, 30.0])
    assert {r.verdict for r in rows} == {"ok"}


def test_cli_prints_a_table_and_exits_1_on_regression(monkeypatch, tmp_path: Path):
    rows = [CheckRow("retinanet_atss", "RetinaNet + ATSS", 3.0, 0.1, 0.6)]
    monkeypatch.setattr("atss_bench.cli.check_cmd.run_check", lambda *a, **k: rows)
    result = CliRunner().invoke(app, ["check"])
    assert result.exit_code == 1
    assert "regression" in result.output and "-2.90" in result.output


def test_missing_baseline_is_one_line_exit_2(tmp_path: Path):
    result = CliRunner().invoke(app, ["check", "--baseline", str(tmp_path / "none.json")])
    assert result.exit_code == 2 and "baseline not found" in result.output


def _atss_without_positives(original):
    @functools.wraps(original)
    def broken(*args, **kwargs):
        matched = original(*args, **kwargs)
        return matched.masked_fill(matched >= 0, BACKGROUND)  # a threshold nothing passes
    return broken


@pytest.mark.slow
@pytest.mark.skipif(not DEFAULT_BASELINE.is_file(), reason="no committed CI baseline")
def test_a_broken_assigner_fails_the_real_check(monkeypatch, tmp_path: Path):
    """Trains the real mini ATSS row (about 3 minutes) with an ATSS that selects nothing."""
    broken = _atss_without_positives(assign_table.ASSIGNERS["atss"])
    monkeypatch.setitem(assign_table.ASSIGNERS, "atss", broken)
    rows = run_check(rows=["retinanet_atss"], results_dir=tmp_path)
    assert [r.verdict for r in rows] == ["regression"], rows
