"""Which dataset a stored run was made on, and the refusal to reuse it for another dataset.

Run ids are config hashes, and ``data.root`` is not part of the config hash, so the same run id
names a run on coco-tiny and a run on full COCO. A stored run, done or partial (not done, with
checkpoints to resume from), is therefore reused only when its recorded dataset fingerprint
(``data.identity``) equals the current dataset's. Otherwise ``DatasetMismatchError``: one line
naming the run, both datasets and the way out.

Where a run records its dataset: ``metrics.json`` provenance ``dataset`` (bound to the result),
else ``meta.json`` ``dataset`` (written when training starts). A record from before fingerprints:
mini is accepted (the generator spec is part of the config, hence of the run id), COCO is refused.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atss_bench.config import DataConfig
from atss_bench.data.identity import DatasetIdentity, resolve_dataset_identity
from atss_bench.errors import DataError, StoreError
from atss_bench.job import rundir as rd
from atss_bench.recipes import Experiment

WAY_OUT = "--force retrains it on this dataset, or use --results DIR for a separate store"


class DatasetMismatchError(StoreError):
    """A stored run was made on another dataset than the one given now."""


def recorded_in(meta: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None
                ) -> DatasetIdentity | None:
    """The dataset a record names: metrics.json provenance first, then meta.json (None when
    neither records one, or it is malformed)."""
    provenance = (metrics or {}).get("provenance")
    if isinstance(provenance, Mapping) and "dataset" in provenance:
        return DatasetIdentity.from_json(provenance["dataset"])
    return DatasetIdentity.from_json((meta or {}).get("dataset"))


def recorded_dataset(run_dir: Path, metrics: dict[str, Any] | None = None
                     ) -> DatasetIdentity | None:
    """The dataset the stored run at ``run_dir`` records (``metrics``: its done metrics.json)."""
    return recorded_in(rd.read_json(run_dir / rd.META), metrics)


def has_checkpoints(run_dir: Path) -> bool:
    """Something to resume from: a non-empty checkpoints/ folder."""
    try:
        with os.scandir(run_dir / rd.CHECKPOINTS) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


def mismatch(experiment: Experiment, recorded: DatasetIdentity | None,
             current: DatasetIdentity) -> DatasetMismatchError | None:
    """The refusal for reusing a run that records ``recorded`` on ``current`` (None: allowed)."""
    if current.same_data(recorded) or (recorded is None and current.kind == "mini"):
        return None
    run = f"run {experiment.run_id} ({experiment.row_id} seed {experiment.seed})"
    was = (f"was made on dataset {recorded.describe()}" if recorded is not None
           else "was recorded before dataset fingerprints (its dataset is unknown)")
    return DatasetMismatchError(f"{run} {was}; this dataset is {current.describe()}",
                                hint=WAY_OUT)


def check_stored_dataset(run_dir: Path, experiment: Experiment, current: DatasetIdentity,
                         metrics: dict[str, Any] | None = None) -> None:
    """Raise DatasetMismatchError when the stored run at ``run_dir`` is of another dataset."""
    error = mismatch(experiment, recorded_dataset(run_dir, metrics), current)
    if error is not None:
        raise error


class IdentityMemo:
    """Each distinct data config's identity, computed once (None: cannot be resolved here)."""

    def __init__(self, data_root: str | None) -> None:
        self.data_root = data_root
        self._known: dict[str, DatasetIdentity | None] = {}

    def get(self, data: DataConfig) -> DatasetIdentity | None:
        key = data.model_dump_json()
        if key not in self._known:
            try:
                self._known[key] = resolve_dataset_identity(data, self.data_root)
            except DataError:  # no root given, or not readable from here: the job checks
                self._known[key] = None
        return self._known[key]
