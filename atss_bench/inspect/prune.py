"""The anchors that decide an image's positives, so a rule can run on those alone.

Per GT and pyramid level, a rectangle of locations (rows, columns of the level's map) outside
which no anchor is positive for that GT, nor changes the answer for another anchor of the image:

- ``max_iou`` (fg_iou_thresh > 0): a positive has IoU >= fg_iou_thresh with its best GT, or
  equals some GT's maximum IoU, so every positive has IoU >= t_g = min(fg_iou_thresh, max IoU of
  g) with some GT g. t_g is bounded below by the IoU of g with the anchors of the location under
  its centre. IoU >= t needs an intersection >= t * max(area_a, area_g), hence a centre offset
  |dx| <= (w_a + w_g) / 2 - t * max(area_a, area_g) / min(h_a, h_g) (and the same in y) for
  an anchor of size (w_a, h_a): on levels whose anchors are too small or too large, nothing.
  An anchor outside all GTs' rectangles is below every t_g: never positive, never a maximum.
- ``fcos``: a positive location lies strictly inside its GT (center sampling only shrinks it)
  and max(l, t, r, b) <= hi of its level: x in [max(x0, x1 - hi), min(x1, x0 + hi)], same in y.
- ``topk_scale``, ``atss``: a GT's candidates on a level are its ``topk`` nearest locations (the
  whole level if it has no more); every decision is made among candidates. Rectangle: the square
  of half-side U around the GT centre, U >= the topk-th nearest distance (taken among a window of
  the map, which can only overestimate it).
Bounds are widened by small margins (float32 in the rules, float64 here); a larger rectangle is
always safe. Keeping more anchors than an image's rectangles (e.g. another image's) changes
nothing: they are farther than the topk-th candidate, below every t_g, or outside every GT.
So each image runs on the union of its GTs' rectangles, in the original anchor order, and gets
the same positives as on every anchor (tests/inspect compare both). Unknown rules: ``None``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from atss_bench.inspect.anchors import ImageAnchors

# Location bounds are widened by this fraction of a cell on each side (float rounding).
_CELL_MARGIN = 1e-4
# The top-k radius is widened by this relative and absolute (pixels) amount (float32 distances).
_RADIUS_REL_MARGIN, _RADIUS_ABS_MARGIN = 1e-5, 1e-2
# The IoU floor t_g is lowered by this relative amount (float32 IoUs in the rule).
_IOU_REL_MARGIN = 1e-4


def location_rectangles(strategy: str, params: Mapping[str, Any], gt_boxes: Tensor,
                        anchors: ImageAnchors) -> Tensor | None:
    """Per GT [G, 4] and level, the locations that can matter: int64 [G, L, 4] (row0, row1,
    col0, col1) inclusive, clipped to the map (row0 > row1 or col0 > col1: none); None when the
    rule or its params are not understood (keep every anchor)."""
    boxes = gt_boxes.double()  # [G, 4]
    num_levels = len(anchors.strides)
    if any(len(params.get(key) or [None] * num_levels) != num_levels
           for key in ("strides", "scale_ranges")):
        return None  # the rule itself reports the mismatch
    if strategy == "fcos":
        return _fcos_rectangles(boxes, params, anchors)
    if strategy == "max_iou" and float(params.get("fg_iou_thresh", 0.5)) > 0:
        return _iou_rectangles(boxes, float(params.get("fg_iou_thresh", 0.5)), anchors)
    if strategy in ("topk_scale", "atss"):
        return _topk_squares(boxes, int(params.get("topk", 9)), anchors)
    return None


def _cells(lo: Tensor, hi: Tensor, stride: int, size: int) -> tuple[Tensor, Tensor]:
    """First and last i whose centre (i + 0.5) * stride is in [lo, hi], within 0 .. size - 1."""
    first = torch.ceil(lo / stride - 0.5 - _CELL_MARGIN).clamp(0, size)
    last = torch.floor(hi / stride - 0.5 + _CELL_MARGIN).clamp(-1, size - 1)
    return first.long(), last.long()


def _rectangle(x_lo: Tensor, x_hi: Tensor, y_lo: Tensor, y_hi: Tensor, stride: int,
               size: tuple[int, int]) -> Tensor:
    row0, row1 = _cells(y_lo, y_hi, stride, size[0])
    col0, col1 = _cells(x_lo, x_hi, stride, size[1])
    return torch.stack((row0, row1, col0, col1), dim=1)  # [G, 4]


def _fcos_rectangles(boxes: Tensor, params: Mapping[str, Any], anchors: ImageAnchors) -> Tensor:
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    radius = params.get("center_sampling_radius")
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    per_level = []
    for level, (size, stride) in enumerate(zip(anchors.feature_sizes, anchors.strides)):
        hi = float(params["scale_ranges"][level][1])
        x_lo, x_hi = torch.maximum(x0, x1 - hi), torch.minimum(x1, x0 + hi)
        y_lo, y_hi = torch.maximum(y0, y1 - hi), torch.minimum(y1, y0 + hi)
        if radius is not None:
            reach = float(radius) * float(params["strides"][level])
            x_lo, x_hi = torch.maximum(x_lo, cx - reach), torch.minimum(x_hi, cx + reach)
            y_lo, y_hi = torch.maximum(y_lo, cy - reach), torch.minimum(y_hi, cy + reach)
        per_level.append(_rectangle(x_lo, x_hi, y_lo, y_hi, stride, size))
    return torch.stack(per_level, dim=1)  # [G, L, 4]


def _iou_rectangles(boxes: Tensor, fg_iou_thresh: float, anchors: ImageAnchors) -> Tensor:
    gt_w, gt_h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]  # [G]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    floor = torch.clamp(_iou_under_centre(boxes, anchors), max=fg_iou_thresh)
    floor = floor * (1 - _IOU_REL_MARGIN)  # [G] <= min(fg_iou_thresh, max IoU of the GT)
    per_level = []
    for level, (size, stride) in enumerate(zip(anchors.feature_sizes, anchors.strides)):
        anchor_w, anchor_h = (2 * anchors.half_sizes[level]).unbind(dim=1)  # [A]
        need = floor[:, None] * torch.maximum(anchor_w * anchor_h, (gt_w * gt_h)[:, None])
        dx = (anchor_w + gt_w[:, None]) / 2 - need / torch.minimum(anchor_h, gt_h[:, None])
        dy = (anchor_h + gt_h[:, None]) / 2 - need / torch.minimum(anchor_w, gt_w[:, None])
        possible = (dx >= 0) & (dy >= 0)  # [G, A]
        dx = torch.where(possible, dx, -math.inf).amax(dim=1)  # [G] widest over the shapes
        dy = torch.where(possible, dy, -math.inf).amax(dim=1)
        per_level.append(_rectangle(cx - dx, cx + dx, cy - dy, cy + dy, stride, size))
    return torch.stack(per_level, dim=1)  # [G, L, 4]


def _iou_under_centre(boxes: Tensor, anchors: ImageAnchors) -> Tensor:
    """Per GT, the largest IoU with the anchors of the location whose cell holds its centre
    (every level): a lower bound of the GT's maximum IoU. [G]"""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    best = torch.zeros(len(boxes), dtype=torch.float64)
    for level, ((height, width), stride) in enumerate(zip(anchors.feature_sizes, anchors.strides)):
        px = (torch.floor(cx / stride).clamp(0, width - 1) + 0.5) * stride  # [G]
        py = (torch.floor(cy / stride).clamp(0, height - 1) + 0.5) * stride
        half = anchors.half_sizes[level]  # [A, 2]
        lt = torch.maximum(torch.stack((px, py), 1)[:, None] - half, boxes[:, None, :2])
        rb = torch.minimum(torch.stack((px, py), 1)[:, None] + half, boxes[:, None, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=2)  # [G, A]
        area_a = (2 * half).prod(dim=1)  # [A]
        area_g = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1)  # [G]
        iou = inter / (area_a[None] + area_g[:, None] - inter)
        best = torch.maximum(best, iou.amax(dim=1))
    return best


