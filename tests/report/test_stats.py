"""Student's t, Welch's interval and the seed plan: against scipy.stats and by hand."""
from __future__ import annotations

import math

import pytest
from scipy import special
from scipy import stats as sp

from atss_bench.report import stats

DFS = [0.4, 1, 1.5, 2, 2.37, 3, 3.5, 4.83, 10, 57.3, 1000, 20000]
PS = [0.5001, 0.6, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.99875, 0.9999999]


@pytest.mark.parametrize("df", DFS)
def test_t_quantile_and_tail_match_scipy_for_real_df(df):
    for p in PS:
        assert stats.t_quantile(p, df) == pytest.approx(sp.t.ppf(p, df), rel=1e-9)
        assert stats.t_quantile(1 - p, df) == pytest.approx(sp.t.ppf(1 - p, df), rel=1e-9)
    for t in (-3.0, 0.0, 0.1, 1.0, 2.5, 12.0):
        assert stats.t_sf(t, df) == pytest.approx(sp.t.sf(t, df), rel=1e-9)


def test_t_quantile_by_hand():
    # df 1 is Cauchy: tan(pi (p - 1/2)); df 2: (2p - 1) / sqrt(2 p (1 - p))
    assert stats.t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-12)
    assert stats.t_quantile(0.975, 2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025),
                                                       rel=1e-12)
    assert stats.t_quantile(0.5, 3.3) == 0.0


@pytest.mark.parametrize("a, b", [(0.5, 0.5), (1.0, 3.0), (2.5, 0.5), (40.0, 0.5), (7.0, 9.0)])
def test_betainc_matches_scipy(a, b):
    for x in (0.0, 1e-6, 0.01, 0.3, 0.5, 0.77, 0.999, 1.0):
        assert stats.betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-10,
                                                       abs=1e-300)


