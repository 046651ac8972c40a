"""Fixtures shared across test folders."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
COCO_ENV = "ATSS_BENCH_TEST_COCO"

# The suite checks exact CPU arithmetic (same run id => same weights, resume, two processes ==
# one), so its training runs on CPU on any machine, subprocesses included; the CUDA tests pick
# their device themselves. Without this, a GPU machine trains them on CUDA (AMP) and they fail.
os.environ["ATSS_BENCH_DEVICE"] = "cpu"


@pytest.fixture(scope="session")
def coco_tiny_root() -> Path:
    """A small real COCO (../shared/data/coco-tiny or $ATSS_BENCH_TEST_COCO); skip when absent."""
    root = Path(os.environ.get(COCO_ENV, REPO_ROOT.parent / "shared" / "data" / "coco-tiny"))
    if not (root / "annotations" / "instances_val2017.json").is_file():
        pytest.skip(f"real COCO sample not found at {root}: set {COCO_ENV} to a COCO-layout "
                    "directory (e.g. coco-tiny) to run the real-data tests")
    return root
