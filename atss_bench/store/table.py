"""The whole store as one pandas DataFrame (one row per run), and its export."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from atss_bench.errors import StoreError
from atss_bench.job import rundir as rd
from atss_bench.recipes import METRICS
from atss_bench.store.records import COLUMNS, EXTRA_METRICS, CorruptRecord, read_record

RESULTS_ENV = "ATSS_BENCH_RESULTS"
DEFAULT_RESULTS = "results"
TIME_COLUMNS = ("created", "started", "finished", "updated")
INT_COLUMNS = ("seed", "iter", "max_iter", "world_size", "pid")
NUMERIC_COLUMNS = (*METRICS, *EXTRA_METRICS)
EXPORT_FORMATS = ("csv", "parquet")

log = logging.getLogger(__name__)


def resolve_results_dir(results_dir: str | Path | None = None) -> Path:
    """An explicit folder, else $ATSS_BENCH_RESULTS, else ./results."""
    if results_dir is not None and str(results_dir) != "":
        return Path(results_dir)
    return Path(os.environ.get(RESULTS_ENV) or DEFAULT_RESULTS)


@dataclass
class ScanResult:
    frame: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def _run_dirs(results_dir: Path) -> list[Path]:
    runs = results_dir / rd.RUNS
    try:
        with os.scandir(runs) as entries:
            return sorted(Path(e.path) for e in entries
                          if not e.name.startswith(".") and e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise StoreError(f"{runs} is not a folder",
                         hint="--results must name a results folder") from None
    except OSError as exc:
        raise StoreError(f"cannot list {runs}: {exc.strerror}",
                         hint="--results must name a results folder you can read") from None


def _frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records)
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    extra = sorted(c for c in frame.columns if c not in COLUMNS)
    frame = frame[list(COLUMNS) + extra]
    for column in TIME_COLUMNS:
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601", errors="coerce")
    for column in INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame["git_dirty"] = frame["git_dirty"].astype("boolean")
    for column in (*NUMERIC_COLUMNS, "wall_time", "images_per_sec", "train_seconds",
                   "eval_seconds"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def printable(text: str, limit: int = 300) -> str:
    """``text`` on one line and inert on a terminal: control characters escaped (a folder name
    may hold a newline, a record an ESC sequence), cut at ``limit`` characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def scan_results(results_dir: str | Path) -> ScanResult:
    """Read every run record; a corrupt or partial record is skipped with one warning line
    (the folder and the reason) in ``ScanResult.warnings``, never raised. The caller shows
    them (the CLI prints each once; ``load_results`` logs them)."""
    results_dir = Path(results_dir)
    records, warnings = [], []
    for run_dir in _run_dirs(results_dir):
        try:
            records.append(read_record(run_dir))
            continue
        except CorruptRecord as exc:
            why = str(exc)
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError,
                OverflowError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        warnings.append(f"{printable(str(run_dir), 1000)}: skipped ({printable(why)})")
    return ScanResult(_frame(records), warnings)


def load_results(results_dir: str | Path) -> pd.DataFrame:
    """One row per run in ``results_dir/runs`` (columns: ``store.COLUMNS`` + any extra metrics).

    ``status`` is pending | running | done | failed (| cancelled | timed-out); metrics are NaN
    unless done. Skipped corrupt records are listed in ``frame.attrs["warnings"]``.
    """
    scan = scan_results(results_dir)
    for line in scan.warnings:
        log.warning(line)
    scan.frame.attrs["warnings"] = scan.warnings
    return scan.frame


def select_dataset(frame: pd.DataFrame, dataset: str | None) -> pd.DataFrame:
    """The runs made on one dataset: ``dataset`` is a fingerprint prefix or a dataset name
    (columns ``dataset`` / ``dataset_name``); None keeps every run."""
    if dataset is None:
        return frame
    text = dataset.strip()
    if not text:
        raise StoreError("--dataset is empty",
                         hint="give a dataset fingerprint (or its first characters) or a name")
    fingerprints = frame["dataset"].astype("string")
    names = frame["dataset_name"].astype("string")
    mask = (fingerprints.str.startswith(text.lower()).fillna(False).astype(bool)
            | (names == text).fillna(False).astype(bool))
    return frame[mask.to_numpy()]


def export_results(results_dir: str | Path, fmt: str = "csv",
                   out: str | Path | None = None, dataset: str | None = None,
                   warn: Callable[[str], object] | None = None) -> Path:
    """Write the results table as CSV or Parquet (default: results_dir/results.<fmt>);
    ``dataset``: only the runs of that dataset (``select_dataset``); ``warn`` gets the warning
    line of each skipped record."""
    if fmt not in EXPORT_FORMATS:
        raise StoreError(f"unknown export format '{fmt}'", hint="use csv or parquet")
    scan = scan_results(results_dir)
    for line in scan.warnings if warn is not None else ():
        warn(line)
    frame = select_dataset(scan.frame, dataset)
    frame.attrs = {}
    out = Path(out) if out is not None else Path(results_dir) / f"results.{fmt}"
    try:
        _write_frame(frame, fmt, out)
    except OSError as exc:  # e.g. a read-only shared store
        raise StoreError(f"cannot write {out}: {exc.strerror}",
                         hint="write the table elsewhere with --out FILE") from None
    return out


def _write_frame(frame: pd.DataFrame, fmt: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(out, index=False)
        return
    for column in frame.columns:
        if pd.api.types.is_object_dtype(frame[column]):  # e.g. table: 1 and "S1" mixed
            frame[column] = frame[column].astype("string")
    try:
        frame.to_parquet(out, index=False)
    except ImportError as exc:
        raise StoreError(f"parquet export needs pyarrow ({exc})",
                         hint="pip install pyarrow, or use --format csv") from None
