"""A trained run's detector, for the rules that choose positives from predictions.

``inspect-assign --checkpoint RUN``: RUN is a run folder (``results/runs/<run_id>``), a run id
(or unique prefix) in a results store, or a checkpoint file ``<run folder>/checkpoints/ckpt_*.pt``.
The run folder is untrusted data: the folder and its ``checkpoints/`` may not be symbolic links,
``config.yaml`` is read by the bounded, symlink-refusing YAML reader of ``store.diff`` and
validated, the checkpoint by ``engine.checkpoint.load_checkpoint`` (checksum first, then
``weights_only``; a run folder: its newest readable checkpoint), and the checkpoint must record
the hash of that config. The detector is built from the stored config, loads the weights
strictly and runs in eval mode without gradients.

Per inspected image it gives a prediction-aware rule what the detector gives it in training
(``DenseDetector.assignment_inputs``: sigmoid class scores and boxes decoded by the detector's
own coder, detached) plus the image's GT labels, on the inspection's anchors (checked equal).
"""
from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from atss_bench.config import ATSSAssign, ExperimentConfig, PluginAssign, config_hash
from atss_bench.data import CocoDetection
from atss_bench.engine.checkpoint import load_checkpoint, load_latest_checkpoint
from atss_bench.errors import ConfigError, DataError, StoreError
from atss_bench.inspect.anchors import ImageAnchors, build_anchor_settings
from atss_bench.inspect.count import RuleInputs
from atss_bench.inspect.gt import SplitGroundTruth
from atss_bench.job import rundir as rd
from atss_bench.model import build_detector
from atss_bench.model.detector import DenseDetector
from atss_bench.overrides import validate_config
from atss_bench.store import printable
from atss_bench.store.diff import find_run, read_config_tree

CLS_WEIGHT = "head.cls_logits.weight"


@dataclass(frozen=True)
class TrainedModel:
    """A run's detector with its checkpoint's weights (eval mode), and where it came from."""

    detector: DenseDetector
    config: ExperimentConfig
    run_dir: Path
    checkpoint: Path
    iteration: int | None

    @property
    def num_classes(self) -> int:
        return self.detector.num_classes

    def describe(self) -> str:
        at = f", iteration {self.iteration}" if self.iteration is not None else ""
        return f"model: run {self.run_dir.name} ({self.checkpoint.name}{at})"

    def rule_inputs(self, image: Tensor, gt_labels: Tensor, anchors: ImageAnchors,
                    inputs: Sequence[str]) -> dict[str, Tensor]:
        """The batched inputs [1, ...] of a rule asking for ``inputs`` on one image [3, H, W]
        with GT labels [M]; ConfigError when the model's anchors are not ``anchors``."""
        model_anchors, _, predictions = self.detector.assignment_inputs([image], inputs)
        if not torch.equal(model_anchors, anchors.anchors):
            raise ConfigError("the model's anchors differ from the inspected anchors "
                              f"({len(model_anchors)} vs {len(anchors.anchors)})",
                              hint="inspect with the profile the run was trained with")
        return {**predictions, "gt_labels": gt_labels.to(torch.int64)[None]}


