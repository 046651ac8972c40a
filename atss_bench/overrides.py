"""Dotted overrides (``model.head.norm: none``) applied to the default experiment config.

Every key is checked against the config's schema before anything runs: an unknown key is a
``ConfigError`` that names where it came from and suggests the nearest valid key.
"""
from __future__ import annotations

import copy
import difflib
import importlib.metadata
import re
from typing import Any, Iterable, Mapping

from pydantic import ValidationError

from atss_bench.config import (
    ASSIGN_CONFIGS, ASSIGNERS_ENTRY_POINT_GROUP, PLUGIN_STRATEGY, PLUGIN_STRATEGY_MAX,
    PLUGIN_TAG, ExperimentConfig,
)
from atss_bench.errors import ConfigError
from atss_bench.yamlio import parse_yaml

ASSIGN_KEY = "model.assign"


def default_tree() -> dict[str, Any]:
    """The default experiment config as a plain nested dict."""
    return ExperimentConfig().model_dump()


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise ConfigError(f"{prefix}{key!r}: keys must be strings")
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _all_keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys.append(prefix + key)
        if isinstance(value, dict):
            keys.extend(_all_keys(value, prefix + key + "."))
    return keys


def _unknown_key(dotted: str, tree: Mapping[str, Any], where: str) -> ConfigError:
    close = difflib.get_close_matches(dotted, _all_keys(tree), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else "run `atss-bench show RECIPE` to see every key"
    return ConfigError(f"{where}: unknown key '{dotted}'", hint=hint)


def _set(tree: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    if dotted == ASSIGN_KEY + ".strategy":
        tree["model"]["assign"] = _assign_defaults(value, where)
        return
    if dotted.startswith(ASSIGN_KEY + ".params.") and isinstance(
            tree["model"]["assign"].get("params"), dict):
        # A plug-in's params are its function's keyword arguments, checked when it is resolved.
        tree["model"]["assign"]["params"][dotted.removeprefix(ASSIGN_KEY + ".params.")] = \
            copy.deepcopy(value)
        return
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for key in parents:
        if not isinstance(node, dict) or key not in node or not isinstance(node[key], dict):
            raise _unknown_key(dotted, tree, where)
        node = node[key]
    if leaf not in node:
        raise _unknown_key(dotted, tree, where)
    node[leaf] = copy.deepcopy(value)


def _assign_defaults(strategy: Any, where: str) -> dict[str, Any]:
    """The assign section of ``strategy`` with its default params (a plug-in: no params yet)."""
    variant = ASSIGN_CONFIGS.get(strategy) if isinstance(strategy, str) else None
    if variant is not None:
        return variant().model_dump()
    if (isinstance(strategy, str) and len(strategy) <= PLUGIN_STRATEGY_MAX
            and re.fullmatch(PLUGIN_STRATEGY, strategy)
            and (":" in strategy or entry_point_exists(strategy))):
        return {"strategy": strategy, "params": {}}
    raise ConfigError(
        f"{where}: '{ASSIGN_KEY}.strategy' must be one of {sorted(ASSIGN_CONFIGS)} or a "
        f"plug-in (pkg.module:function, file.py:function, entry-point name), got {strategy!r:.200}",
        hint="the built-in sample-selection rules are " + ", ".join(ASSIGN_CONFIGS),
    )


def entry_point_exists(name: str) -> bool:
    """An installed plug-in of that name in the ``atss_bench.assigners`` group (package metadata
    only: nothing is imported)."""
    return bool(importlib.metadata.entry_points(group=ASSIGNERS_ENTRY_POINT_GROUP, name=name))


def _strategy_first(items: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    # Switching the rule resets its parameters, so it must come before them.
    return sorted(items, key=lambda kv: kv[0] != ASSIGN_KEY + ".strategy")


def apply_overrides(tree: dict[str, Any], overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Return a copy of ``tree`` with the (nested or dotted) ``overrides`` applied."""
    result = copy.deepcopy(tree)
    for dotted, value in _strategy_first(flatten(overrides).items()):
        _set(result, dotted, value, where)
    return result


def parse_set_option(item: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is bounded YAML 1.2 (``1e-3``, ``[3, 5]``,
    ``010`` is 10; ``yes``/``on`` stay strings for the typed config to judge: see ``yamlio``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item[:200]!r}: expected key=value",
                          hint="e.g. --set train.max_iter=200")
    value = parse_yaml(raw, f"--set {key.strip()[:100]!r}") if raw.strip() else ""
    return key.strip(), value


def validate_config(tree: Mapping[str, Any], where: str) -> ExperimentConfig:
    """Validate a resolved tree; the first problem becomes a one-line ``ConfigError``."""
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as exc:
        error = exc.errors()[0]
        # Drop the union tag pydantic inserts (model.assign.atss.topk -> model.assign.topk).
        loc = ".".join(str(p) for p in error["loc"]
                       if p not in ASSIGN_CONFIGS and p != PLUGIN_TAG)
        value = error.get("input")
        shown = "" if isinstance(value, (dict, list)) else f" (got {value!r})"
        more = f" and {exc.error_count() - 1} more" if exc.error_count() > 1 else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{where}: {loc}: {message}{shown}{more}",
                          hint="fix the value in the recipe, profile or --set") from None
