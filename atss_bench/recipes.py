"""Recipes: one YAML per paper table, expanded into concrete experiments.

A recipe is flat: table metadata, a ``base`` (overrides shared by every row), ``rows`` (each an id,
the paper's label, its own overrides and the paper's metrics) and a ``layout`` saying how the
report draws the table. Profiles (``recipes/profiles/*.yaml``) overlay the scale of the run
(full COCO vs. CPU mini-COCO). Resolution order, later wins:

    defaults <- recipe.base <- profile.set <- recipe.profiles[profile] <- row.set
             <- row.profiles[profile] <- --set

``row.profiles`` holds what one row needs under one profile only: e.g. the official RetinaNet
settings of a baseline row in ``full``, where the CPU profiles keep the settings their committed
records were made with (docs/fidelity.md).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import Field, ValidationError, field_validator, model_validator

from atss_bench.config import ExperimentConfig, PluginAssign, Strict, config_hash
from atss_bench.errors import ConfigError
from atss_bench.overrides import apply_overrides, default_tree, validate_config
from atss_bench.yamlio import load_yaml_mapping

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
Metric = Literal["AP", "AP50", "AP75", "APs", "APm", "APl"]
# The recipes shipped with atss-bench: the wheel's copy (setup.py packs recipes/ as the package
# data atss_bench/_recipes), else the checkout's recipes/ (editable install, running from a clone).
_PACKAGED_RECIPES = Path(__file__).resolve().parent / "_recipes"
BUILTIN_RECIPES = _PACKAGED_RECIPES if _PACKAGED_RECIPES.is_dir() \
    else Path(__file__).resolve().parent.parent / "recipes"
# A recipe's table and a profile's name become part of job names (``atss-table7-mini``), file
# names and report headings, so they are short identifiers: no spaces, quotes or newlines.
TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_TABLE_NUMBER = 10_000
# Seeds per row: each is a full training run, so a typo (1000000) must not plan a million runs.
MAX_SEEDS = 100


def _check_table(value: Any) -> int | str:
    """A table number (``7``) or a short name (``ci``)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TABLE_NUMBER:
        return value
    if isinstance(value, str) and TABLE_NAME.fullmatch(value):
        return value
    raise ValueError(f"must be a table number (0-{MAX_TABLE_NUMBER}) or a name of letters, "
                     f"digits, '_' and '-' (at most 32), got {value!r:.60}")


def _check_profile_name(value: Any) -> str:
    if isinstance(value, str) and PROFILE_NAME.fullmatch(value):
        return value
    raise ValueError("must be a name of letters, digits, '_', '.' and '-' (at most 64), "
                     f"got {value!r:.60}")


class GridAxis(Strict):
    key: str
    label: str


class Layout(Strict):
    """How the report draws the table.

    - ``list``: one line per row; ``columns`` names extra label columns taken from ``row.values``.
    - ``checks``: like list, plus check-mark columns (Table 1); a row lists its ``checks``.
    - ``grid``: rows x columns of one metric (Table 2); each row names its ``cell``.
    """

    kind: Literal["list", "checks", "grid"] = "list"
    metrics: list[Metric] = Field(default_factory=lambda: ["AP"], min_length=1)
    columns: list[str] = Field(default_factory=list)
    checks: list[str] = Field(default_factory=list)
    grid_rows: list[GridAxis] = Field(default_factory=list)
    grid_columns: list[GridAxis] = Field(default_factory=list)
    # Sweeps (Tables 4-6) get a plot: x axis = this key of row.values.
    sweep: str | None = None


