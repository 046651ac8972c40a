"""What differs between two runs: config keys, dataset, code provenance, metrics (``diff A B``).

A side is a stored run id (or a unique prefix of one) or a recipe row, ``RECIPE.yaml:ROW``
(resolved with a profile, seed offset 0, like ``recipe.experiments``; its stored record is used
when that run exists). The config is compared key by key on the resolved config (dotted keys,
lists compared whole), so a recipe row and the run it made differ in nothing.

Everything read from the store is data: run ids must be plain names, files are read through the
bounded, symlink-refusing readers (``job.safeio``, ``store.records``), config.yaml through the
bounded YAML loader, and every value is rendered on one line with control characters escaped.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from atss_bench.errors import ConfigError, StoreError
from atss_bench.job import rundir as rd
from atss_bench.job.provenance import PATCH_NAME
from atss_bench.job.safeio import UnsafeFile, load_json_object, read_bytes
from atss_bench.recipes import METRICS, load_recipe
from atss_bench.store.records import EXTRA_METRICS, CorruptRecord, read_record
from atss_bench.store.table import printable
from atss_bench.yamlio import MAX_FILE_BYTES, parse_yaml

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MIN_PREFIX = 4
ABSENT = "(absent)"  # a config key one side lacks
NOT_RECORDED = "(not recorded)"
CODE_FIELDS = ("git_commit", "git_dirty", "code_patch", "device", "world_size", "evaluator")
VALUE_CHARS = 120


@dataclass
class Side:
    """One operand of a diff, as read."""
    given: str  # what the user typed
    run_id: str
    config: dict[str, Any]
    origin: dict[str, Any] = field(default_factory=dict)  # recipe, table, row_id, label, ...
    record: dict[str, Any] | None = None  # store.read_record, None when not stored
    provenance: dict[str, Any] = field(default_factory=dict)  # metrics.json's, when done
    patch: bool = False  # a code.patch beside the record (a dirty tree)


@dataclass
class RunDiff:
    a: Side
    b: Side
    config: list[tuple[str, Any, Any]]  # dotted key, A's value, B's value (ABSENT if missing)
    dataset: list[tuple[str, Any, Any]]
    code: list[tuple[str, Any, Any]]
    metrics: list[tuple[str, float | None, float | None]]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys of a nested mapping; lists and scalars are leaves."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, name + ".")
        else:
            yield name, value


def config_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, A, B) for every dotted key whose values differ, in A's key order then B's."""
    flat_a, flat_b = dict(flatten(a)), dict(flatten(b))
    keys = list(flat_a) + [k for k in flat_b if k not in flat_a]
    return [(k, flat_a.get(k, ABSENT), flat_b.get(k, ABSENT)) for k in keys
            if k not in flat_a or k not in flat_b or flat_a[k] != flat_b[k]]


