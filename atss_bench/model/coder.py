"""Where regression starts: an anchor box (deltas) or the anchor's centre point (ltrb / stride).

One object so that the losses and the inference decode predictions the same way.
"""
from __future__ import annotations

from typing import Literal

from torch import Tensor

from atss_bench.boxes import (
    BOX_CODER_WEIGHTS,
    box_centers,
    decode_boxes,
    decode_points,
    encode_boxes,
    encode_points,
)

RegressionStart = Literal["box", "point"]


class RegressionCoder:
    """``start="box"``: (dx, dy, dw, dh) * weights w.r.t. the anchor (torchvision's BoxCoder,
    dw/dh clamped at log(1000/16)). ``start="point"``: (l, t, r, b) from the anchor's centre,
    divided by the anchor's level stride (FCOS with normalised targets, official ATSS)."""

    def __init__(self, start: RegressionStart,
                 weights: tuple[float, float, float, float] = BOX_CODER_WEIGHTS) -> None:
        if start not in ("box", "point"):
            raise ValueError(f"regression start must be 'box' or 'point', got {start!r}")
        self.start = start
        self.weights = tuple(weights)

    def encode(self, gt_boxes: Tensor, anchors: Tensor, strides: Tensor) -> Tensor:
        """gt_boxes [N, 4] matched to anchors [N, 4] (strides [N]) -> targets [N, 4]."""
        if self.start == "box":
            return encode_boxes(gt_boxes, anchors, self.weights)
        return encode_points(box_centers(anchors), gt_boxes, strides)

    def decode(self, deltas: Tensor, anchors: Tensor, strides: Tensor) -> Tensor:
        """deltas [N, 4] on anchors [N, 4] (strides [N]) -> boxes [N, 4] (x0, y0, x1, y1)."""
        if self.start == "box":
            return decode_boxes(deltas, anchors, self.weights)
        return decode_points(deltas, box_centers(anchors), strides)
