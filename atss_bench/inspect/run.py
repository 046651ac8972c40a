"""`inspect-assign` as a library call: statistics of every rule over a split, tables, pictures.

    result = run_inspection(root, "val2017", resolve_rule_configs("mini", RULES), out_dir)

The statistics read annotations and image sizes only; only the pictures decode images (through
``data.CocoDetection``, evaluation transform: no flip). A prediction-aware rule (task_aligned,
simota, such a plug-in) needs a trained ``model`` (``inspect.trained``): every image with GTs is
then decoded and run through it, once per such rule, for the statistics as for the pictures.
With two rules or more, each rule's positives are also compared with the first rule's
(``inspect.agreement``), from the same assignment (no rule runs twice).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from atss_bench.config import ExperimentConfig
from atss_bench.data import CocoDetection
from atss_bench.errors import ConfigError, DataError
from atss_bench.inspect.agreement import summarize_agreement
from atss_bench.inspect.anchors import anchors_for_padded_size, build_anchor_settings, padded_size
from atss_bench.inspect.count import (PositiveCounts, RuleInputs, assign_group, count_positives,
                                      torch_threads)
from atss_bench.inspect.draw import Panel, render_assignments, save_figure
from atss_bench.inspect.gt import SplitGroundTruth, load_split_ground_truth
from atss_bench.inspect.settings import annotation_file
from atss_bench.inspect.stats import level_names, summarize
from atss_bench.inspect.trained import TrainedModel, check_model_fits, image_rule_inputs
from atss_bench.inspect.write import (render_agreement_markdown, render_markdown,
                                      write_agreement_csv, write_tables)
from atss_bench.model import build_assigner
from atss_bench.model.targets import Assigner

# The inputs a prediction-aware rule asks for (names) -> how to get them for an image.
InputsFactory = Callable[[Sequence[str]], RuleInputs]


@dataclass
class InspectionResult:
    """What ``run_inspection`` computed and wrote."""

    table: pd.DataFrame
    counts: dict[str, PositiveCounts]
    ground_truth: SplitGroundTruth
    seconds: float
    markdown_path: Path | None = None
    csv_path: Path | None = None
    pictures: list[Path] = field(default_factory=list)
    # With two rules or more: how far each picks the first rule's positives (inspect.agreement)
    agreement: pd.DataFrame | None = None
    agreement_csv_path: Path | None = None


def check_same_geometry(configs: Mapping[str, ExperimentConfig]) -> ExperimentConfig:
    """The rules are compared on one resize and one anchor set: the configs must agree there."""
    if not configs:
        raise ConfigError("no rule to inspect")
    first = next(iter(configs.values()))
    for rule, config in configs.items():
        if config.data != first.data or config.model.anchors != first.model.anchors \
                or config.model.fpn != first.model.fpn:
            raise ConfigError(f"rule {rule}: data, anchors or FPN differ from the other rules")
    return first


def needs_predictions(configs: Mapping[str, ExperimentConfig]) -> list[str]:
    """The rules of ``configs`` that choose positives from a model's predictions."""
    return [rule for rule, c in configs.items() if build_assigner(c.model).inputs]


def rule_inputs(rule: str, assigner: Assigner, factory: InputsFactory | None
                ) -> RuleInputs | None:
    """None for a rule on GT boxes alone; else its per-image inputs (ConfigError: no model)."""
    if not assigner.inputs:
        return None
    if factory is None:
        raise ConfigError(f"rule {rule!r} asks for {', '.join(assigner.inputs)}, but no "
                          "trained model is given", hint="--checkpoint RUN")
    return factory(assigner.inputs)


def compute_statistics(ground_truth: SplitGroundTruth, configs: Mapping[str, ExperimentConfig],
                       factory: InputsFactory | None = None,
                       ) -> tuple[pd.DataFrame, dict[str, PositiveCounts]]:
    """Positives of every rule over ``ground_truth`` and their summary table; ``factory``
    gives a prediction-aware rule its inputs."""
    config = check_same_geometry(configs)
    settings = build_anchor_settings(config.model)
    counts = {}
    for rule, c in configs.items():
        assigner = build_assigner(c.model)
        counts[rule] = count_positives(ground_truth, assigner, settings,
                                       c.data.size_divisibility,
                                       inputs=rule_inputs(rule, assigner, factory))
    return summarize(ground_truth, counts, level_names(settings.strides)), counts


def choose_images(ground_truth: SplitGroundTruth, image_ids: Sequence[int] | None,
                  num_images: int) -> list[int]:
    """Positions of ``image_ids`` (DataError for an unknown id), else the first ``num_images``."""
    if image_ids:
        return [ground_truth.image_position(int(i)) for i in image_ids]
    return list(range(min(num_images, ground_truth.num_images)))


