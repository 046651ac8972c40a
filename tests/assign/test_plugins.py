"""Plug-in rules: the three ways to name one, param checks, source hashes in run ids."""
from __future__ import annotations

import hashlib
import importlib.metadata
import textwrap
from pathlib import Path

import pytest
import torch

from atss_bench.assign import BACKGROUND, assign, assign_batched
from atss_bench.assign.plugins import load_rule, resolve_plugin_config
from atss_bench.config import PluginAssign
from atss_bench.errors import ConfigError, TrainingError
from atss_bench.model import build_assigner
from atss_bench.recipes import load_recipe
from tests.assign.test_api import small_anchors

RULE = '''
import torch


def assign_inside(anchors, num_anchors_per_level, gt_boxes, shrink: float, offset=0):
    """Each anchor whose centre is inside a GT shrunk by ``shrink`` px: the first such GT."""
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    inner = gt_boxes + torch.tensor([shrink, shrink, -shrink, -shrink])
    inside = ((centres[:, None] > inner[None, :, :2]) & (centres[:, None] < inner[None, :, 2:]))
    inside = inside.all(dim=2)
    first = torch.where(inside, torch.arange(len(gt_boxes)), len(gt_boxes)).amin(dim=1)
    return torch.where(first < len(gt_boxes), first + offset, -1)
'''
GTS = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 8.0, 32.0, 24.0]])
# small_anchors: 4x4 at stride 8 (centres 4, 12, 20, 28), then 1x2 at stride 16 (8, 24 / 8).
EXPECTED = [0, 0, -1, -1, 0, 0, 1, 1, -1, 1, 1, 1, -1, -1, -1, -1, 0, -1]


def write_rule(folder: Path, name: str, text: str = RULE) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def rule_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_module_form_and_file_form_give_the_rule_answer(rule_dir):
    write_rule(rule_dir, "rules_a")
    anchors, napl = small_anchors()
    by_module = assign("rules_a:assign_inside", anchors, napl, GTS, shrink=0.0)
    by_file = assign(f"{rule_dir / 'rules_a.py'}:assign_inside", anchors, napl, GTS, shrink=0.0)
    assert by_module.tolist() == EXPECTED
    assert by_file.tolist() == EXPECTED
    batch = assign_batched("rules_a:assign_inside", anchors, napl,
                           torch.stack([GTS, GTS.flip(0)]), torch.ones(2, 2, dtype=torch.bool),
                           shrink=0.0)
    assert batch[0].tolist() == EXPECTED
    # GTs swapped: where both contain a centre the first listed (now the old GT 1) wins.
    assert batch[1].tolist() == [1, 1, -1, -1, 1, 0, 0, 0, -1, 0, 0, 0, -1, -1, -1, -1, 1, -1]


def test_params_are_checked_against_the_signature(rule_dir):
    write_rule(rule_dir, "rules_b")
    anchors, napl = small_anchors()
    with pytest.raises(ConfigError, match="unknown param 'shrnk'.*rules_b:assign_inside takes "
                                          "shrink, offset"):
        assign("rules_b:assign_inside", anchors, napl, GTS, shrnk=1.0)
    with pytest.raises(ConfigError, match="needs param 'shrink'"):
        assign("rules_b:assign_inside", anchors, napl, GTS)
    with pytest.raises(ConfigError, match="'pred_boxes' .* input"):
        resolve_plugin_config(PluginAssign(strategy="rules_b:assign_inside",
                                           params={"shrink": 1.0, "pred_boxes": [1]}))


@pytest.mark.parametrize("strategy, words", [
    ("no_such_module_xyz:fn", "cannot import no_such_module_xyz"),
    ("missing/file.py:fn", "no file"),
    ("rules_c:nope", "has no function 'nope'"),
    ("not_an_entry_point_xyz", "unknown assign strategy 'not_an_entry_point_xyz'"),
    ("rules_broken:fn", "cannot import rules_broken: SyntaxError"),
])
def test_a_rule_that_cannot_be_loaded_is_a_one_line_config_error(rule_dir, strategy, words):
    write_rule(rule_dir, "rules_c")
    write_rule(rule_dir, "rules_broken", "def fn(:\n")
    with pytest.raises(ConfigError, match=words):
        load_rule(strategy)


def test_an_entry_point_is_found_by_name(rule_dir, monkeypatch):
    write_rule(rule_dir, "rules_ep")
    entry = importlib.metadata.EntryPoint("inside", "rules_ep:assign_inside",
                                          "atss_bench.assigners")
    real = importlib.metadata.entry_points

    def fake(**kwargs):
        if kwargs.get("group") == "atss_bench.assigners":
            return importlib.metadata.EntryPoints([entry] if kwargs.get("name") == "inside"
                                                  else [])
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    monkeypatch.syspath_prepend(str(rule_dir))
    rule = load_rule("inside")
    assert rule.qualname == "rules_ep:assign_inside"
    anchors, napl = small_anchors()
    assert assign("inside", anchors, napl, GTS, shrink=0.0).tolist() == EXPECTED