def find_run(results_dir: Path, given: str) -> Path:
    """``results/runs/<id>`` for a run id or a unique prefix of one (at least MIN_PREFIX)."""
    if not RUN_ID.match(given):
        raise ConfigError(f"{printable(given, 80)!r} is neither a run id nor RECIPE.yaml:ROW",
                          hint="e.g. atss-bench diff 12c4d239fbbc recipes/table2.yaml:iou_point")
    runs = Path(results_dir) / rd.RUNS
    exact = runs / given
    if exact.is_dir() and not exact.is_symlink():
        return exact
    try:
        with os.scandir(runs) as entries:
            found = sorted(e.name for e in entries if e.name.startswith(given)
                           and not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
    except OSError:
        found = []
    if len(found) == 1 and len(given) >= MIN_PREFIX:
        return runs / found[0]
    what = "is ambiguous" if len(found) > 1 else "is not in the store"
    raise StoreError(f"run {given} {what} ({printable(str(runs), 300)})",
                     hint="`atss-bench status` lists the run ids; --results picks the store")


def read_config_tree(run_dir: Path) -> dict[str, Any]:
    try:
        data = read_bytes(run_dir / rd.CONFIG, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise StoreError(f"run {run_dir.name} has no {rd.CONFIG}") from None
    except (OSError, UnsafeFile) as exc:
        raise StoreError(f"run {run_dir.name}: {rd.CONFIG} {printable(str(exc), 200)}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StoreError(f"run {run_dir.name}: {rd.CONFIG} is not UTF-8 text") from None
    try:
        config = parse_yaml(text, f"run {run_dir.name}: {rd.CONFIG}")
    except ConfigError as exc:
        raise StoreError(exc.message) from None
    if not isinstance(config, dict):
        raise StoreError(f"run {run_dir.name}: {rd.CONFIG} is not a mapping")
    return config


def _stored(side: Side, run_dir: Path) -> None:
    """Fill ``side`` from a run folder's record (a corrupt record: StoreError)."""
    try:
        side.record = read_record(run_dir)
    except CorruptRecord as exc:
        raise StoreError(f"run {run_dir.name}: {printable(str(exc), 200)}",
                         hint="`atss-bench status` shows what the store can read") from None
    side.origin = {k: side.record.get(k) for k in
                   ("recipe", "table", "row_id", "label", "profile", "seed")}
    if side.record.get("status") == rd.DONE:
        try:
            stored = load_json_object(run_dir / rd.METRICS) or {}
        except UnsafeFile:
            stored = {}
        provenance = stored.get("provenance")
        side.provenance = dict(provenance) if isinstance(provenance, Mapping) else {}
    patch = run_dir / PATCH_NAME
    side.patch = patch.is_file() and not patch.is_symlink()


def load_side(given: str, results_dir: Path, profile: str = "full") -> Side:
    """A run id (or unique prefix) in ``results_dir``, or ``RECIPE.yaml:ROW`` under ``profile``."""
    recipe_path, sep, row_id = given.rpartition(":")
    if sep and recipe_path.endswith((".yaml", ".yml")):
        recipe = load_recipe(recipe_path)
        experiment = recipe.experiments(profile=profile, seeds=1, rows=[row_id])[0]
        side = Side(given, experiment.run_id, experiment.config.model_dump(mode="json"))
        run_dir = rd.run_dir_for(results_dir, experiment.run_id)
        if run_dir.is_dir() and not run_dir.is_symlink():
            _stored(side, run_dir)
        side.origin = {"recipe": experiment.recipe, "table": experiment.table,
                       "row_id": experiment.row_id, "label": experiment.label,
                       "profile": experiment.profile, "seed": experiment.seed}
        return side
    run_dir = find_run(results_dir, given)
    side = Side(given, run_dir.name, read_config_tree(run_dir))
    _stored(side, run_dir)
    return side


def _dataset(side: Side) -> dict[str, Any]:
    record = side.record or {}
    data = side.config.get("data") if isinstance(side.config.get("data"), Mapping) else {}
    return {"dataset": record.get("dataset_name") or NOT_RECORDED,
            "fingerprint": record.get("dataset") or NOT_RECORDED,
            "data.kind": (data or {}).get("kind", NOT_RECORDED)}


def _code(side: Side) -> dict[str, Any]:
    record, provenance = side.record or {}, side.provenance
    out = {"git_commit": record.get("git_commit"), "git_dirty": record.get("git_dirty"),
           "code_patch": "yes" if side.patch else "no", "device": record.get("device"),
           "world_size": record.get("world_size"), "evaluator": provenance.get("evaluator")}
    versions = provenance.get("versions")
    if isinstance(versions, Mapping):
        out.update({f"versions.{k}": v for k, v in versions.items()})
    return {k: NOT_RECORDED if v is None else v for k, v in out.items()}


def _rows(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    keys = list(a) + [k for k in b if k not in a]
    return [(k, a.get(k, NOT_RECORDED), b.get(k, NOT_RECORDED)) for k in keys]


def _metric(record: Mapping[str, Any] | None, name: str) -> float | None:
    value = (record or {}).get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def diff_sides(a: Side, b: Side) -> RunDiff:
    metrics = [(m, _metric(a.record, m), _metric(b.record, m)) for m in (*METRICS, *EXTRA_METRICS)]
    return RunDiff(a, b, config_differences(a.config, b.config),
                   _rows(_dataset(a), _dataset(b)), _rows(_code(a), _code(b)),
                   [m for m in metrics if m[1] is not None or m[2] is not None])


def diff_runs(a: str, b: str, results_dir: str | Path, profile: str = "full") -> RunDiff:
    """The difference of two runs (run ids, prefixes, or ``RECIPE.yaml:ROW``)."""
    results_dir = Path(results_dir)
    return diff_sides(load_side(a, results_dir, profile), load_side(b, results_dir, profile))


def value_text(value: Any) -> str:
    """A value on one line, control characters escaped, at most VALUE_CHARS characters."""
    if isinstance(value, float):
        text = repr(value)
    elif isinstance(value, bool) or value is None:
        text = str(value).lower() if value is not None else "null"
    else:
        text = str(value)
    return printable(text, VALUE_CHARS)


def _origin_text(side: Side) -> str:
    o = side.origin
    if not o:
        return "no meta.json origin"
    parts = [f"table {o.get('table')}", f"row {o.get('row_id')}", repr(str(o.get("label")))]
    parts += [f"profile {o.get('profile')}", f"seed {o.get('seed')}"]
    state = (side.record or {}).get("status") or "not in the store"
    return ", ".join(value_text(p) for p in parts) + f"; {value_text(state)}"


def _aligned(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _compared(title: str, rows: list[tuple[str, Any, Any]]) -> list[str]:
    lines = [title]
    cells = [["", "A", "B", ""]]
    for key, a, b in rows:
        cells.append([value_text(key), value_text(a), value_text(b),
                      "same" if a == b else "differs"])
    return lines + (_aligned(cells) if rows else ["  (nothing recorded)"])


def render_diff(diff: RunDiff) -> list[str]:
    """Plain text lines (no markup; every value one line, escaped)."""
    lines = [f"{name}: {value_text(side.run_id)}  ({value_text(side.given)}: "
             f"{_origin_text(side)})" for name, side in (("A", diff.a), ("B", diff.b))]
    lines.append("")
    n = len(diff.config)
    lines.append(f"config: {n} key{'' if n == 1 else 's'} differ{'s' if n == 1 else ''}"
                 if n else "config: identical")
    if diff.config:
        lines += _aligned([["key", "A", "B"]] + [[value_text(k), value_text(a), value_text(b)]
                                                  for k, a, b in diff.config])
    lines += [""] + _compared("dataset:", diff.dataset)
    lines += [""] + _compared("code:", diff.code)
    lines += ["", "metrics:"]
    if not diff.metrics:
        lines.append("  (neither run has finished metrics)")
    else:
        cells = [["metric", "A", "B", "B - A"]]
        for name, a, b in diff.metrics:
            delta = f"{b - a:+.2f}" if a is not None and b is not None else "–"
            cells.append([name, f"{a:.2f}" if a is not None else "–",
                          f"{b:.2f}" if b is not None else "–", delta])
        lines += _aligned(cells)
    return lines
