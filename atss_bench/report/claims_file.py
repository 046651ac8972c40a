"""The claims file (``recipes/claims/paper.yaml``): its schema and loader.

A claim compares ``<table>:<row id>`` rows of the shipped recipes; the kinds and what each one is
judged against are described in :mod:`atss_bench.report.claims` and at the top of the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from atss_bench.config import Strict
from atss_bench.errors import ConfigError
from atss_bench.recipes import BUILTIN_RECIPES
from atss_bench.yamlio import load_yaml_mapping

PAPER_CLAIMS = BUILTIN_RECIPES / "claims" / "paper.yaml"
ROW_REF = r"^[0-9A-Za-z_-]+:[A-Za-z0-9][A-Za-z0-9_.-]*$"  # <table>:<row id>
Pair = tuple[str, str]


class EffectRows(Strict):
    """Two rows whose paper difference is the effect a no-difference claim must rule out."""

    row: str = Field(pattern=ROW_REF)
    than: str = Field(pattern=ROW_REF)


class Claim(Strict):
    id: str
    claim: str
    kind: Literal["better", "same", "flat"]
    row: str | None = Field(default=None, pattern=ROW_REF)
    than: str | None = Field(default=None, pattern=ROW_REF)
    rows: list[str] = Field(default_factory=list)
    reference: str | None = Field(default=None, pattern=ROW_REF)
    effect: EffectRows | None = None
    # The compared metric (a COCO metric the rows' tables list); AP unless the claim says.
    metric: Literal["AP", "AP50", "AP75", "APs", "APm", "APl"] = "AP"

    @model_validator(mode="after")
    def _rows_fit_kind(self) -> "Claim":
        if self.kind == "flat":
            if len(self.rows) < 2 or self.row or self.than:
                raise ValueError("a flat claim lists 2 or more `rows` and no row/than")
            if len(set(self.rows)) != len(self.rows) or self.reference not in self.rows:
                raise ValueError("a flat claim's `rows` are distinct and include its `reference`")
        elif not (self.row and self.than) or self.rows or self.reference:
            raise ValueError(f"a {self.kind} claim names `row` and `than`, not `rows`/`reference`")
        if (self.effect is None) != (self.kind == "better"):
            raise ValueError("a same/flat claim names the paper's `effect` (row, than) it is "
                             "contrasted with; a better claim's effect is its own difference")
        return self

    def refs(self) -> list[str]:
        """The compared rows."""
        return self.rows if self.kind == "flat" else [str(self.row), str(self.than)]

    def comparisons(self) -> list[Pair]:
        if self.kind != "flat":
            return [(str(self.row), str(self.than))]
        return [(ref, str(self.reference)) for ref in self.rows if ref != self.reference]

    def all_refs(self) -> list[str]:
        return self.refs() + ([self.effect.row, self.effect.than] if self.effect else [])


class ClaimSet(Strict):
    claims: list[Claim] = Field(min_length=1)


def load_claims(path: str | Path = PAPER_CLAIMS) -> list[Claim]:
    path = Path(path)
    data = load_yaml_mapping(path, what="claims file")
    try:
        claims = ClaimSet.model_validate(data).claims
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"])
        raise ConfigError(f"{path}: {loc}: {error['msg']}",
                          hint=f"compare with {PAPER_CLAIMS}") from None
    return claims
