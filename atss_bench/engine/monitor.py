"""What a training run reports while it runs: log.jsonl lines and an optional rich progress bar.

``log.jsonl`` holds one JSON object per logged iteration (``iter``, ``max_iter``, ``loss``, each
loss term, ``lr``, ``time`` = seconds per iteration over the last window, ``it/s``, ``elapsed``)
and a final ``{"eval": {...}}`` line. On resume, lines past the resumed iteration (written after
the checkpoint by the killed run) are dropped so the log reads as one uninterrupted run.

Progress (``progress=True``) goes to stdout. On a terminal it is a rich progress bar (imported
lazily; without rich, nothing). Elsewhere (a pipe, a CI log, ``nohup``, a SLURM output file) it is
plain text, one line per log period and one per evaluation phase (formats: :func:`train_line`,
:func:`eval_line`; the run id leads, so runs trained side by side can be told apart)::

    [94cf5c6aba7d] train 20/1200 loss 1.2346 lr 4.00e-03 2.50 it/s ETA 0:07:52
    [94cf5c6aba7d] eval 1/2 predict 256px: 150/150 images 10.2s
    [94cf5c6aba7d] eval 2/2 COCOeval: 15000 detections 0.4s
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol, Sequence, TextIO

from atss_bench.engine.checkpoint import write_atomic


class LogSink(Protocol):
    """Another destination of the same records (``engine.tensorboard.EventLog``)."""

    def truncate_after(self, iteration: int) -> None: ...
    def write(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class JsonlLog:
    """Appends JSON lines to ``path`` (flushed per line); ``truncate_after`` trims for resume.
    ``sinks`` get every call too (after the line is on disk); ``close`` closes them."""

    def __init__(self, path: Path, sinks: Sequence[LogSink] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sinks = list(sinks)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def truncate_after(self, iteration: int) -> None:
        """Keep only iteration lines with ``iter <= iteration`` (and no eval line)."""
        for sink in self.sinks:
            sink.truncate_after(iteration)
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
        for sink in self.sinks:
            sink.write(record)


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


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal (False when it is closed or replaced by a non-file)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (rounded down to the second), ``-:--:--`` when not finite."""
    if not math.isfinite(seconds):
        return "-:--:--"
    whole = max(0, int(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _prefix(label: str) -> str:
    return f"[{label}] " if label else ""


def _loss_text(loss: float) -> str:
    return f"{loss:.4f}" if math.isfinite(loss) else str(loss)


def train_line(label: str, iteration: int, max_iter: int, loss: float, lr: float,
               its: float) -> str:
    """The plain progress line of a log period; ETA = iterations left / ``its``."""
    eta = (max_iter - iteration) / its if its > 0 else math.inf
    return (f"{_prefix(label)}train {iteration}/{max_iter} loss {_loss_text(loss)} lr {lr:.2e} "
            f"{its:.2f} it/s ETA {format_duration(eta)}")


def eval_line(label: str, phase: int, phases: int, name: str, detail: str,
              seconds: float) -> str:
    """The plain line of evaluation phase ``phase`` of ``phases``."""
    return f"{_prefix(label)}eval {phase}/{phases} {name}: {detail} {seconds:.1f}s"


def _say(stream: TextIO | None, line: str) -> None:
    print(line, file=stream if stream is not None else sys.stdout, flush=True)


class TrainProgress:
    """The training loop's progress: a rich bar (iter, loss, lr, it/s, ETA) updated every
    iteration, or a :func:`train_line` every log period when ``plain`` (default: stdout is not a
    terminal), or nothing when disabled (or on a terminal without rich)."""

    def __init__(self, enabled: bool, max_iter: int, start_iter: int, *, label: str = "",
                 plain: bool | None = None, stream: TextIO | None = None) -> None:
        self._progress: Any = None
        self._task: Any = None
        self.max_iter, self.label, self.stream = max_iter, label, stream
        self.plain = enabled and (not stdout_is_terminal() if plain is None else plain)
        if not enabled or self.plain:
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
        """Every iteration (moves the bar)."""
        if self._progress is None:
            return
        self._progress.update(self._task, completed=iteration, loss=_loss_text(loss),
                              lr=f"{lr:.2e}", speed=f"{its:.2f}")

    def logged(self, iteration: int, loss: float, lr: float, its: float) -> None:
        """Every log period and at the end (``its``: over the period): the plain line."""
        if self.plain:
            _say(self.stream, train_line(self.label, iteration, self.max_iter, loss, lr, its))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class EvalProgress:
    """One :func:`eval_line` per evaluation phase when ``plain`` (default: stdout is not a
    terminal); nothing when disabled. ``begin(phases)``, then ``phase(name, detail)`` as each
    phase ends (its time: since the previous one ended, or since ``begin``)."""

    def __init__(self, enabled: bool, *, label: str = "", plain: bool | None = None,
                 stream: TextIO | None = None) -> None:
        self.plain = enabled and (not stdout_is_terminal() if plain is None else plain)
        self.label, self.stream = label, stream
        self.phases = self.done = 0
        self._since = time.perf_counter()

    def begin(self, phases: int) -> None:
        self.phases, self.done, self._since = phases, 0, time.perf_counter()

    def phase(self, name: str, detail: str) -> None:
        now = time.perf_counter()
        self.done += 1
        if self.plain:
            _say(self.stream, eval_line(self.label, self.done, self.phases, name, detail,
                                        now - self._since))
        self._since = now