def _plugin_recipe(folder: Path, strategy: str, params: str = "{shrink: 2.0}") -> Path:
    recipe = folder / "mine.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        table: mine
        title: "My rule"
        rows:
          - id: atss
            label: ATSS
            set: {{model.assign.strategy: atss}}
          - id: mine
            label: Mine
            set: {{model.assign.strategy: "{strategy}", model.assign.params: {params}}}
        """))
    return recipe


def _ids(recipe: Path) -> dict[str, str]:
    return {e.row_id: e.run_id for e in load_recipe(recipe).experiments(profile="mini")}


def test_the_run_id_covers_the_rule_name_and_source(rule_dir):
    path = write_rule(rule_dir, "rules_d")
    recipe = _plugin_recipe(rule_dir, "rules_d:assign_inside")
    (experiment,) = [e for e in load_recipe(recipe).experiments(profile="mini")
                     if e.row_id == "mine"]
    assign_config = experiment.config.model.assign
    assert assign_config.rule == "rules_d:assign_inside"
    assert assign_config.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert assign_config.params == {"shrink": 2.0}
    first = _ids(recipe)
    assert _ids(recipe) == first  # same source: the same runs
    path.write_text(path.read_text() + "\n# a comment is an edit too\n")
    edited = _ids(recipe)
    assert edited["mine"] != first["mine"] and edited["atss"] == first["atss"]
    other_params = _ids(_plugin_recipe(rule_dir, "rules_d:assign_inside", "{shrink: 3.0}"))
    assert other_params["mine"] not in (first["mine"], edited["mine"])


def test_bad_params_in_a_recipe_fail_when_it_is_loaded(rule_dir):
    write_rule(rule_dir, "rules_e")
    with pytest.raises(ConfigError, match="unknown param 'radius'"):
        load_recipe(_plugin_recipe(rule_dir, "rules_e:assign_inside", "{radius: 2}"))
    with pytest.raises(ConfigError, match="needs param 'shrink'"):
        load_recipe(_plugin_recipe(rule_dir, "rules_e:assign_inside", "{}"))


def test_a_detector_refuses_a_rule_edited_after_its_run_id_or_never_resolved(rule_dir):
    path = write_rule(rule_dir, "rules_f")
    recipe = _plugin_recipe(rule_dir, "rules_f:assign_inside")
    (experiment,) = [e for e in load_recipe(recipe).experiments(profile="mini")
                     if e.row_id == "mine"]
    assert build_assigner(experiment.config.model).params == {"shrink": 2.0}
    path.write_text(path.read_text() + "\n# edited\n")
    with pytest.raises(ConfigError, match="changed since its run id"):
        build_assigner(experiment.config.model)
    unresolved = experiment.config.model.model_copy(update={
        "assign": PluginAssign(strategy="rules_f:assign_inside", params={"shrink": 2.0})})
    with pytest.raises(ConfigError, match="never resolved"):
        build_assigner(unresolved)


def test_output_outside_the_label_space_stops_training(rule_dir):
    write_rule(rule_dir, "rules_g", "import torch\n\n"
               "def fn(anchors, napl, gt_boxes):\n"
               "    return torch.full((len(anchors),), len(gt_boxes), dtype=torch.int64)\n")
    write_rule(rule_dir, "rules_h", "import torch\n\n"
               "def fn(anchors, napl, gt_boxes):\n"
               "    return torch.zeros(len(anchors), dtype=torch.int32)\n")
    anchors, napl = small_anchors()
    valid = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(TrainingError, match="label 2 with 2 GTs"):
        assign_batched("rules_g:fn", anchors, napl, GTS[None], valid)
    with pytest.raises(TrainingError, match="torch.int32"):
        assign_batched("rules_h:fn", anchors, napl, GTS[None], valid)


def test_a_prediction_aware_plugin_gets_only_the_inputs_it_names(rule_dir):
    write_rule(rule_dir, "rules_i", "import torch\n\n"
               "def fn(anchors, napl, gt_boxes, *, gt_labels, pred_scores):\n"
               "    best = pred_scores[:, gt_labels].argmax(dim=1) if len(gt_boxes) else None\n"
               "    if best is None:\n"
               "        return torch.full((len(anchors),), -1, dtype=torch.int64)\n"
               "    return torch.where(pred_scores.max(dim=1).values > 0.5, best, -1)\n")
    anchors, napl = small_anchors()
    scores = torch.zeros(len(anchors), 3)
    scores[0, 2], scores[5, 1] = 0.9, 0.8
    labels = torch.tensor([1, 2])
    result = assign("rules_i:fn", anchors, napl, GTS, gt_labels=labels, pred_scores=scores,
                    pred_boxes=torch.zeros(len(anchors), 4))
    expected = [BACKGROUND] * len(anchors)
    expected[0], expected[5] = 1, 0
    assert result.tolist() == expected
    with pytest.raises(ValueError, match="needs pred_scores"):
        assign("rules_i:fn", anchors, napl, GTS, gt_labels=labels)


def test_the_example_recipe_shares_table_9s_runs_and_resolves_its_rule(monkeypatch):
    repo = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(repo)  # the example names its rule by a path from the repository root
    table9 = {e.row_id: e.run_id for e in
              load_recipe(repo / "recipes" / "table9.yaml").experiments(profile="mini")}
    example = {e.row_id: e for e in
               load_recipe(repo / "examples" / "my_rule.yaml").experiments(profile="mini")}
    assert {row: example[row].run_id for row in table9} == table9
    rule = example["atss_floor"].config.model.assign
    assert rule.rule == "my_rule:assign_atss_floor" and rule.params == {"topk": 9,
                                                                         "iou_floor": 0.2}
    source = (repo / "examples" / "my_rule.py").read_bytes()
    assert rule.source_sha256 == hashlib.sha256(source).hexdigest()


@pytest.mark.parametrize("strategy", ["rm -rf /:x", "mod:fn\nx", "a" * 400 + ".py:fn", ""])
def test_a_strategy_that_names_nothing_importable_is_refused_before_any_import(strategy):
    from atss_bench.overrides import apply_overrides, default_tree

    with pytest.raises(ConfigError, match="model.assign.strategy"):
        apply_overrides(default_tree(), {"model.assign.strategy": strategy}, "--set")
    with pytest.raises(Exception, match="strategy"):
        PluginAssign(strategy=strategy)
