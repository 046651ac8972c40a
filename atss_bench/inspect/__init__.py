"""Assignment inspection: what each sample-selection rule makes of a dataset's GT boxes."""
from atss_bench.inspect.anchors import (
    ImageAnchors,
    anchors_for_padded_size,
    build_anchor_settings,
    feature_sizes,
    padded_size,
)
from atss_bench.inspect.count import PositiveCounts, count_positives
from atss_bench.inspect.gt import SplitGroundTruth, load_split_ground_truth
from atss_bench.inspect.settings import (
    RULES,
    parse_rules,
    resolve_dataset_root,
    resolve_rule_configs,
)

__all__ = [
    "RULES",
    "ImageAnchors",
    "PositiveCounts",
    "SplitGroundTruth",
    "anchors_for_padded_size",
    "build_anchor_settings",
    "count_positives",
    "feature_sizes",
    "load_split_ground_truth",
    "padded_size",
    "parse_rules",
    "resolve_dataset_root",
    "resolve_rule_configs",
]
