"""The solver: exact lr at hand-picked iterations, bias lr x2, no decay on biases."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from atss_bench.config import TrainConfig
from atss_bench.engine.solver import (build_optimizer, build_param_groups, build_scheduler,
                                      lr_factor)


def _lrs_by_iteration(train: TrainConfig, model: nn.Module, last: int) -> list[list[float]]:
    """lr of every group used for the updates of iterations 0..last (scheduler stepped after
    each update, as the training loop does)."""
    optimizer = build_optimizer(model, train)
    scheduler = build_scheduler(optimizer, train)
    seen = []
    for _ in range(last + 1):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1))


def test_constant_warmup_then_steps() -> None:
    train = TrainConfig(base_lr=0.01, warmup="constant", warmup_factor=1 / 3, warmup_iters=5,
                        steps=[8, 10], gamma=0.1, bias_lr_factor=2.0)
    lrs = _lrs_by_iteration(train, _model(), 11)
    expected_weight = {0: 0.01 / 3, 4: 0.01 / 3, 5: 0.01, 7: 0.01, 8: 0.001, 9: 0.001,
                       10: 0.0001, 11: 0.0001}
    for iteration, lr in expected_weight.items():
        assert lrs[iteration][0] == pytest.approx(lr, rel=1e-12), iteration
        assert lrs[iteration][1] == pytest.approx(2 * lr, rel=1e-12), iteration


def test_linear_warmup_is_exact() -> None:
    train = TrainConfig(base_lr=0.1, warmup="linear", warmup_factor=0.2, warmup_iters=4,
                        steps=[6], gamma=0.5)
    lrs = [group[0] for group in _lrs_by_iteration(train, _model(), 7)]
    # factor = 0.2 * (1 - it / 4) + it / 4
    assert lrs[:4] == pytest.approx([0.02, 0.04, 0.06, 0.08], rel=1e-12)
    assert lrs[4:] == pytest.approx([0.1, 0.1, 0.05, 0.05], rel=1e-12)


def test_no_warmup_and_paper_schedule() -> None:
    paper = dict(warmup="constant", warmup_factor=1 / 3, warmup_iters=500, steps=[60000, 80000],
                 gamma=0.1)
    assert lr_factor(0, **paper) == pytest.approx(1 / 3)
    assert lr_factor(499, **paper) == pytest.approx(1 / 3)
    assert lr_factor(500, **paper) == 1.0
    assert lr_factor(59999, **paper) == 1.0
    assert lr_factor(60000, **paper) == pytest.approx(0.1)
    assert lr_factor(89999, **paper) == pytest.approx(0.01)
    assert lr_factor(0, **{**paper, "warmup": "none"}) == 1.0


def test_param_groups_bias_lr_and_decay() -> None:
    model = _model()
    model[0].weight.requires_grad_(False)  # frozen: left out of the optimizer
    groups = build_param_groups(model, base_lr=0.01, weight_decay=1e-4, weight_decay_bias=0.0,
                                bias_lr_factor=2.0)
    by_name = {group["name"]: group for group in groups}
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in by_name["biases"]["params"]) == ["0.bias", "1.bias",
                                                                        "2.bias"]
    assert sorted(names[id(p)] for p in by_name["weights"]["params"]) == ["1.weight", "2.weight"]
    assert by_name["biases"]["lr"] == pytest.approx(0.02)
    assert by_name["biases"]["weight_decay"] == 0.0
    assert by_name["weights"]["lr"] == pytest.approx(0.01)
    assert by_name["weights"]["weight_decay"] == 1e-4


def test_sgd_update_applies_no_decay_to_biases() -> None:
    """One SGD step with zero gradients: weights shrink by lr * wd, biases do not move."""
    model = nn.Linear(3, 2)
    train = TrainConfig(base_lr=0.5, weight_decay=0.1, warmup="none", momentum=0.0)
    optimizer = build_optimizer(model, train)
    weight, bias = model.weight.detach().clone(), model.bias.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert torch.allclose(model.weight, weight * (1 - 0.5 * 0.1))
    assert torch.equal(model.bias, bias)


def test_adamw_first_step_is_exact() -> None:
    """AdamW's first update is lr x sign(grad) (bias-corrected moments), after the decoupled
    decay lr x weight_decay x w on weights; biases get the x2 lr and no decay."""
    model = nn.Linear(3, 2)
    train = TrainConfig(optimizer="adamw", base_lr=0.5, weight_decay=0.1, warmup="none",
                        bias_lr_factor=2.0)
    optimizer = build_optimizer(model, train)
    assert isinstance(optimizer, torch.optim.AdamW)
    weight, bias = model.weight.detach().clone(), model.bias.detach().clone()
    model.weight.grad = torch.full_like(weight, 3.0)
    model.bias.grad = torch.full_like(bias, -2.0)
    optimizer.step()
    eps = 1e-8 / 3.0  # Adam's eps relative to |grad|: a 1e-9 change, below float32 precision
    assert torch.allclose(model.weight, weight * (1 - 0.5 * 0.1) - 0.5 * (1 - eps), atol=1e-6)
    assert torch.allclose(model.bias, bias + 1.0, atol=1e-6)


def test_sgd_is_the_default() -> None:
    assert isinstance(build_optimizer(_model(), TrainConfig()), torch.optim.SGD)


def test_scheduler_state_round_trip() -> None:
    train = TrainConfig(base_lr=0.01, warmup="linear", warmup_factor=0.1, warmup_iters=10,
                        steps=[20])
    model = _model()
    optimizer = build_optimizer(model, train)
    scheduler = build_scheduler(optimizer, train)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    fresh_opt = build_optimizer(model, train)
    fresh = build_scheduler(fresh_opt, train)
    fresh_opt.load_state_dict(optimizer.state_dict())
    fresh.load_state_dict(state)
    for _ in range(15):
        optimizer.step()
        scheduler.step()
        fresh_opt.step()
        fresh.step()
        assert [g["lr"] for g in fresh_opt.param_groups] == [g["lr"] for g in optimizer.param_groups]