def _topk_squares(boxes: Tensor, topk: int, anchors: ImageAnchors) -> Tensor:
    """Squares around the GT centres holding each GT's topk nearest locations."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2  # [G]
    per_level = []
    for (height, width), stride in zip(anchors.feature_sizes, anchors.strides):
        if height * width <= topk:  # the whole level is every GT's candidates
            whole = torch.tensor([0, height - 1, 0, width - 1], dtype=torch.long)
            per_level.append(whole.expand(len(boxes), 4))
            continue
        radius = _topk_radius(cx, cy, topk, stride, height, width)
        radius = radius * (1 + _RADIUS_REL_MARGIN) + _RADIUS_ABS_MARGIN  # [G]
        per_level.append(_rectangle(cx - radius, cx + radius, cy - radius, cy + radius,
                                    stride, (height, width)))
    return torch.stack(per_level, dim=1)  # [G, L, 4]


def _topk_radius(cx: Tensor, cy: Tensor, topk: int, stride: int, height: int, width: int
                 ) -> Tensor:
    """An upper bound of the distance to the topk-th nearest location (height * width > topk):
    the topk-th distance within a window of the map around the centre's cell. [G]"""
    row = torch.floor(cy / stride).long().clamp(0, height - 1)  # [G]
    col = torch.floor(cx / stride).long().clamp(0, width - 1)
    half = max(1, math.ceil(math.sqrt(topk)))
    while half < max(height, width):  # smallest window with >= topk cells for every GT
        rows = (row + half).clamp(max=height - 1) - (row - half).clamp(min=0) + 1
        cols = (col + half).clamp(max=width - 1) - (col - half).clamp(min=0) + 1
        if bool((rows * cols >= topk).all()):
            break
        half += 1
    offsets = torch.arange(-half, half + 1)
    rows = row[:, None, None] + offsets[None, :, None]  # [G, S, 1]
    cols = col[:, None, None] + offsets[None, None, :]  # [G, 1, S]
    dy = (rows + 0.5) * stride - cy[:, None, None]
    dx = (cols + 0.5) * stride - cx[:, None, None]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    dist2 = torch.where(inside, dx * dx + dy * dy, math.inf).flatten(1)  # [G, S * S]
    return dist2.kthvalue(topk, dim=1).values.sqrt()


