"""The sweep plot is a real PNG with the paper's line and our error bars on it."""
from __future__ import annotations

import numpy as np
from PIL import Image

from atss_bench.report import plot_sweep


def _pixels(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


def test_table4_plot_has_the_paper_and_ours(table, make_frame, tmp_path):
    t4 = table(4)
    frame = make_frame(t4, "full", {r.id: [-0.5, 0.1, 0.3] for r in t4.rows[:7]})
    path = plot_sweep(t4, frame, "full", None, tmp_path / "t4.png")
    pixels = _pixels(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300
    background = pixels[0, 0]
    assert (np.abs(pixels - background).sum(axis=2) > 60).mean() > 0.02  # something was drawn
    blue = np.array([31, 119, 180])  # matplotlib tab:blue: our series
    assert (np.abs(pixels - blue).sum(axis=2) < 40).sum() > 100


def test_plot_without_results_still_draws_the_paper(table, make_frame, tmp_path):
    t6 = table(6)
    import pandas as pd
    path = plot_sweep(t6, pd.DataFrame(), "mini", 1, tmp_path / "t6.png")
    pixels = _pixels(path)
    gray = np.array([115, 115, 115])  # the paper's line ("0.45" gray)
    assert (np.abs(pixels - gray).sum(axis=2) < 30).sum() > 100
    blue = np.array([31, 119, 180])
    assert (np.abs(pixels - blue).sum(axis=2) < 40).sum() < 20
