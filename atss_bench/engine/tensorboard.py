"""TensorBoard event files beside ``log.jsonl``: the same records, for ``tensorboard --logdir``.

    run_dir/tensorboard/events.out.tfevents.*    written by rank 0 only

    tag                     step          value
    train/loss, train/loss_<term>   iteration     the loss terms of each log.jsonl line
    train/lr                iteration     learning rate of that iteration
    train/it_per_s          iteration     iterations per second over the last log period
    eval/<metric>           max_iter      every COCO metric of the final ``{"eval": ...}`` line
    config                  0             the resolved config as YAML (text)

``EventLog`` mirrors ``JsonlLog``: ``truncate_after(iteration)`` on resume makes TensorBoard drop
the killed run's events past that iteration (a ``purge_step``, the same cut ``log.jsonl`` makes);
on a fresh start (iteration 0) the folder's old event files go. Scalars are float32 (TensorBoard's
``simple_value``). Nothing here feeds back into training or the record: results and run ids are
the same with or without TensorBoard.

TensorBoard is optional (``pip install 'atss-bench[tensorboard]'``): without the package the log
is disabled with one notice per process (a logging warning), and training goes on.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from atss_bench.config import ExperimentConfig

TENSORBOARD_DIR = "tensorboard"
EVENTS_PREFIX = "events.out.tfevents."
NOTICE = ("TensorBoard logging is off: the tensorboard package is not installed "
          "(pip install 'atss-bench[tensorboard]')")
_RATE_KEY, _RATE_TAG = "it/s", "train/it_per_s"

log = logging.getLogger(__name__)
_noticed = False  # the missing-package notice is shown once per process


def _summary_writer_class() -> Callable[..., Any] | None:
    """torch's SummaryWriter, or None (and the notice, once) when tensorboard is missing."""
    global _noticed
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard needs the tensorboard package
        if not _noticed:
            log.warning(NOTICE)
            _noticed = True
        return None
    return SummaryWriter


def train_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """tag -> value for one log.jsonl iteration line: losses, lr, iterations per second."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if key.startswith("loss") or key == "lr":
            out[f"train/{key}"] = float(value)
        elif key == _RATE_KEY:
            out[_RATE_TAG] = float(value)
    return out


def eval_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """tag -> value for every numeric COCO metric (NaN too: COCOeval's -1, no such objects)."""
    return {f"eval/{name}": float(value) for name, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def config_text(config: ExperimentConfig) -> str:
    """The resolved config as YAML in a Markdown code block (TensorBoard renders Markdown)."""
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    return "\n".join("    " + line for line in text.splitlines())


def prepare_folder(folder: Path, fresh: bool) -> None:
    """A real folder to write into (a symlink or file in its place is removed, never followed);
    ``fresh``: the event files of an earlier training of this run go too (only those)."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    if fresh:
        for path in folder.iterdir():
            if path.name.startswith(EVENTS_PREFIX) and path.is_file() and not path.is_symlink():
                path.unlink()


class EventLog:
    """Writes ``log.jsonl`` records as TensorBoard events into ``folder`` (module doc).

    The writer opens on the first ``truncate_after`` or ``write``; every record is flushed, so a
    run that stops (failure, kill) leaves its events readable up to its last logged iteration.
    """

    def __init__(self, folder: Path, config: ExperimentConfig,
                 writer_class: Callable[..., Any]) -> None:
        self.folder, self.config, self._writer_class = Path(folder), config, writer_class
        self._writer: Any = None

    def truncate_after(self, iteration: int) -> None:
        """Start (iteration 0: old events go, the config is written) or resume after
        ``iteration`` (TensorBoard hides the earlier files' events past it)."""
        self.close()
        prepare_folder(self.folder, fresh=iteration <= 0)
        self._writer = self._writer_class(str(self.folder),
                                          purge_step=iteration + 1 if iteration > 0 else None)
        if iteration <= 0:
            self._writer.add_text("config", config_text(self.config), 0)
            self._writer.flush()

    def write(self, record: Mapping[str, Any]) -> None:
        step = record.get("iter")
        if not isinstance(step, int) or isinstance(step, bool):
            return
        evaluated = record.get("eval")
        scalars = (eval_scalars(evaluated) if isinstance(evaluated, Mapping)
                   else train_scalars(record))
        if not scalars:
            return
        if self._writer is None:
            prepare_folder(self.folder, fresh=False)
            self._writer = self._writer_class(str(self.folder))
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def open_event_log(run_dir: Path, config: ExperimentConfig) -> EventLog | None:
    """An ``EventLog`` into ``run_dir/tensorboard``, or None without the tensorboard package."""
    writer_class = _summary_writer_class()
    if writer_class is None:
        return None
    return EventLog(Path(run_dir) / TENSORBOARD_DIR, config, writer_class)
