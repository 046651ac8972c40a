"""`atss-bench data mini | stats | subset`."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from atss_bench.cli.app import app, console
from atss_bench.errors import DataError

data_app = typer.Typer(help="Datasets: generate mini-COCO, compare statistics, cut real COCO subsets.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")

REFERENCE_ENV = "ATSS_BENCH_REFERENCE_COCO"
SHARED_COCO_TINY = Path(__file__).resolve().parents[3] / "shared" / "data" / "coco-tiny"


@data_app.command("mini")
def mini_command(
    out: Optional[Path] = typer.Option(None, "--out", help="Folder to write (default: the cache)."),
    seed: int = typer.Option(0, "--seed"),
    num_train: int = typer.Option(600, "--num-train", min=1),
    num_val: int = typer.Option(150, "--num-val", min=1),
    shape_only: bool = typer.Option(
        False, "--shape-only", help="Random object colours: only the shape tells the category."),
) -> None:
    """Generate the synthetic mini-COCO (byte-identical for the same seed)."""
    from atss_bench.data import ensure_mini_coco, generate_mini_coco

    start = time.perf_counter()
    params = dict(seed=seed, num_train=num_train, num_val=num_val, category_hue=not shape_only)
    root = generate_mini_coco(out, **params) if out else ensure_mini_coco(**params)
    console.print(f"mini-COCO at {root} ({time.perf_counter() - start:.1f} s)", highlight=False)


def default_reference() -> Path | None:
    """Real COCO annotations to compare with: $ATSS_BENCH_REFERENCE_COCO, else shared coco-tiny."""
    env = os.environ.get(REFERENCE_ENV)
    if env:
        return Path(env)
    return SHARED_COCO_TINY if SHARED_COCO_TINY.is_dir() else None


@data_app.command("stats")
def stats_command(
    directory: Path = typer.Argument(..., help="A COCO-layout folder (e.g. a mini-COCO)."),
    reference: Optional[Path] = typer.Option(
        None, "--reference", help=f"Real COCO folder to compare with (default ${REFERENCE_ENV} "
                                  "or ../shared/data/coco-tiny)."),
    split: str = typer.Option("val2017", "--split"),
) -> None:
    """Box statistics of DIR beside real COCO's: sizes, aspect ratios, objects per image."""
    from atss_bench.data import box_stats, compare_stats
    from atss_bench.data.coco import coco_split_paths

    reference = reference or default_reference()
    if reference is not None:
        frame = compare_stats(directory, reference, split=split)
    else:
        import pandas as pd

        annotations, _ = coco_split_paths(directory, split)
        frame = pd.DataFrame({directory.name: box_stats(annotations)})
        console.print(f"no reference COCO found: set --reference or ${REFERENCE_ENV}")
    table = Table("statistic", *map(str, frame.columns), title=f"box statistics ({split})")
    for name, values in frame.iterrows():
        table.add_row(str(name), *(_fmt(v) for v in values))
    console.print(table)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() or abs(value) >= 100 else f"{value:.3f}"
    return str(value)


@data_app.command("subset")
def subset_command(
    root: Path = typer.Option(..., "--root", help="Real COCO root (annotations/, train2017/, ...)."),
    split: str = typer.Option("val2017", "--split"),
    images: int = typer.Option(..., "--images", min=1, help="Number of images to keep."),
    out: Path = typer.Option(..., "--out", help="Folder to write the subset to."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a smaller real COCO (your own mini-COCO) in the same layout."""
    from atss_bench.data import write_coco_subset

    if not root.is_dir():
        raise DataError(f"--root {root}: not a folder", hint="point it at a COCO-layout folder")
    path = write_coco_subset(root, split, images, out, seed=seed)
    console.print(f"wrote {images} images of {split} to {path}", highlight=False)