def anchors_in_rectangles(rectangles: Tensor, owner: Tensor, num_owners: int,
                          anchors: ImageAnchors) -> tuple[Tensor, Tensor]:
    """The anchors of every location in the union of each owner's rectangles.

    rectangles [G, L, 4], owner [G] in 0 .. num_owners - 1 (e.g. the image of each GT).
    Returns (anchor indices [K], offsets [num_owners + 1]): owner o keeps
    ``indices[offsets[o]:offsets[o + 1]]``, ascending, all A anchors of a kept location.
    """
    num_levels = len(anchors.feature_sizes)
    widths = torch.tensor([w for _, w in anchors.feature_sizes])  # [L]
    starts = torch.tensor(anchors.level_starts)  # [L]
    rows = (rectangles[..., 1] - rectangles[..., 0] + 1).clamp(min=0)  # [G, L]
    cols = (rectangles[..., 3] - rectangles[..., 2] + 1).clamp(min=0)
    cells = (rows * cols).reshape(-1)  # [G * L]
    which = torch.repeat_interleave(torch.arange(len(cells)), cells)  # [T] rectangle of a cell
    first = torch.cumsum(cells, 0) - cells
    within = torch.arange(len(which)) - first[which]  # [T] index of the cell in its rectangle
    level = which % num_levels
    rect = rectangles.reshape(-1, 4)[which]  # [T, 4]
    ncols = cols.reshape(-1)[which]
    row, col = rect[:, 0] + within // ncols, rect[:, 2] + within % ncols
    num_per_location = anchors.num_anchors_per_location
    location_anchor = starts[level] + (row * widths[level] + col) * num_per_location  # [T]
    total = len(anchors.anchors)
    key = torch.unique(owner[which // num_levels] * total + location_anchor)  # sorted
    owners = key // total
    index = (key % total)[:, None] + torch.arange(num_per_location)  # [K / A, A]
    counts = torch.bincount(owners, minlength=num_owners) * num_per_location
    offsets = torch.cat((torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)))
    return index.reshape(-1), offsets