def render_image(dataset: CocoDetection, ground_truth: SplitGroundTruth, position: int,
                 configs: Mapping[str, ExperimentConfig],
                 factory: InputsFactory | None = None, note: str = "") -> Figure:
    """The figure of one image: a panel per rule with its positives; ``note`` ends the title
    (the model whose predictions prediction-aware rules used)."""
    image_id = int(ground_truth.image_ids[position])
    tensor, target = dataset[dataset.ids.index(image_id)]
    height, width = (int(v) for v in ground_truth.sizes[position])
    if tuple(target["size"]) != (height, width):
        raise DataError(f"image {image_id}: the file is {tuple(target['orig_size'])} pixels but "
                        f"the annotations say {tuple(ground_truth.orig_sizes[position])}")
    config = check_same_geometry(configs)
    settings = build_anchor_settings(config.model)
    size = padded_size(height, width, config.data.size_divisibility)
    anchors = anchors_for_padded_size(settings, size)
    first, last = ground_truth.gt_offsets[position], ground_truth.gt_offsets[position + 1]
    panels = []
    for rule, rule_config in configs.items():
        centers, levels = np.zeros((0, 2)), np.zeros(0, dtype=int)
        zero = last - first
        if last > first:
            assigner = build_assigner(rule_config.model)
            found = assign_group(ground_truth, np.array([position]), anchors, assigner,
                                 inputs=rule_inputs(rule, assigner, factory))
            boxes = anchors.anchors[found.anchor].double()
            centers = ((boxes[:, :2] + boxes[:, 2:]) / 2).numpy()
            levels = anchors.levels[found.anchor].numpy()
            zero = (last - first) - len(set(found.gt.tolist()))
        panels.append(Panel(f"{rule}: {len(levels)} positives, {zero} of {last - first} GTs "
                            "without", centers, levels))
    pixels = (tensor.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    num_gt = last - first
    title = (f"image {image_id}: {width}x{height} after resize (padded {size[1]}x{size[0]}), "
             f"{num_gt} GT box{'' if num_gt == 1 else 'es'}" + (f"; {note}" if note else ""))
    return render_assignments(pixels, ground_truth.boxes[first:last].numpy(), panels,
                              level_names(settings.strides), title)


def run_inspection(root: Path, split: str, configs: Mapping[str, ExperimentConfig],
                   out_dir: Path | None, *, image_ids: Sequence[int] | None = None,
                   num_images: int = 2, name: str = "assign",
                   model: TrainedModel | None = None) -> InspectionResult:
    """Statistics of every rule in ``configs`` on ``root``'s ``split``; with ``out_dir``, write
    ``<name>.md``, ``<name>.csv`` and ``<name>-<image id>.png`` there (with two rules or more,
    ``<name>.md`` gets the agreement table too, also in ``<name>-agreement.csv``). ``model``:
    the trained detector whose predictions prediction-aware rules get (``inspect.trained``)."""
    config = check_same_geometry(configs)
    start = time.perf_counter()
    ground_truth = load_split_ground_truth(annotation_file(root, split),
                                           config.data.test_min_size, config.data.max_size)
    positions = choose_images(ground_truth, image_ids, num_images)  # fail before the work
    with_predictions = bool(needs_predictions(configs)) and model is not None
    dataset = open_dataset(root, split, config) if positions or with_predictions else None
    factory = None
    if with_predictions:
        assert model is not None and dataset is not None
        check_model_fits(model, config, dataset.num_classes)
        factory = prediction_factory(model, dataset, ground_truth)
    table, counts = compute_statistics(ground_truth, configs, factory)  # 1 thread (count)
    agreement = summarize_agreement(ground_truth, counts) if len(counts) > 1 else None
    result = InspectionResult(table, counts, ground_truth, time.perf_counter() - start,
                              agreement=agreement)
    if out_dir is None:
        return result
    notes = describe(root, split, configs, ground_truth, result.seconds)
    if with_predictions:
        assert model is not None
        notes.insert(3, f"{model.describe()}: its class scores and decoded boxes, eval mode, "
                        f"for {', '.join(needs_predictions(configs))}")
    markdown = render_markdown(table, f"Sample selection on {root.name} {split}", notes)
    if agreement is not None:
        markdown += render_agreement_markdown(agreement)
        result.agreement_csv_path = write_agreement_csv(agreement, out_dir / name)
    result.markdown_path, result.csv_path = write_tables(table, markdown, out_dir / name)
    if positions:
        assert dataset is not None
        with torch_threads(1):
            for position in positions:
                figure = render_image(dataset, ground_truth, position, configs, factory,
                                      model.describe() if with_predictions and model else "")
                path = out_dir / f"{name}-{int(ground_truth.image_ids[position])}.png"
                result.pictures.append(save_figure(figure, path))
    return result


def open_dataset(root: Path, split: str, config: ExperimentConfig) -> CocoDetection:
    """The split's images as evaluation sees them (test resize, no flip), every image kept."""
    return CocoDetection(root, split, train=False, min_size=config.data.test_min_size,
                         max_size=config.data.max_size, remove_images_without_annotations=False)


def prediction_factory(model: TrainedModel, dataset: CocoDetection,
                       ground_truth: SplitGroundTruth) -> InputsFactory:
    """Per-image inputs of prediction-aware rules from ``model`` on ``dataset``'s images."""
    def factory(inputs: Sequence[str]) -> RuleInputs:
        return image_rule_inputs(model, dataset, ground_truth, inputs)

    return factory


def describe(root: Path, split: str, configs: Mapping[str, ExperimentConfig],
             ground_truth: SplitGroundTruth, seconds: float) -> list[str]:
    """The Markdown notes: data, resize, anchors and each rule's parameters."""
    config = check_same_geometry(configs)
    anchors = config.model.anchors
    notes = [
        (f"data: {root} ({split}), {ground_truth.num_images} images, {ground_truth.num_gt} "
         "non-crowd GT boxes (clipped, >= 1 px, as training targets)"),
        (f"resize: shorter side {config.data.test_min_size}, longer <= {config.data.max_size}, "
         f"padded to a multiple of {config.data.size_divisibility}"),
        (f"anchors: strides {config.model.fpn.strides}, octave_base_scale "
         f"{anchors.octave_base_scale}, scales_per_octave {anchors.scales_per_octave}, "
         f"aspect_ratios {anchors.aspect_ratios}"),
    ]
    for rule, rule_config in configs.items():
        params = build_assigner(rule_config.model).params
        notes.append(f"{rule}: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    notes.append("size: COCO area of the original annotation, [0, 32^2), [32^2, 96^2), "
                 "[96^2, inf); aspect: w / h of the resized box; level %: share of positives")
    notes.append(f"statistics computed in {seconds:.1f} s")
    return notes
