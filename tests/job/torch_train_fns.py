"""A train function whose module imports torch: unpickling it in a spawned worker loads torch
(and OpenMP, which reads OMP_NUM_THREADS once) before any of the worker's own code runs."""
from __future__ import annotations

import torch

from atss_bench.recipes import METRICS


def threads_train(config, run_dir, *, data_root=None, progress=True):
    """AP = the intra-op threads torch uses in this worker."""
    return {"metrics": {m: float(torch.get_num_threads()) for m in METRICS}, "provenance": {}}
