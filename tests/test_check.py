"""`atss-bench check`: tolerance from seed noise, verdicts, exit code; a broken assigner fails;
a user's store is reused, never retrained or touched; a stale or malformed baseline is refused."""
import functools
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atss_bench import check
from atss_bench.assign import BACKGROUND
from atss_bench.assign import table as assign_table
from atss_bench.check import DEFAULT_BASELINE, CheckRow, run_check, update_baseline
from atss_bench.cli.main import app
from atss_bench.errors import ConfigError
from atss_bench.recipes import load_recipe

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


def must_not_train(config, run_dir, **_):
    raise AssertionError(f"trained {run_dir.name}: runs already done must be reused")


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made_baseline(tmp_path_factory) -> Path:
    """A baseline made with fake_train (3 seeds) and the store it was made from, built once."""
    folder = tmp_path_factory.mktemp("made")
    update_baseline(RECIPE, folder / "b.json", seeds=3, results_dir=folder / "store",
                    train_fn=fake_train())
    return folder


@pytest.fixture
def baseline_and_store(made_baseline: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A fresh copy of ``made_baseline`` for one test: (baseline file, store)."""
    shutil.copy2(made_baseline / "b.json", tmp_path / "b.json")
    shutil.copytree(made_baseline / "store", tmp_path / "store")
    return tmp_path / "b.json", tmp_path / "store"


def test_check_results_dir_reuses_done_runs_and_leaves_every_file_untouched(baseline_and_store):
    path, store = baseline_and_store
    before = _snapshot(store)
    rows = run_check(RECIPE, path, results_dir=store, train_fn=must_not_train)
    assert [(r.row_id, r.now, r.verdict) for r in rows] == [
        ("retinanet_iou", 20.0, "ok"), ("retinanet_atss", 30.0, "ok"), ("fcos_atss", 31.0, "ok")]
    assert _snapshot(store) == before


def test_cli_check_results_dir_is_byte_identical_after(baseline_and_store):
    path, store = baseline_and_store
    before = _snapshot(store)
    result = CliRunner().invoke(app, ["check", "--baseline", str(path), "--results", str(store)])
    assert result.exit_code == 0, result.output
    assert "all 3 rows within tolerance" in result.output
    assert _snapshot(store) == before


def test_update_baseline_from_a_results_dir_reuses_it_untouched(baseline_and_store,
                                                                tmp_path: Path):
    path, store = baseline_and_store
    before = _snapshot(store)
    again = update_baseline(RECIPE, tmp_path / "again.json", seeds=3, results_dir=store,
                            train_fn=must_not_train)
    assert again["rows"] == json.loads(path.read_text())["rows"]
    assert _snapshot(store) == before


def test_check_trains_in_a_private_store_by_default(baseline_and_store, tmp_path: Path,
                                                    monkeypatch):
    path, _ = baseline_and_store
    seen: list[Path] = []
    train = fake_train()
    monkeypatch.chdir(tmp_path)
    rows = run_check(RECIPE, path, train_fn=lambda c, d, **k: seen.append(d) or train(c, d, **k))
    assert len(seen) == 3 and {r.verdict for r in rows} == {"ok"}
    assert all(not d.exists() for d in seen)  # the temporary store is gone
    assert not (tmp_path / "results").exists()


def test_a_non_finite_stored_ap_is_a_failed_row_never_ok(baseline_and_store):
    path, store = baseline_and_store
    seed0 = run_check(RECIPE, path, results_dir=store, train_fn=must_not_train)  # reused
    iou_id = load_recipe(RECIPE).experiments(profile="mini", seeds=1)[0].run_id
    metrics_file = store / "runs" / iou_id / "metrics.json"
    record = json.loads(metrics_file.read_text())
    record["metrics"]["AP"] = float("nan")
    metrics_file.write_text(json.dumps(record))
    others = {k: v for k, v in _snapshot(store).items() if not k.startswith(f"runs/{iou_id}")}
    rows = run_check(RECIPE, path, results_dir=store, train_fn=must_not_train)
    assert [r.verdict for r in rows] == ["failed", "ok", "ok"] and rows[0].now is None
    assert [r.now for r in rows[1:]] == [r.now for r in seed0[1:]]
    assert {k: v for k, v in _snapshot(store).items()
            if not k.startswith(f"runs/{iou_id}")} == others


REGENERATE = "atss-bench check --update-baseline --seeds 3 --results results/mini"


def _edit_baseline(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["rows"]["fcos_atss"]["run_ids"].__setitem__(0, "0123456789ab"),
     "row fcos_atss was made from runs 0123456789ab"),
    (lambda d: [r.pop("run_ids") for r in d["rows"].values()], "records no run ids"),
    (lambda d: d["rows"].pop("retinanet_atss"), "row retinanet_atss has no baseline"),
    (lambda d: d["rows"].__setitem__("gone\nrow", d["rows"]["fcos_atss"]),
     "row gone?row is not in the recipe"),
    (lambda d: d.__setitem__("seeds", 2), "the recipe now gives"),
])
def test_stale_baseline_is_one_line_exit_2_before_any_training(baseline_and_store, edit,
                                                               words):
    path, _ = baseline_and_store
    _edit_baseline(path, edit)
    with pytest.raises(check.StaleBaselineError, match="stale baseline"):
        run_check(RECIPE, path, train_fn=must_not_train)
    result = CliRunner().invoke(app, ["check", "--baseline", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "stale baseline" in lines[0] and words in lines[0], lines
    seeds = json.loads(path.read_text())["seeds"]
    assert f"regenerate it: {REGENERATE.replace('3', str(seeds))} --baseline {path}" in lines[0]


def test_recipe_change_makes_the_baseline_stale(baseline_and_store, tmp_path: Path):
    path, _ = baseline_and_store
    changed = tmp_path / "ci.yaml"  # e.g. a profile or base setting changed after the baseline
    changed.write_text(RECIPE.read_text().replace("octave_base_scale: 8", "octave_base_scale: 4"))
    with pytest.raises(check.StaleBaselineError) as info:
        run_check(changed, path, train_fn=must_not_train)
    assert f"--recipe {changed}" in info.value.hint


@pytest.mark.parametrize("content, words", [
    (b"{not json", "not a valid baseline"),
    (b"[" * 100_000 + b"]" * 100_000, "not a valid baseline"),
    (b"\xff\xfe garbage", "not a valid baseline"),
    (b"[]", "not a valid baseline"),
    (b" " * (check.MAX_BASELINE_BYTES + 1), "larger than"),
])
def test_malformed_baseline_files_are_one_line_exit_2(tmp_path: Path, content, words):
    path = tmp_path / "b.json"
    path.write_bytes(content)
    result = CliRunner().invoke(app, ["check", "--baseline", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines


@pytest.mark.parametrize("field, value, where", [
    ("seeds", 1_000_000_000, "seeds"), ("seeds", "3", "seeds"), ("seeds", 3.0, "seeds"),
    ("seeds", True, "seeds"), ("tolerance_AP", float("nan"), "tolerance_AP"),
    ("tolerance_AP", -1.0, "tolerance_AP"), ("rows", {}, "rows"), ("profile", ["mini"], "profile"),
    ("rows", {"fcos_atss": {"label": "x", "AP_mean": "31.9"}}, "rows.fcos_atss.AP_mean"),
])
def test_baseline_fields_are_validated(baseline_and_store, field, value, where):
    path, _ = baseline_and_store
    _edit_baseline(path, lambda d: d.__setitem__(field, value))
    with pytest.raises(ConfigError, match=f"not a valid baseline \\({where}"):
        run_check(RECIPE, path, train_fn=must_not_train)


def test_committed_baseline_matches_the_recipe_and_the_mini_records():
    """Its run ids are today's ci.yaml ids, and its APs those of the results/mini records."""
    baseline = check.load_baseline(DEFAULT_BASELINE)
    check.verify_baseline(baseline, RECIPE, DEFAULT_BASELINE)
    raw = json.loads(DEFAULT_BASELINE.read_text())["rows"]
    runs = DEFAULT_BASELINE.parent.parent / baseline.profile / "runs"
    for row_id, row in raw.items():
        stored = [json.loads((runs / rid / "metrics.json").read_text())["metrics"]["AP"]
                  for rid in row["run_ids"]]
        assert stored == row["AP"], row_id
