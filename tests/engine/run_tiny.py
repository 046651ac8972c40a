"""Subprocess entry for the kill/resume test: ``python run_tiny.py CONFIG_JSON RUN_DIR [MARKER]``.

With MARKER, the process touches MARKER right after its first checkpoint is on disk and then
sleeps, so the test can SIGKILL it at a known point (mid-run, after a checkpoint).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from atss_bench.config import ExperimentConfig
from atss_bench.engine import runner


def main() -> None:
    config = ExperimentConfig.model_validate_json(Path(sys.argv[1]).read_text())
    run_dir = Path(sys.argv[2])
    if len(sys.argv) > 3:
        marker = Path(sys.argv[3])
        save = runner.save_checkpoint

        def save_then_pause(*args, **kwargs):
            path = save(*args, **kwargs)
            marker.write_text(str(path))
            time.sleep(600)
            return path

        runner.save_checkpoint = save_then_pause
    result = runner.run_experiment(config, run_dir, progress=False)
    print(json.dumps(result, allow_nan=True))


if __name__ == "__main__":
    main()
