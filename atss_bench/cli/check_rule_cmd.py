"""`atss-bench check-rule`: does a sample-selection rule keep the documented contract?"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from atss_bench.cli.app import app, console, shown
from atss_bench.cli.recipes_cmd import parse_sets
from atss_bench.config import ASSIGN_CONFIGS
from atss_bench.errors import ConfigError
from atss_bench.overrides import ASSIGN_KEY, apply_overrides, default_tree, validate_config

if TYPE_CHECKING:  # torch and torchvision load only when the command runs
    from atss_bench.assign.contract import ContractReport

# The real boxes: $ATSS_BENCH_TEST_COCO, else the shared coco-tiny beside a checkout.
DEFAULT_COCO = Path(__file__).resolve().parents[3] / "shared" / "data" / "coco-tiny"
CHECK_RULE_EXIT_CODES = (
    "Exit codes: 0 when every check passes; 1 when the rule breaks the contract (the failing "
    "check and a minimal failing scene are printed); 2 on bad input (a rule that cannot be "
    "loaded, an unknown or missing param, an unreadable annotation file).")


def rule_params(rule: str, params: dict[str, Any]) -> dict[str, Any]:
    """A built-in rule's params as training binds them (default config, ``params`` over its
    fields); a plug-in's are ``params`` as given."""
    if rule not in ASSIGN_CONFIGS:
        return params
    from atss_bench.model import build_assigner  # noqa: PLC0415  (heavy: torchvision models)

    overrides = {f"{ASSIGN_KEY}.{key}": value for key, value in params.items()}
    tree = apply_overrides(default_tree(), {f"{ASSIGN_KEY}.strategy": rule}, f"rule {rule}")
    tree = apply_overrides(tree, overrides, "--param")
    return dict(build_assigner(validate_config(tree, f"rule {rule}").model).params)


def coco_annotations(coco: Path | None) -> Path | None:
    """The annotation file of the real scenes, or None (random scenes only)."""
    root = coco or Path(os.environ.get("ATSS_BENCH_TEST_COCO", DEFAULT_COCO))
    for split in ("val2017", "train2017"):
        candidate = root / "annotations" / f"instances_{split}.json"
        if candidate.is_file():
            return candidate
    if coco is not None:
        raise ConfigError(f"--coco {coco}: no annotations/instances_val2017.json there")
    return None


@app.command("check-rule", epilog=CHECK_RULE_EXIT_CODES)
def check_rule_command(
    rule: str = typer.Argument(..., help="A built-in rule (atss, task_aligned, ...) or a "
                               "plug-in: pkg.module:function, path/to/file.py:function or an "
                               "entry point of group atss_bench.assigners."),
    params: Optional[list[str]] = typer.Option(None, "--param",
                                               help="A param of the rule: key=value."),
    coco: Optional[Path] = typer.Option(
        None, "--coco", help="COCO folder whose annotations give real scenes (default: "
        "$ATSS_BENCH_TEST_COCO, else ../shared/data/coco-tiny if present)."),
    scenes: int = typer.Option(6, "--scenes", min=1, max=100, help="Random scenes."),
    images: int = typer.Option(4, "--images", min=0, max=100, help="Real COCO images."),
    seed: int = typer.Option(0, "--seed", min=0),
) -> None:
    """Check a rule's contract (label space, dtype and shape, determinism, no positives
    without GTs, padded batch = per-image calls, CPU/CUDA agreement with a GPU) on random and
    real COCO scenes; exit 1 with a minimal failing scene when it breaks one."""
    from atss_bench.assign.contract import check_rule, coco_scenes, random_scenes  # noqa: PLC0415

    bound = rule_params(rule, parse_sets(params))
    all_scenes = random_scenes(scenes, seed)
    annotations = coco_annotations(coco) if images else None
    if annotations is not None:
        all_scenes += coco_scenes(annotations, images, seed)
    report = check_rule(rule, bound, all_scenes)
    _print(report, annotations)
    if not report.passed:
        raise typer.Exit(1)


def _print(report: ContractReport, annotations: Path | None) -> None:
    failed = {f.check: f for f in report.failures}
    real = f" + real boxes from {annotations}" if annotations else " (no real COCO boxes found)"
    console.print(f"rule {shown(report.strategy)}: {report.num_scenes} scenes{shown(real)}",
                  highlight=False)
    for name in report.checks:
        mark = "[red]FAILED[/red]" if name in failed else "[green]ok[/green]"
        console.print(f"  {mark}  {name}", highlight=False)
    for failure in report.failures:
        console.print(f"\n[red]{failure.check}[/red]: {shown(failure.detail)}", highlight=False)
        console.print(f"  minimal failing scene: {shown(failure.scene.describe())}",
                      highlight=False)
