"""What a training run reports while it runs: log.jsonl lines and an optional rich progress bar.

``log.jsonl`` holds one JSON object per logged iteration (``iter``, ``max_iter``, ``loss``, each
loss term, ``lr``, ``time`` = seconds per iteration over the last window, ``it/s``, ``elapsed``)
and a final ``{"eval": {...}}`` line. On resume, lines past the resumed iteration (written after
the checkpoint by the killed run) are dropped so the log reads as one uninterrupted run.

The progress bar uses ``rich.progress`` only, imported lazily: without rich (or with
``progress=False``) training runs silently.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from atss_bench.engine.checkpoint import write_atomic


class JsonlLog:
    """Appends JSON lines to ``path`` (flushed per line); ``truncate_after`` trims for resume."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, iteration: int) -> None:
        """Keep only iteration lines with ``iter <= iteration`` (and no eval line)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a half-written last line of a killed run
                continue
            if isinstance(record, dict) and isinstance(record.get("iter"), int) \
                    and record["iter"] <= iteration and "eval" not in record:
                kept.append(line)
        write_atomic(self.path, "".join(f"{line}\n" for line in kept).encode("utf-8"))

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, allow_nan=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every well-formed line of a log.jsonl."""
    records = []
    if Path(path).exists():
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


class TrainProgress:
    """A rich progress bar (iter, loss, lr, it/s, ETA), or nothing when disabled/unavailable."""

    def __init__(self, enabled: bool, max_iter: int, start_iter: int) -> None:
        self._progress: Any = None
        self._task: Any = None
        if not enabled:
            return
        try:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
        except ImportError:  # rich is optional for the library
            return
        self._progress = Progress(
            TextColumn("train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} it/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        )
        self._task = self._progress.add_task("train", total=max_iter, completed=start_iter,
                                             loss="-", lr="-", speed="-")
        self._progress.start()

    def update(self, iteration: int, loss: float, lr: float, its: float) -> None:
        if self._progress is None:
            return
        loss_text = f"{loss:.4f}" if math.isfinite(loss) else str(loss)
        self._progress.update(self._task, completed=iteration, loss=loss_text, lr=f"{lr:.2e}",
                              speed=f"{its:.2f}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
