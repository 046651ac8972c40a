"""A plug-in rule through `show`, `run`, `status`, `report` and inspect-assign's settings; a
stored plug-in run is read back without importing its module."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import atss_bench.job.runner as job_runner
from atss_bench.cli.main import app
from atss_bench.errors import ConfigError
from atss_bench.inspect import resolve_rule_configs
from atss_bench.job import rundir as rd
from atss_bench.recipes import METRICS
from atss_bench.store import RESULTS_ENV, load_results

runner = CliRunner()
RULE = """
import torch


def assign_centre(anchors, num_anchors_per_level, gt_boxes, shrink: float = 0.0):
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    inner = gt_boxes + torch.tensor([shrink, shrink, -shrink, -shrink])
    inside = ((centres[:, None] > inner[None, :, :2]) & (centres[:, None] < inner[None, :, 2:]))
    first = torch.where(inside.all(2), torch.arange(len(gt_boxes)), len(gt_boxes)).amin(1)
    return torch.where(first < len(gt_boxes), first, -1)
"""
RECIPE = """\
table: mine
title: "My rule against ATSS"
rows:
  - id: atss
    label: ATSS
    set: {model.assign.strategy: atss}
  - id: mine
    label: Mine
    set: {model.assign.strategy: "my_rules:assign_centre", model.assign.params: {shrink: 2.0}}
"""


def fake_train(config, run_dir, *, data_root=None, progress=True):
    with open(Path(run_dir) / rd.LOG, "a") as log:
        log.write(json.dumps({"iter": 1, "max_iter": 1, "loss": 0.5, "lr": 0.01}) + "\n")
    return {"metrics": {m: 30.0 + config.seed for m in METRICS},
            "provenance": {"device": "cpu", "world_size": 1}}


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(RESULTS_ENV, raising=False)
    monkeypatch.setattr(job_runner, "default_train_fn", lambda: fake_train)
    (tmp_path / "my_rules.py").write_text(textwrap.dedent(RULE))
    (tmp_path / "mine.yaml").write_text(RECIPE)
    return tmp_path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_show_run_status_report_and_an_edit_making_new_runs(workdir):
    shown = invoke("show", "mine.yaml", "--profile", "mini")
    assert shown.exit_code == 0, shown.output
    assert "my_rules:assign_centre" in shown.output
    ran = invoke("run", "mine.yaml", "--profile", "mini", "--rows", "mine", "--results", "res")
    assert ran.exit_code == 0, ran.output
    (run_dir,) = [p for p in (workdir / "res" / "runs").iterdir() if p.is_dir()]
    stored = yaml.safe_load((run_dir / rd.CONFIG).read_text())["model"]["assign"]
    assert stored["rule"] == "my_rules:assign_centre" and len(stored["source_sha256"]) == 64
    assert stored["params"] == {"shrink": 2.0}
    report = invoke("report", "mine.yaml", "--profile", "mini", "--results", "res")
    assert report.exit_code == 0, report.output
    assert "| Mine" in report.output and "n=1" in report.output

    # Edit the rule so that importing it leaves a mark: reading the store must not import it.
    marker = workdir / "imported"
    (workdir / "my_rules.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n" + textwrap.dedent(RULE))
    status = invoke("status", "--results", "res")
    assert status.exit_code == 0, status.output
    assert len(load_results(workdir / "res")) == 1
    assert not marker.exists()
    # The recipe the user runs is imported: the edited rule has a new run id, not yet run.
    again = invoke("status", "mine.yaml", "--profile", "mini", "--results", "res")
    assert again.exit_code == 0, again.output
    assert marker.exists()
    assert run_dir.name not in again.output


def test_a_bad_param_is_a_one_line_error_in_every_command(workdir):
    (workdir / "mine.yaml").write_text(RECIPE.replace("shrink: 2.0", "shrnk: 2.0"))
    for args in (("show", "mine.yaml"), ("run", "mine.yaml", "--results", "res"),
                 ("report", "mine.yaml", "--results", "res")):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "unknown param 'shrnk'" in lines[0], result.output
    assert not (workdir / "res" / "runs").exists()


def test_inspect_assign_settings_take_a_plugin_and_refuse_prediction_aware_rules(workdir):
    configs = resolve_rule_configs("mini", ["atss", "my_rules:assign_centre"])
    assert configs["my_rules:assign_centre"].model.assign.rule == "my_rules:assign_centre"
    single = resolve_rule_configs("mini", "my_rules:assign_centre",
                                  {"model.assign.params.shrink": 4.0})
    assert single["my_rules:assign_centre"].model.assign.params == {"shrink": 4.0}
    with pytest.raises(ConfigError, match="unknown param 'bogus'"):
        resolve_rule_configs("mini", "my_rules:assign_centre", {"model.assign.params.bogus": 1})
    for rule in ("task_aligned", "simota"):
        with pytest.raises(ConfigError, match="asks for gt_labels, pred_scores, pred_boxes"):
            resolve_rule_configs("mini", rule)
