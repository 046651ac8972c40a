"""Where a run's dataset lives: the one rule shared by the engine and by dataset identity.

- ``data.kind == "mini"``: ``<cache>/mini-coco-<spec digest>`` with ``<cache>`` =
  ``$ATSS_BENCH_CACHE`` (default ``~/.cache/atss-bench``), generated on first use by
  ``mini.ensure_mini_coco``; ``data.root`` is not used for mini.
- ``data.kind == "coco"``, first match wins: the ``data_root`` argument (``--data-root``),
  ``data.root``, ``$ATSS_BENCH_DATA``; none of them: ``DataError`` with a hint.

Nothing here reads the dataset or imports torch.
"""
from __future__ import annotations

import os
from pathlib import Path

from atss_bench.config import DataConfig
from atss_bench.errors import DataError

DATA_ROOT_ENV = "ATSS_BENCH_DATA"
NO_ROOT_HINT = ("pass --data-root, set data.root in the recipe or export ATSS_BENCH_DATA="
                "/path/to/coco (the folder holding annotations/, train2017/, val2017/); "
                "or use --profile mini")


def resolve_data_root(explicit: str | Path | None) -> Path | None:
    """The dataset root: ``explicit`` if given, else ``$ATSS_BENCH_DATA`` if set, else None."""
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get(DATA_ROOT_ENV)
    return Path(from_env).expanduser() if from_env else None


def resolve_dataset_root(data: DataConfig, data_root: str | None) -> Path:
    """The COCO-layout root of ``data`` (see module doc); a mini dataset may not exist yet."""
    if data.kind == "mini":
        from atss_bench.data.mini import mini_coco_dir  # numpy / PIL only when asked for

        return mini_coco_dir(None, **data.mini.model_dump())
    root = resolve_data_root(data_root or data.root)
    if root is None:
        raise DataError("no COCO dataset root given", hint=NO_ROOT_HINT)
    return root
