"""Pictures: one image, a panel per rule, GT boxes and the centres of the positive anchors.

Matplotlib's object API on the Agg canvas (no pyplot state, no display). Coordinates are the
resized image's continuous pixels (pixel i covers [i, i + 1]), the boxes' convention.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

GT_COLOR = "#00ff00"
GT_LINE_WIDTH = 1.5
# One colour per pyramid level, finest first (none of them green, the GT colour).
LEVEL_COLORS = ("#e6194b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#ffe119")
PANEL_INCHES = 5.0
DPI = 100


@dataclass(frozen=True)
class Panel:
    """One rule on the image: its ``title`` and positive anchors' ``centers`` [P, 2] (x, y)
    with their pyramid ``levels`` [P] (0 = finest)."""

    title: str
    centers: np.ndarray
    levels: np.ndarray


def grid_shape(num_panels: int) -> tuple[int, int]:
    """(rows, columns): 2 x 2 for four panels, else one row of up to three."""
    columns = 2 if num_panels == 4 else min(max(num_panels, 1), 3)
    return math.ceil(max(num_panels, 1) / columns), columns


def render_assignments(image: np.ndarray, gt_boxes: np.ndarray, panels: Sequence[Panel],
                       level_names: Sequence[str], title: str = "") -> Figure:
    """The figure: ``image`` [H, W, 3] uint8, ``gt_boxes`` [G, 4] xyxy in its pixels."""
    height, width = image.shape[:2]
    rows, columns = grid_shape(len(panels))
    panel_height = PANEL_INCHES * height / width
    top, gap, bottom = (0.7 if title else 0.35), 0.4, 0.6  # inches
    figure = Figure(dpi=DPI, figsize=(columns * PANEL_INCHES,
                                      rows * panel_height + (rows - 1) * gap + top + bottom))
    FigureCanvasAgg(figure)
    inches = figure.get_figheight()
    figure.subplots_adjust(left=0.01, right=0.99, bottom=bottom / inches, top=1 - top / inches,
                           wspace=0.03, hspace=gap / panel_height)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        _draw_panel(ax, image, gt_boxes, panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_axis_off()
    handles = [Line2D([], [], color=GT_COLOR, linewidth=2, label="GT box")]
    handles += [Line2D([], [], linestyle="", marker="o", markersize=6, markeredgecolor="white",
                       color=LEVEL_COLORS[i % len(LEVEL_COLORS)], label=f"{name} positive")
                for i, name in enumerate(level_names)]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    if title:
        figure.suptitle(title, y=1 - 0.1 / inches, va="top")
    return figure


def _draw_panel(ax, image: np.ndarray, gt_boxes: np.ndarray, panel: Panel) -> None:
    height, width = image.shape[:2]
    ax.imshow(image, extent=(0, width, height, 0), interpolation="nearest")
    for x0, y0, x1, y1 in np.asarray(gt_boxes, dtype=float).reshape(-1, 4):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=GT_COLOR,
                               linewidth=GT_LINE_WIDTH))
    levels = np.asarray(panel.levels, dtype=int)
    if len(levels):
        colors = [LEVEL_COLORS[level % len(LEVEL_COLORS)] for level in levels]
        centers = np.asarray(panel.centers, dtype=float).reshape(-1, 2)
        ax.scatter(centers[:, 0], centers[:, 1], s=14, c=colors, edgecolors="white",
                   linewidths=0.4)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_title(panel.title, fontsize=10)
    ax.set_axis_off()


def save_figure(figure: Figure, path: Path) -> Path:
    """PNG at the figure's own size and dpi (no tight cropping: pixel positions stay known)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=figure.dpi)
    return path
