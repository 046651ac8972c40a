"""Plug-in rules: a user's sample-selection function, named by a recipe or flag.

A plug-in has the single-image signature of ``atss_bench.assign.assign`` without the strategy::

    fn(anchors [N, 4], num_anchors_per_level, gt_boxes [M, 4], **params) -> int64 [N]

with the same label space (GT index >= 0, BACKGROUND -1, IGNORE -2). A prediction-aware rule
also names any of the keyword arguments in ``PREDICTION_INPUTS`` (``gt_labels`` [M] int64,
``pred_scores`` [N, C] sigmoid scores, ``pred_boxes`` [N, 4] decoded x0 y0 x1 y1, all detached);
the detector passes only those the signature names. Every other parameter after the first
three is a param of the rule, set under ``model.assign.params`` (no default: required).

Where a rule is named (``strategy``):
    "pkg.module:function"         imported as a module (the working directory is searched first)
    "path/to/rules.py:function"   a Python file, loaded by path
    "name"                        an entry point ``name`` in the ``atss_bench.assigners`` group

Importing runs the module's code. That is the feature, so it happens only for a rule named in
the recipe or ``--set`` the user runs (``resolve_plugin_config``) or passed to the Python API;
nothing here is called for a config read back from a results folder.

The run id covers the strategy as written, the rule's qualified name and the SHA-256 of its
module's source file (``rule`` and ``source_sha256`` in the config): editing the file makes new
runs. A detector built from a config whose recorded hash no longer matches the file refuses to
train (``check_source_unchanged``), so a queued job never runs edited code under an old id.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from atss_bench.assign._common import BACKGROUND, IGNORE
from atss_bench.config import ASSIGNERS_ENTRY_POINT_GROUP, ExperimentConfig, PluginAssign
from atss_bench.errors import ConfigError, TrainingError

ENTRY_POINT_GROUP = ASSIGNERS_ENTRY_POINT_GROUP
PREDICTION_INPUTS = ("gt_labels", "pred_scores", "pred_boxes")
NUM_POSITIONAL = 3  # anchors, num_anchors_per_level, gt_boxes
_MODULE_FORM = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_FILE_FORM = re.compile(r"[^:\x00-\x1f]+\.py:[A-Za-z_]\w*")


@dataclass(frozen=True)
class LoadedRule:
    """An imported plug-in: what the config records about it, and the function itself."""

    strategy: str  # as written in the recipe or flag
    qualname: str  # "module:function"
    source_sha256: str
    fn: Callable[..., Tensor]

    @property
    def inputs(self) -> tuple[str, ...]:
        """The prediction inputs its signature names."""
        names = inspect.signature(self.fn).parameters
        return tuple(name for name in PREDICTION_INPUTS if name in names)

    def params(self) -> tuple[dict[str, inspect.Parameter], bool]:
        """Its params (name -> Parameter) and whether it takes **kwargs."""
        parameters = list(inspect.signature(self.fn).parameters.values())
        positional = [p for p in parameters if p.kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        if len(positional) < NUM_POSITIONAL:
            raise ConfigError(
                f"plug-in rule {self.qualname} takes {len(positional)} positional arguments",
                hint="its signature must start (anchors, num_anchors_per_level, gt_boxes)")
        skipped = {p.name for p in positional[:NUM_POSITIONAL]} | set(PREDICTION_INPUTS)
        params = {p.name: p for p in parameters if p.name not in skipped and p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        return params, takes_any


def is_plugin_spec(strategy: str) -> bool:
    """Whether ``strategy`` is written as an import path (module or file form)."""
    return bool(_MODULE_FORM.fullmatch(strategy) or _FILE_FORM.fullmatch(strategy))


def load_rule(strategy: str) -> LoadedRule:
    """Import the rule named ``strategy`` (ConfigError, one line, when it cannot be loaded)."""
    if _FILE_FORM.fullmatch(strategy):
        path_text, name = strategy.rsplit(":", 1)
        module = _import_file(Path(path_text), strategy)
    elif _MODULE_FORM.fullmatch(strategy):
        module_name, name = strategy.split(":", 1)
        module = _import_module(module_name, strategy)
    else:
        return _load_entry_point(strategy)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"assign strategy {strategy!r}: {module.__name__} has no function "
                          f"{name!r}", hint="name it as module:function")
    return LoadedRule(strategy, f"{module.__name__}:{name}", source_sha256(fn, strategy), fn)


def _load_entry_point(strategy: str) -> LoadedRule:
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=strategy)
    if not found:
        from atss_bench.assign.table import ASSIGNERS  # noqa: PLC0415  (table imports us)

        raise ConfigError(
            f"unknown assign strategy {strategy!r}",
            hint=f"built-in rules: {', '.join(ASSIGNERS)}; a plug-in is pkg.module:function, "
                 f"file.py:function or an entry point in group {ENTRY_POINT_GROUP}")
    entry = next(iter(found))
    try:
        fn = entry.load()
    except Exception as exc:  # noqa: BLE001  (the user's module: any error is a bad rule)
        raise ConfigError(f"assign strategy {strategy!r}: entry point {entry.value} failed to "
                          f"load: {type(exc).__name__}: {exc}"[:500]) from None
    if not callable(fn):
        raise ConfigError(f"assign strategy {strategy!r}: entry point {entry.value} is not a "
                          "function")
    qualname = f"{fn.__module__}:{fn.__qualname__}"
    return LoadedRule(strategy, qualname, source_sha256(fn, strategy), fn)


@contextmanager
def _working_directory_on_path() -> Iterator[None]:
    """Like ``python -m``: the working directory is searched first (a console script's is not)."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


# Module name -> SHA-256 of its file when this process imported it: a file edited since is
# imported again, so a long-lived process (a notebook) never runs old code under a new run id.
_IMPORTED_SHA: dict[str, str] = {}


def _import_module(module_name: str, strategy: str) -> Any:
    try:
        with _working_directory_on_path():
            module = importlib.import_module(module_name)
            source = getattr(module, "__file__", None)
            if source and Path(source).is_file():
                sha = hashlib.sha256(Path(source).read_bytes()).hexdigest()
                if _IMPORTED_SHA.setdefault(module_name, sha) != sha:
                    module = importlib.reload(module)
                    _IMPORTED_SHA[module_name] = sha
            return module
    except Exception as exc:  # noqa: BLE001  (the user's module: any error is a bad rule)
        raise ConfigError(f"assign strategy {strategy!r}: cannot import {module_name}: "
                          f"{type(exc).__name__}: {exc}"[:500],
                          hint="run from the folder that holds the package, or install it"
                          ) from None


def _import_file(path: Path, strategy: str) -> Any:
    """A rule file loaded by path, once per (path, content) in this process."""
    if not path.is_file():
        raise ConfigError(f"assign strategy {strategy!r}: no file {str(path)[:300]!r}")
    resolved = path.resolve()
    digest = hashlib.sha256(resolved.read_bytes()).hexdigest()
    module_name = resolved.stem
    key = f"_atss_bench_rule_{digest[:16]}_{re.sub(r'[^A-Za-z0-9_]', '_', resolved.stem)}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise ConfigError(f"assign strategy {strategy!r}: cannot load {str(path)[:300]!r}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001  (the user's module: any error is a bad rule)
        raise ConfigError(f"assign strategy {strategy!r}: {path.name} failed to load: "
                          f"{type(exc).__name__}: {exc}"[:500]) from None
    sys.modules[key] = module
    return module


def source_sha256(fn: Callable[..., Any], strategy: str) -> str:
    """SHA-256 of the source file of ``fn``'s module (of ``fn`` alone when it has no file)."""
    try:
        source_file = inspect.getsourcefile(fn)
        if source_file and Path(source_file).is_file():
            return hashlib.sha256(Path(source_file).read_bytes()).hexdigest()
        return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
    except (OSError, TypeError):
        raise ConfigError(f"assign strategy {strategy!r}: its source cannot be read, so runs "
                          "could not tell its versions apart",
                          hint="a plug-in rule must be a Python function in a .py file") from None


def check_params(rule: LoadedRule, params: Mapping[str, Any]) -> None:
    """ConfigError naming the first unknown or missing param of ``rule``."""
    accepted, takes_any = rule.params()
    for name in params:
        if name in PREDICTION_INPUTS:
            raise ConfigError(f"param {name!r} of assign strategy {rule.strategy!r} is an input "
                              "the detector passes, not a param")
        if name not in accepted and not takes_any:
            raise ConfigError(f"unknown param {name!r} for assign strategy {rule.strategy!r}",
                              hint=f"{rule.qualname} takes {', '.join(accepted) or 'no params'}")
    for name, param in accepted.items():
        if param.default is inspect.Parameter.empty and name not in params:
            raise ConfigError(f"assign strategy {rule.strategy!r} needs param {name!r}",
                              hint=f"set model.assign.params.{name}")


def resolve_plugin_config(config: PluginAssign) -> PluginAssign:
    """``config`` with ``rule`` and ``source_sha256`` filled in from the imported rule, after
    checking its params against the function's signature."""
    rule = load_rule(config.strategy)
    check_params(rule, config.params)
    return config.model_copy(update={"rule": rule.qualname, "source_sha256": rule.source_sha256})


def resolve_config_rule(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with its plug-in rule resolved (``resolve_plugin_config``); others as given."""
    assign = config.model.assign
    if not isinstance(assign, PluginAssign):
        return config
    model = config.model.model_copy(update={"assign": resolve_plugin_config(assign)})
    return config.model_copy(update={"model": model})


def check_source_unchanged(config: PluginAssign) -> LoadedRule:
    """The rule of a resolved config, refusing one whose source changed since its run id."""
    if not config.source_sha256:
        raise ConfigError(f"plug-in rule {config.strategy!r} was never resolved, so its run id "
                          "does not cover its source",
                          hint="build configs through a recipe (load_recipe) or "
                               "atss_bench.assign.plugins.resolve_plugin_config")
    rule = load_rule(config.strategy)
    if rule.source_sha256 != config.source_sha256 or rule.qualname != config.rule:
        raise ConfigError(f"plug-in rule {config.strategy!r} changed since its run id was made "
                          f"(source {rule.source_sha256[:12]}, recorded "
                          f"{config.source_sha256[:12]})",
                          hint="run the recipe again: the edited rule gets a new run id")
    check_params(rule, config.params)
    return rule


class PluginAssigner:
    """A plug-in behind the internal batched signature of ``ASSIGNERS``: one call per image.

    (anchors [N, 4], num_anchors_per_level, gt_boxes [B, M, 4], gt_valid [B, M], *,
    gt_labels [B, M], pred_scores [B, N, C], pred_boxes [B, N, 4], **params) -> int64 [B, N]
    Each image's output is checked against the label space (TrainingError naming the rule).
    """

    def __init__(self, rule: LoadedRule) -> None:
        self.rule = rule
        self.inputs = rule.inputs

    def __call__(self, anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor,
                 gt_valid: Tensor, **kwargs: Any) -> Tensor:
        given = {name: kwargs.pop(name) for name in PREDICTION_INPUTS if name in kwargs}
        rows = []
        for b in range(gt_boxes.shape[0]):
            slots = gt_valid[b].nonzero()[:, 0]  # [M_b]
            inputs = {name: _per_image(name, value, b, slots) for name, value in given.items()
                      if name in self.inputs}
            matched = self.rule.fn(anchors, list(num_anchors_per_level), gt_boxes[b][slots],
                                   **inputs, **kwargs)
            check_output(self.rule.qualname, matched, anchors.shape[0], len(slots))
            mapped = slots[matched.clamp(min=0)] if len(slots) else matched
            rows.append(torch.where(matched >= 0, mapped, matched))  # [N]
        if not rows:
            return torch.full((0, anchors.shape[0]), BACKGROUND, dtype=torch.int64,
                              device=anchors.device)
        return torch.stack(rows)  # [B, N]


def _per_image(name: str, value: Tensor, b: int, slots: Tensor) -> Tensor:
    return value[b][slots] if name == "gt_labels" else value[b]


def check_output(qualname: str, matched: Any, num_anchors: int, num_gt: int) -> None:
    """TrainingError unless ``matched`` is an int64 [num_anchors] tensor in the label space."""
    if not isinstance(matched, Tensor):
        raise TrainingError(f"rule {qualname} returned {type(matched).__name__}, not a tensor")
    if matched.dtype != torch.int64 or tuple(matched.shape) != (num_anchors,):
        raise TrainingError(f"rule {qualname} returned {matched.dtype} {list(matched.shape)}, "
                            f"expected torch.int64 [{num_anchors}]")
    bad = (matched >= num_gt) | (matched < IGNORE)
    if bool(bad.any()):
        value = int(matched[bad][0])
        raise TrainingError(f"rule {qualname} returned label {value} with {num_gt} GTs "
                            f"(allowed: 0..{num_gt - 1}, {BACKGROUND}, {IGNORE})")


def get_plugin_assigner(strategy: str, params: Mapping[str, Any]) -> PluginAssigner:
    """The plug-in named ``strategy`` behind the batched signature, its params checked."""
    rule = load_rule(strategy)
    check_params(rule, params)
    return PluginAssigner(rule)