class RecipeRow(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    label: str
    set: dict[str, Any] = Field(default_factory=dict)
    # Profile name -> overrides applied after ``set`` when the row runs under that profile.
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    paper: dict[Metric, float] = Field(default_factory=dict)
    checks: list[str] = Field(default_factory=list)
    cell: tuple[str, str] | None = None
    values: dict[str, str] = Field(default_factory=dict)


class Recipe(Strict):
    table: int | str
    _table = field_validator("table", mode="before")(_check_table)
    title: str
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    rows: list[RecipeRow] = Field(min_length=1)
    layout: Layout = Field(default_factory=Layout)
    path: str = Field("", exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        seen: set[str] = set()
        for row in self.rows:
            if row.id in seen:
                raise ValueError(f"duplicate row id '{row.id}'")
            seen.add(row.id)
            unknown = set(row.checks) - set(self.layout.checks)
            if unknown:
                raise ValueError(f"row '{row.id}' checks {sorted(unknown)} not in layout.checks")
        if self.layout.kind == "grid":
            rows = {a.key for a in self.layout.grid_rows}
            cols = {a.key for a in self.layout.grid_columns}
            for row in self.rows:
                if row.cell is None or row.cell[0] not in rows or row.cell[1] not in cols:
                    raise ValueError(f"row '{row.id}': cell {row.cell} is not in the grid")
        return self

    def row(self, row_id: str) -> RecipeRow:
        for row in self.rows:
            if row.id == row_id:
                return row
        raise ConfigError(f"{self.path}: no row '{row_id}'",
                          hint=f"rows are {', '.join(r.id for r in self.rows)}")

    def experiments(
        self,
        profile: str = "full",
        seeds: int = 1,
        rows: Sequence[str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> list["Experiment"]:
        """Expand rows x seeds into fully resolved, validated experiments."""
        if not 1 <= seeds <= MAX_SEEDS:
            raise ConfigError(f"seeds must be in 1..{MAX_SEEDS}, got {seeds}",
                              hint="the paper's tables use 1 seed; a claim rarely needs 10")
        prof = load_profile(profile, Path(self.path).parent if self.path else None)
        selected = [self.row(r) for r in rows] if rows else self.rows
        where = self.path or f"table {self.table}"
        tree = apply_overrides(default_tree(), self.base, f"{where}: base")
        tree = apply_overrides(tree, prof.set, f"{prof.path}: set")
        tree = apply_overrides(tree, self.profiles.get(prof.name, {}),
                               f"{where}: profiles.{prof.name}")
        out = []
        for row in selected:
            row_tree = apply_overrides(tree, row.set, f"{where}: rows[{row.id}].set")
            row_tree = apply_overrides(row_tree, row.profiles.get(prof.name, {}),
                                       f"{where}: rows[{row.id}].profiles.{prof.name}")
            row_tree = apply_overrides(row_tree, overrides or {}, "--set")
            # Checked before the arithmetic: a seed of "abc" or 1.5 is an error naming the key.
            base_seed = validate_config(row_tree, f"{where}: row '{row.id}'").seed
            for offset in range(seeds):
                row_tree["seed"] = base_seed + offset
                config = resolve_rule(validate_config(row_tree, f"{where}: row '{row.id}'"),
                                      f"{where}: row '{row.id}'")
                out.append(Experiment(
                    run_id=config_hash(config), row_id=row.id, label=row.label,
                    recipe=self.path, table=self.table, profile=prof.name,
                    seed=config.seed, config=config, paper=dict(row.paper),
                ))
        return out


def resolve_rule(config: ExperimentConfig, where: str = "") -> ExperimentConfig:
    """``config`` with a plug-in rule imported, its params checked against its signature and
    its qualified name and source hash recorded (part of the run id); others unchanged.

    Only for configs from a recipe or flag the user runs: a stored config is never resolved.
    """
    if not isinstance(config.model.assign, PluginAssign):
        return config
    from atss_bench.assign.plugins import resolve_config_rule  # noqa: PLC0415  (imports torch)

    try:
        return resolve_config_rule(config)
    except ConfigError as exc:
        if not where:
            raise
        raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from None


@dataclass(frozen=True)
class Experiment:
    run_id: str
    row_id: str
    label: str
    recipe: str
    table: int | str
    profile: str
    seed: int
    config: ExperimentConfig = field(repr=False)
    paper: dict[str, float] = field(default_factory=dict)


class Profile(Strict):
    name: str
    _name = field_validator("name", mode="before")(_check_profile_name)
    description: str = ""
    set: dict[str, Any] = Field(default_factory=dict)
    path: str = Field("", exclude=True)


def _validated(model: type[Strict], data: dict[str, Any], path: Path) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # An unknown key explains the other errors (a misspelled required key), so it goes first.
        error = min(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        loc = ".".join(str(p) for p in error["loc"])
        hint = "compare with the recipes shipped in recipes/"
        if error["type"] == "extra_forbidden":
            message = f"unknown key '{loc}'"
            fields = {f for m in (Recipe, RecipeRow, Layout, GridAxis, Profile) for f in m.model_fields}
            close = difflib.get_close_matches(str(error["loc"][-1]), sorted(fields), n=1)
            hint = f"did you mean '{close[0]}'?" if close else hint
        else:
            msg = str(error["msg"]).removeprefix("Value error, ")
            message = f"{loc}: {msg}" if loc else msg
        raise ConfigError(f"{path}: {message}", hint=hint) from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe; every row is resolved once so a bad override fails here."""
    path = Path(path)
    data = load_yaml_mapping(path, what="recipe")
    recipe: Recipe = _validated(Recipe, data, path)
    recipe.path = str(path)
    tree = apply_overrides(default_tree(), recipe.base, f"{path}: base")
    for row in recipe.rows:
        row_tree = apply_overrides(tree, row.set, f"{path}: rows[{row.id}].set")
        where = f"{path}: row '{row.id}'"
        resolve_rule(validate_config(row_tree, where), where)
        for name, overlay in row.profiles.items():
            validate_config(apply_overrides(row_tree, overlay,
                                            f"{path}: rows[{row.id}].profiles.{name}"),
                            f"{path}: row '{row.id}' (profile {name})")
    return recipe


def profile_path(name: str, recipe_dir: Path | None = None) -> Path:
    """A profile name (``mini``) or a path to a profile YAML."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    dirs = [d / "profiles" for d in (recipe_dir, BUILTIN_RECIPES) if d is not None]
    for directory in dirs:
        if (directory / f"{name}.yaml").is_file():
            return directory / f"{name}.yaml"
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError(f"profile '{name}' not found in {', '.join(map(str, dirs))}",
                      hint=f"known profiles: {', '.join(known) or 'none'}")


def load_profile(name: str, recipe_dir: Path | None = None) -> Profile:
    path = profile_path(name, recipe_dir)
    data = load_yaml_mapping(path, what="profile")
    data.setdefault("name", path.stem)
    profile: Profile = _validated(Profile, data, path)
    profile.path = str(path)
    return profile


def list_recipes(directory: Path = BUILTIN_RECIPES) -> list[Path]:
    """Recipe files in a directory, in table order."""
    return sorted(p for p in Path(directory).glob("*.yaml"))