def _is_link(path: Path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def locate_run(spec: str | Path, results_dir: str | Path | None) -> tuple[Path, Path | None]:
    """(run folder, checkpoint file or None for the run's newest) of ``spec`` (module docstring).
    StoreError when it is missing, a symbolic link, or not a run's folder or checkpoint."""
    path = Path(spec).expanduser()
    if _is_link(path):
        raise StoreError(f"--checkpoint {printable(str(path), 200)} is a symbolic link",
                         hint="give the run folder or checkpoint file itself")
    if path.is_dir():
        return path, None
    if path.is_file():
        if path.parent.name != rd.CHECKPOINTS or _is_link(path.parent):
            raise StoreError(f"--checkpoint {printable(str(path), 200)} is not in a run's "
                             f"{rd.CHECKPOINTS}/ folder", hint="results/runs/<run_id>/"
                             f"{rd.CHECKPOINTS}/ckpt_<iteration>.pt, or the run folder")
        return path.parent.parent, path
    if path.exists():
        raise StoreError(f"--checkpoint {printable(str(path), 200)} is not a file or folder")
    if results_dir is not None and len(path.parts) == 1:
        return find_run(Path(results_dir), str(spec)), None
    raise StoreError(f"--checkpoint {printable(str(path), 200)}: no such run folder or file",
                     hint="a run folder, a checkpoint file, or a run id with --results")


def read_run_config(run_dir: Path) -> ExperimentConfig:
    """The run's stored config.yaml, validated (StoreError / ConfigError naming the run)."""
    if _is_link(run_dir):
        raise StoreError(f"run folder {printable(str(run_dir), 200)} is a symbolic link")
    return validate_config(read_config_tree(run_dir), f"run {run_dir.name}: {rd.CONFIG}")


def read_checkpoint(run_dir: Path, checkpoint: Path | None) -> tuple[Path, dict]:
    """(path, state) of ``checkpoint``, or of the run's newest readable checkpoint."""
    if checkpoint is not None:
        return checkpoint, load_checkpoint(checkpoint)  # TrainingError: one line
    folder = run_dir / rd.CHECKPOINTS
    if _is_link(folder):
        raise StoreError(f"run {run_dir.name}: {rd.CHECKPOINTS}/ is a symbolic link")
    found = load_latest_checkpoint(folder)
    if found is None:
        raise StoreError(f"run {run_dir.name} has no readable checkpoint in {rd.CHECKPOINTS}/",
                         hint="train it first, or give a checkpoint file")
    return found


def checkpoint_num_classes(weights: Mapping[str, object], config: ExperimentConfig,
                           where: str) -> int:
    """Classes of the checkpoint's classifier: its output channels / anchors per location."""
    weight = weights.get(CLS_WEIGHT)
    per_location = config.model.anchors.num_anchors_per_location
    if not isinstance(weight, Tensor) or weight.dim() != 4 or weight.shape[0] % per_location:
        raise StoreError(f"{where}: no classifier weights for {per_location} anchors per "
                         "location (not this run's model)")
    return int(weight.shape[0]) // per_location


def load_trained_model(spec: str | Path, results_dir: str | Path | None = None) -> TrainedModel:
    """The detector of ``spec`` with its checkpoint's weights, in eval mode (module docstring)."""
    run_dir, checkpoint = locate_run(spec, results_dir)
    config = read_run_config(run_dir)
    path, state = read_checkpoint(run_dir, checkpoint)
    where = f"checkpoint {printable(str(path), 200)}"
    if state.get("config_hash") != config_hash(config):
        raise StoreError(f"{where} was not trained with run {run_dir.name}'s {rd.CONFIG}",
                         hint="give the checkpoint of that run")
    weights = state.get("model")
    if not isinstance(weights, dict):
        raise StoreError(f"{where} holds no model weights")
    model_config = config.model
    if isinstance(model_config.assign, PluginAssign):
        # A plug-in named by a stored config is code named by a results folder: never imported.
        # The rules inspected come from --rules; the run's own rule holds no weights.
        model_config = model_config.model_copy(update={"assign": ATSSAssign()})
    detector = build_detector(model_config, checkpoint_num_classes(weights, config, where))
    try:
        detector.load_state_dict(weights, strict=True)
    except (RuntimeError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or ["mismatch"])[0]
        raise StoreError(f"{where}: weights do not fit the run's config: "
                         f"{printable(first, 200)}") from None
    detector.size_divisibility = config.data.size_divisibility  # as engine.runner sets it
    detector.eval()
    iteration = state.get("iteration")
    return TrainedModel(detector, config, run_dir, path,
                        iteration if type(iteration) is int else None)


def check_model_fits(model: TrainedModel, config: ExperimentConfig, num_classes: int) -> None:
    """ConfigError when the model cannot run the inspection: another number of classes than the
    data, or other anchors (strides, scales, aspect ratios) or padding than the inspection."""
    name = model.run_dir.name
    if model.num_classes != num_classes:
        raise ConfigError(f"run {name}'s model has {model.num_classes} classes, the inspected "
                          f"data {num_classes}", hint="inspect the dataset the run trained on")
    ours, theirs = build_anchor_settings(config.model), model.detector.anchor_settings
    if ours != theirs:
        raise ConfigError(
            f"run {name}'s model has {theirs.num_anchors_per_location} anchors per location at "
            f"strides {list(theirs.strides)}, the inspection {ours.num_anchors_per_location} at "
            f"{list(ours.strides)}" if (ours.num_anchors_per_location, ours.strides) !=
            (theirs.num_anchors_per_location, theirs.strides) else
            f"run {name}'s anchors {theirs} differ from the inspection's {ours}",
            hint="use the profile the run was trained with (--profile)")
    if model.detector.size_divisibility != config.data.size_divisibility:
        raise ConfigError(f"run {name} pads images to multiples of "
                          f"{model.detector.size_divisibility}, the inspection of "
                          f"{config.data.size_divisibility}", hint="--profile of the run")


def image_rule_inputs(model: TrainedModel, dataset: CocoDetection, ground_truth: SplitGroundTruth,
                      inputs: Sequence[str]) -> RuleInputs:
    """``count.RuleInputs`` of a rule asking for ``inputs``: the image of a split position
    (``dataset``: evaluation transform, the inspection's resize) through ``model``, with the GT
    labels of its training targets (DataError if those are not the GTs the statistics read)."""
    index = {int(image_id): i for i, image_id in enumerate(dataset.ids)}

    def for_image(position: int, anchors: ImageAnchors) -> dict[str, Tensor]:
        image_id = int(ground_truth.image_ids[position])
        if image_id not in index:
            raise DataError(f"image {image_id} is not in the dataset's image list")
        image, target = dataset[index[image_id]]
        first, last = (int(v) for v in ground_truth.gt_offsets[position:position + 2])
        boxes = ground_truth.boxes[first:last]
        if target["boxes"].shape != boxes.shape or not torch.allclose(
                target["boxes"], boxes, rtol=0, atol=1e-3):
            raise DataError(f"image {image_id}: its training targets differ from the GT boxes "
                            "read from the annotations")
        return model.rule_inputs(image, target["labels"], anchors, inputs)

    return for_image
