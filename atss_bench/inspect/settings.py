"""What `inspect-assign` compares: one resolved config per rule, and the dataset to read.

Resolution order, later wins (as for a recipe row):

    defaults <- profile.set <- model.assign.strategy = <rule> (its default params) <- --set

``--set model.assign.*`` tunes a rule, so it is only allowed when a single rule is inspected;
the rule itself is chosen with ``rules``, never with ``--set model.assign.strategy``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from atss_bench.config import ASSIGN_CONFIGS, PLUGIN_STRATEGY, ExperimentConfig
from atss_bench.data import coco_split_paths, ensure_mini_coco, resolve_data_root
from atss_bench.errors import ConfigError, DataError
from atss_bench.overrides import ASSIGN_KEY, apply_overrides, default_tree, flatten, validate_config
from atss_bench.recipes import load_profile, resolve_rule

RULES: tuple[str, ...] = ("max_iou", "fcos", "topk_scale", "atss")


def parse_rules(text: str | Sequence[str]) -> list[str]:
    """``"fcos,atss"`` (or a list) -> ["fcos", "atss"]; ConfigError for an unknown rule."""
    items = text.split(",") if isinstance(text, str) else list(text)
    rules = [r.strip() for r in items if r.strip()]
    if not rules:
        raise ConfigError("no rule given", hint=f"rules are {', '.join(RULES)}")
    for rule in rules:
        if rule not in ASSIGN_CONFIGS and not _names_a_plugin(rule):
            raise ConfigError(f"unknown rule {rule!r}",
                              hint=f"rules are {', '.join(RULES)}, or a plug-in: "
                                   "pkg.module:function, file.py:function, an entry point")
    if len(set(rules)) != len(rules):
        raise ConfigError(f"rule listed twice in {','.join(rules)}")
    return rules


def _names_a_plugin(rule: str) -> bool:
    """An import path (``pkg.module:function``, ``file.py:function``) or an installed entry
    point of the ``atss_bench.assigners`` group (looked up, not loaded)."""
    from atss_bench.assign.plugins import is_plugin_spec  # noqa: PLC0415
    from atss_bench.overrides import entry_point_exists  # noqa: PLC0415

    return is_plugin_spec(rule) or (bool(re.fullmatch(PLUGIN_STRATEGY, rule))
                                    and entry_point_exists(rule))


def resolve_rule_configs(profile: str, rules: Sequence[str],
                         overrides: Mapping[str, Any] | None = None, *,
                         with_model: bool = False) -> dict[str, ExperimentConfig]:
    """{rule: the profile's config with model.assign switched to ``rule``, then ``overrides``}.

    Without ``with_model`` (a trained model to take predictions from, ``--checkpoint``), a
    prediction-aware rule is refused (``check_needs_no_predictions``)."""
    rules = parse_rules(rules)
    overrides = flatten(overrides or {})
    for key in overrides:
        if key == ASSIGN_KEY + ".strategy":
            raise ConfigError(f"--set {key}: choose rules with --rules",
                              hint=f"e.g. --rules {','.join(RULES)}")
        if key.startswith(ASSIGN_KEY + ".") and len(rules) > 1:
            raise ConfigError(f"--set {key} tunes one rule, but {len(rules)} rules are inspected",
                              hint="pick a single rule with --rules")
    prof = load_profile(profile)
    tree = apply_overrides(default_tree(), prof.set, f"{prof.path}: set")
    configs = {}
    for rule in rules:
        rule_tree = apply_overrides(tree, {ASSIGN_KEY + ".strategy": rule}, f"rule {rule}")
        rule_tree = apply_overrides(rule_tree, overrides, "--set")
        configs[rule] = resolve_rule(validate_config(rule_tree,
                                                     f"profile {prof.name}, rule {rule}"))
        if not with_model:
            check_needs_no_predictions(rule)
    return configs


def check_needs_no_predictions(rule: str) -> None:
    """ConfigError for a rule that chooses positives from a model's predictions (task_aligned,
    simota, a prediction-aware plug-in) when no trained model is given."""
    from atss_bench.assign import ASSIGNERS, rule_inputs  # noqa: PLC0415  (imports torch)
    from atss_bench.assign.plugins import load_rule  # noqa: PLC0415

    fn = ASSIGNERS[rule] if rule in ASSIGNERS else load_rule(rule).fn
    inputs = rule_inputs(fn)
    if inputs:
        raise ConfigError(f"rule {rule!r} asks for {', '.join(inputs)}: without a trained "
                          "model inspect-assign has GT boxes only, no predictions",
                          hint="--checkpoint RUN takes them from a trained run's model "
                               "(a run folder, run id or checkpoint file)")


def resolve_dataset_root(config: ExperimentConfig, data_root: str | Path | None = None) -> Path:
    """The COCO-layout folder to inspect.

    ``data_root`` if given; else ``data.kind == "mini"``: the cached mini-COCO of ``data.mini``
    (generated on first use, like training); else ``data.root`` or ``$ATSS_BENCH_DATA``.
    """
    if data_root is not None:
        return Path(data_root).expanduser()
    if config.data.kind == "mini":
        return Path(ensure_mini_coco(None, **config.data.mini.model_dump()))
    root = resolve_data_root(config.data.root)
    if root is None:
        raise DataError("no COCO dataset root given",
                        hint="pass --data-root DIR, export ATSS_BENCH_DATA=/path/to/coco "
                             "or use --data mini")
    return root


def annotation_file(root: Path, split: str) -> Path:
    """``root/annotations/instances_<split>.json`` (DataError if the layout is wrong)."""
    return coco_split_paths(root, split)[0]
