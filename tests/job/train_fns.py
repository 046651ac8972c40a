"""Module-level (picklable) train functions for the worker-process tests."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from atss_bench.recipes import METRICS


def _result(config, run_dir):
    with open(Path(run_dir) / "log.jsonl", "a") as log:
        log.write(json.dumps({"iter": 1, "max_iter": 1}) + "\n")
    return {"metrics": {m: 20.0 + config.model.assign.topk / 10 for m in METRICS},
            "provenance": {"pid": os.getpid(), "threads": os.environ.get("OMP_NUM_THREADS")}}


def kill_k5_train(config, run_dir, *, data_root=None, progress=True):
    """Row k5's worker SIGKILLs itself mid-run (as the OOM killer would); the others finish."""
    if config.model.assign.topk == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return _result(config, run_dir)


def exit_k5_train(config, run_dir, *, data_root=None, progress=True):
    """Row k5's worker leaves through os._exit (no outcome sent, no exception)."""
    if config.model.assign.topk == 5:
        os._exit(3)
    return _result(config, run_dir)


def slow_train(config, run_dir, *, data_root=None, progress=True):
    """Says it started (a ``started`` file), then trains for a minute unless stopped."""
    (Path(run_dir) / "started").write_text(str(os.getpid()))
    time.sleep(60)
    return _result(config, run_dir)


def quick_train(config, run_dir, *, data_root=None, progress=True):
    """One logged iteration, AP = 20 + k/10."""
    return _result(config, run_dir)


def failing_k5_train(config, run_dir, *, data_root=None, progress=True):
    """Row k5 diverges; the others finish."""
    if config.model.assign.topk == 5:
        raise RuntimeError("boom: k5 diverged")
    return _result(config, run_dir)
