"""The detector with prediction-aware rules: what it passes them, TOOD's warm-up, plug-ins."""
from __future__ import annotations

import textwrap

import pytest
import torch

from atss_bench.model import build_detector
from atss_bench.overrides import apply_overrides, default_tree, validate_config
from atss_bench.recipes import resolve_rule

NUM_CLASSES = 3
TINY = {"model.backbone": {"name": "resnet18", "weights": "none", "frozen_stages": 0,
                           "norm": "bn", "width": 0.25},
        "model.fpn.channels": 16, "model.head": {"channels": 16, "num_convs": 1}}
TARGET = {"boxes": torch.tensor([[10.0, 20.0, 70.0, 90.0], [60.0, 40.0, 120.0, 100.0]]),
          "labels": torch.tensor([1, 2])}


def _detector(**overrides):
    tree = apply_overrides(default_tree(), {**TINY, **overrides}, "test")
    torch.manual_seed(0)
    config = resolve_rule(validate_config(tree, "test"))
    return build_detector(config.model, NUM_CLASSES)


def _image():
    return torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("strategy", ["task_aligned", "simota"])
def test_prediction_aware_rules_train_with_finite_losses(strategy):
    model = _detector(**{"model.assign.strategy": strategy})
    model.train()
    losses = model([_image()], [TARGET])
    assert {"loss_cls", "loss_reg"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()  # predictions went in detached: the graph is the losses'


def test_tood_warm_up_uses_atss_for_its_steps_and_the_counter_is_checkpointed(monkeypatch):
    model = _detector(**{"model.assign.strategy": "task_aligned",
                         "model.assign.warmup_iters": 2})
    used = []
    real = type(model.assigner).__call__

    def spy(self, *args, **kwargs):
        used.append(self.strategy)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(model.assigner), "__call__", spy)
    model.train()
    for _ in range(3):
        model([_image()], [TARGET])
    assert used == ["atss", "atss", "task_aligned"]
    assert int(model.state_dict()["assign_step"]) == 3
    fresh = _detector(**{"model.assign.strategy": "task_aligned",
                         "model.assign.warmup_iters": 2})
    fresh.load_state_dict(model.state_dict())
    assert int(fresh.assign_step) == 3
    assert "assign_step" not in _detector().state_dict()  # other detectors: keys unchanged


def test_a_plugin_gets_detached_predictions_of_the_right_shapes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seen_rules.py").write_text(textwrap.dedent("""
        import torch
        SEEN = []

        def fn(anchors, num_anchors_per_level, gt_boxes, *, pred_boxes, gt_labels):
            SEEN.append((anchors.shape, gt_boxes.shape, pred_boxes.shape, pred_boxes.requires_grad,
                         gt_labels.tolist()))
            return torch.full((len(anchors),), -1, dtype=torch.int64)
        """))
    model = _detector(**{"model.assign.strategy": "seen_rules:fn"})
    model.train()
    model([_image(), _image()], [TARGET, {"boxes": TARGET["boxes"][:1],
                                          "labels": TARGET["labels"][:1]}])
    import seen_rules

    (first, second) = seen_rules.SEEN
    num_anchors = first[0][0]
    assert first[1:] == (torch.Size([2, 4]), torch.Size([num_anchors, 4]), False, [1, 2])
    assert second[1:] == (torch.Size([1, 4]), torch.Size([num_anchors, 4]), False, [1])
