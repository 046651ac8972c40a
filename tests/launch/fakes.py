"""Training functions for launch tests (importable by path, e.g. from a submitit job)."""
from __future__ import annotations

import json
from pathlib import Path

CALLS: list[str] = []


def fake_train(config, run_dir, *, data_root=None, progress=True):
    """Two logged iterations, AP = 30 + seed; records each call in CALLS."""
    CALLS.append(Path(run_dir).name)
    with open(Path(run_dir) / "log.jsonl", "a") as log:
        for i in (1, 2):
            log.write(json.dumps({"iter": i, "max_iter": 2, "loss": 1.0 / i}) + "\n")
    ap = 30.0 + config.seed
    metrics = {m: ap for m in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    return {"metrics": metrics, "provenance": {"device": "cpu", "world_size": 1}}


def failing_train(config, run_dir, *, data_root=None, progress=True):
    raise RuntimeError("boom: the fake run diverged")
