"""SGD (or AdamW), parameter groups and the warm-up + multi-step learning-rate schedule.

The paper's (maskrcnn-benchmark's) solver:

- SGD with momentum; weight decay ``weight_decay`` on weights and ``weight_decay_bias`` (0) on
  biases; biases learn ``bias_lr_factor`` (x2) faster.
- A parameter is a *bias* when its name ends in ``bias`` (conv, linear and norm biases alike).
  Norm *weights* (BatchNorm / GroupNorm gammas) and the per-level regression scalars keep the
  ordinary weight decay, as in the official code; frozen parameters (``requires_grad=False``)
  are left out of the optimizer.
- The learning rate used for the update made at (0-based) iteration ``it`` is
  ``base_lr_of_group * lr_factor(it)`` with ``lr_factor`` = warm-up factor x step decay.
"""
from __future__ import annotations

from bisect import bisect_right
from typing import Literal, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from atss_bench.config import TrainConfig

Warmup = Literal["constant", "linear", "none"]


def lr_factor(
    iteration: int,
    *,
    warmup: Warmup,
    warmup_factor: float,
    warmup_iters: int,
    steps: Sequence[int],
    gamma: float,
) -> float:
    """Multiplier of the base lr at 0-based ``iteration``.

    - constant warm-up: ``warmup_factor`` for ``iteration < warmup_iters``;
    - linear warm-up: from ``warmup_factor`` at 0 rising linearly to 1 at ``warmup_iters``;
    - then ``gamma ** (number of steps <= iteration)``.
    """
    factor = gamma ** bisect_right(list(steps), iteration)
    if warmup != "none" and iteration < warmup_iters:
        if warmup == "constant":
            factor *= warmup_factor
        else:
            alpha = iteration / warmup_iters
            factor *= warmup_factor * (1.0 - alpha) + alpha
    return factor


class WarmupMultiStepLR(LRScheduler):
    """``lr = base_lr * lr_factor(last_epoch)``: call ``step()`` once after every optimizer step.

    ``last_epoch`` is the 0-based iteration of the *next* update, so a freshly built scheduler
    sets the lr of iteration 0, and its ``state_dict`` restores the schedule exactly on resume.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        steps: Sequence[int],
        gamma: float = 0.1,
        warmup: Warmup = "constant",
        warmup_factor: float = 1.0 / 3.0,
        warmup_iters: int = 500,
        last_epoch: int = -1,
    ) -> None:
        self.steps = list(steps)
        self.gamma = gamma
        self.warmup: Warmup = warmup
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        super().__init__(optimizer, last_epoch)

    def factor(self, iteration: int) -> float:
        return lr_factor(
            iteration, warmup=self.warmup, warmup_factor=self.warmup_factor,
            warmup_iters=self.warmup_iters, steps=self.steps, gamma=self.gamma,
        )

    def get_lr(self) -> list[float]:  # type: ignore[override]
        factor = self.factor(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]


def build_param_groups(
    model: nn.Module, *, base_lr: float, weight_decay: float, weight_decay_bias: float,
    bias_lr_factor: float,
) -> list[dict]:
    """Two groups: weights (base lr, ``weight_decay``) and biases (x ``bias_lr_factor``,
    ``weight_decay_bias``). Empty groups are dropped; frozen parameters are skipped."""
    weights: list[nn.Parameter] = []
    biases: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (biases if name.endswith("bias") else weights).append(param)
    groups = [
        {"params": weights, "lr": base_lr, "weight_decay": weight_decay, "name": "weights"},
        {"params": biases, "lr": base_lr * bias_lr_factor, "weight_decay": weight_decay_bias,
         "name": "biases"},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW over :func:`build_param_groups` of ``model``.

    Both use the same groups and schedule. AdamW's weight decay is decoupled: each step shrinks
    a weight by ``lr x weight_decay`` (torch's AdamW), whatever its gradient.
    """
    groups = build_param_groups(
        model, base_lr=train.base_lr, weight_decay=train.weight_decay,
        weight_decay_bias=train.weight_decay_bias, bias_lr_factor=train.bias_lr_factor,
    )
    if train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=train.base_lr, betas=(0.9, 0.999))
    return torch.optim.SGD(groups, lr=train.base_lr, momentum=train.momentum)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig) -> WarmupMultiStepLR:
    return WarmupMultiStepLR(
        optimizer, steps=train.steps, gamma=train.gamma, warmup=train.warmup,
        warmup_factor=train.warmup_factor, warmup_iters=train.warmup_iters,
    )