@pytest.mark.parametrize("call", [
    lambda: stats.t_quantile(1.0, 3), lambda: stats.t_quantile(0.0, 3),
    lambda: stats.t_quantile(0.9, 0), lambda: stats.t_quantile(0.9, float("nan")),
    lambda: stats.t_sf(1.0, -1), lambda: stats.betainc(0, 1, 0.5),
    lambda: stats.betainc(1, 1, 1.5),
    lambda: stats.welch_interval(1, 1, 1, 0, 1, 3), lambda: stats.welch_interval(1, -1, 3, 0, 1, 3),
    lambda: stats.welch_interval(1, 1, 3, 0, 1, 3, confidence=1.0),
    lambda: stats.pooled_std([1.0], [1]), lambda: stats.seeds_needed(-1, 1),
])
def test_out_of_domain_inputs_are_refused(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("a, b", [
    ([37.1, 38.0, 36.2], [39.4, 39.0, 39.5]),  # df between 2 and 4
    ([30.0, 35.0, 31.0, 28.5, 33.3], [29.0, 29.4]),  # unequal n
    ([10.0, 10.1], [5.0, 9.0, 13.0]),  # one side far noisier
])
def test_welch_interval_matches_scipy(a, b):
    iv = stats.welch_interval(sp.tmean(a), sp.tstd(a), len(a), sp.tmean(b), sp.tstd(b), len(b))
    res = sp.ttest_ind(a, b, equal_var=False)
    low, high = res.confidence_interval(0.95)
    assert (iv.low, iv.high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert iv.df == pytest.approx(res.df, rel=1e-12)
    assert iv.diff / iv.se == pytest.approx(res.statistic, rel=1e-12)


def test_welch_interval_by_hand():
    # s1 = 1 (n 3), s2 = 2 (n 3): se^2 = 1/3 + 4/3 = 5/3; df = (5/3)^2 / ((1/9 + 16/9) / 2) = 50/17
    iv = stats.welch_interval(40.0, 1.0, 3, 38.0, 2.0, 3)
    assert iv.se == pytest.approx(math.sqrt(5 / 3))
    assert iv.df == pytest.approx(50 / 17)
    assert iv.half_width == pytest.approx(sp.t.ppf(0.975, 50 / 17) * math.sqrt(5 / 3))
    assert (iv.diff, iv.confidence) == (2.0, 0.95) and not iv.excludes_zero
    assert iv.bound == pytest.approx(2.0 + iv.half_width)  # the far end, not the half-width


def test_welch_interval_with_zero_spread():
    one = stats.welch_interval(39.3, 0.0, 3, 37.2, 0.2, 3)  # only the second row's noise counts
    assert one.df == pytest.approx(2.0) and one.se == pytest.approx(0.2 / math.sqrt(3))
    t_975_2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # df 2, by hand (above)
    assert one.half_width == pytest.approx(t_975_2 * 0.2 / math.sqrt(3))
    point = stats.welch_interval(39.3, 0.0, 3, 37.2, 0.0, 4)
    assert (point.df, point.half_width, point.low, point.high) == (None, 0.0, 39.3 - 37.2,
                                                                   39.3 - 37.2)
    assert point.excludes_zero
    assert not stats.welch_interval(1.0, 0.0, 2, 1.0, 0.0, 2).excludes_zero


def test_pooled_std_weights_by_degrees_of_freedom_and_skips_single_seeds():
    # (2 * 1 + 4 * 4) / 6 = 3
    assert stats.pooled_std([1.0, 2.0, 9.0], [3, 5, 1]) == pytest.approx(math.sqrt(3.0))


def _exact_gain_power(n: int, sigma: float, effect: float, alpha: float = 0.05) -> float:
    df, nc = 2 * n - 2, effect / (sigma * math.sqrt(2 / n))
    crit = sp.t.ppf(1 - alpha / 2, df)
    return sp.nct.sf(crit, df, nc) + sp.nct.cdf(-crit, df, nc)


@pytest.mark.parametrize("sigma, effect", [(1.0, 2.3), (1.5, 0.6), (2.0, 0.9), (3.0, 12.0)])
def test_seeds_needed_for_a_gain_is_the_smallest_n_with_80_percent_power(sigma, effect):
    n = stats.seeds_needed(sigma, effect)
    assert n is not None and n >= 2
    assert _exact_gain_power(n, sigma, effect) >= 0.8  # noncentral t, exact
    assert n == 2 or _exact_gain_power(n - 1, sigma, effect) < 0.8


def test_seeds_needed_by_the_formula():
    # equivalence: effect >= (t(.975, 2n-2) + t(.9, 2n-2)) sigma sqrt(2/n), smallest such n
    def enough(n: int, q: float, sigma: float, effect: float, p_alpha: float = 0.975) -> bool:
        df = 2 * n - 2
        return (sp.t.ppf(p_alpha, df) + sp.t.ppf(q, df)) * sigma * math.sqrt(2 / n) <= effect

    n = stats.seeds_needed(2.55, 1.4, equivalence=True)
    assert enough(n, 0.9, 2.55, 1.4) and not enough(n - 1, 0.9, 2.55, 1.4)
    n = stats.seeds_needed(1.09, 1.4, equivalence=True, comparisons=4)  # Bonferroni over 4
    assert enough(n, 1 - 0.1 / 4, 1.09, 1.4, 1 - 0.05 / 8)
    assert not enough(n - 1, 1 - 0.1 / 4, 1.09, 1.4, 1 - 0.05 / 8)
    assert stats.seeds_needed(1.09, 1.4, equivalence=True) < n


def test_seeds_needed_edges():
    assert stats.seeds_needed(0.0, 0.5) == 2  # no noise: 2 seeds give an interval
    assert stats.seeds_needed(1.0, 0.0) is None  # nothing to resolve
    assert stats.seeds_needed(5.0, 0.01) is None  # beyond MAX_SEEDS
    assert stats.seeds_needed(1.0, -2.3) == stats.seeds_needed(1.0, 2.3)
