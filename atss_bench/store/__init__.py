"""The results store: ``results/runs/<run_id>/`` folders read back as one DataFrame.

The run-directory format and its atomic writers live in ``atss_bench.job.rundir`` (jobs write
records; the store, above them, reads them). Stable API: ``load_results(results_dir)``.
"""
from atss_bench.store.records import COLUMNS, CorruptRecord, read_record
from atss_bench.store.table import (
    EXPORT_FORMATS,
    RESULTS_ENV,
    ScanResult,
    export_results,
    load_results,
    printable,
    resolve_results_dir,
    scan_results,
    select_dataset,
)

__all__ = [
    "COLUMNS", "CorruptRecord", "EXPORT_FORMATS", "RESULTS_ENV", "ScanResult", "export_results",
    "load_results", "printable", "read_record", "resolve_results_dir", "scan_results",
    "select_dataset",
]
