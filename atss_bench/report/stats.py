"""Small-sample statistics for the paper's claims: Welch intervals and seed plans, no SciPy.

Student's t for real degrees of freedom (Welch's df is rarely an integer):

    P(T > t) = I_x(df/2, 1/2) / 2,   x = df / (df + t^2),   t >= 0

with ``I`` the regularized incomplete beta function, evaluated by its continued fraction
(DLMF 8.17.22, modified Lentz); the quantile inverts that tail by bisection to float precision.
Tests compare both with ``scipy.stats.t`` to 1e-9 relative (SciPy is a test dependency only).

Welch's interval for the difference of two means, each over ``n_i`` seeds with sample std ``s_i``:

    se = sqrt(s1^2/n1 + s2^2/n2)
    df = se^4 / ((s1^2/n1)^2/(n1-1) + (s2^2/n2)^2/(n2-1))      (Welch-Satterthwaite)
    diff +- t(1 - alpha/2, df) * se

Seeds a comparison needs (:func:`seeds_needed`): the smallest ``n`` seeds per row, both rows with
seed noise ``sigma``, for which the interval above has probability ``power`` of resolving
``effect``:

    effect >= (t(1 - alpha/2, 2n-2) + t(q, 2n-2)) * sigma * sqrt(2/n)

- a gain (the true difference is ``effect``; resolved = the interval excludes 0): ``q = power``;
- an equivalence (the true difference is 0; resolved = the interval lies within +-effect):
  ``q = 1 - (1 - power)/2``, as the estimate may miss on either side.

That is the usual normal-theory sample size with t quantiles at the pooled df ``2n - 2``; a test
checks it against the exact power of the noncentral t. ``comparisons`` > 1 splits ``alpha`` and
``1 - power`` evenly (Bonferroni) so that all of them are resolved together.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

MAX_SEEDS = 10_000  # seeds_needed gives up (returns None) beyond this
_CF_ITERATIONS = 10_000
_CF_EPS = 1e-16
_TINY = 1e-300


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (converges fast for x < (a + 1) / (a + b + 2))."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    fraction = d
    for m in range(1, _CF_ITERATIONS):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),  # even step
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):  # odd
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            fraction *= c * d
        if abs(c * d - 1.0) < _CF_EPS:
            return fraction
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """The regularized incomplete beta function I_x(a, b), a, b > 0, 0 <= x <= 1.

    ``y``: 1 - x when the caller has it more exactly than ``1 - x`` (x close to 1)."""
    y = 1.0 - x if y is None else y
    if a <= 0 or b <= 0 or not 0.0 <= x <= 1.0 or not 0.0 <= y <= 1.0:
        raise ValueError(f"betainc needs a, b > 0 and 0 <= x <= 1, got a={a}, b={b}, x={x}")
    if x == 0.0 or y == 0.0:
        return 0.0 if x == 0.0 else 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, y) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` > 0 (real) degrees of freedom."""
    if df <= 0:
        raise ValueError(f"t_sf needs df > 0, got {df}")
    t2 = t * t
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))
    return tail if t >= 0 else 1.0 - tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (0 < p < 1) of Student's t with ``df`` > 0 (real) degrees of freedom."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 1.0 - p
    low, high = 0.0, 1.0
    while t_sf(high, df) > tail:
        low, high = high, high * 2.0
    while True:  # bisection until the midpoint is one of the ends (float precision)
        mid = (low + high) / 2.0
        if mid in (low, high):
            return high
        low, high = (mid, high) if t_sf(mid, df) > tail else (low, mid)


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval for a difference of means: ``diff +- half_width``."""

    diff: float
    se: float
    df: float | None  # None when both rows have zero spread (a point interval)
    half_width: float
    confidence: float

    @property
    def low(self) -> float:
        return self.diff - self.half_width

    @property
    def high(self) -> float:
        return self.diff + self.half_width

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    @property
    def bound(self) -> float:
        """The largest |difference| the interval allows: the X of "within +-X"."""
        return max(abs(self.low), abs(self.high))


def welch_interval(mean1: float, std1: float, n1: int, mean2: float, std2: float, n2: int,
                   confidence: float = 0.95) -> Interval:
    """Welch's interval for mean1 - mean2 (sample stds over n1, n2 >= 2 seeds)."""
    if n1 < 2 or n2 < 2 or std1 < 0 or std2 < 0 or not 0.0 < confidence < 1.0:
        raise ValueError(f"welch_interval needs n >= 2, std >= 0, 0 < confidence < 1; got "
                         f"n=({n1}, {n2}), std=({std1}, {std2}), confidence={confidence}")
    v1, v2 = std1 ** 2 / n1, std2 ** 2 / n2
    se = math.sqrt(v1 + v2)
    diff = mean1 - mean2
    if se == 0.0:
        return Interval(diff, 0.0, None, 0.0, confidence)
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
    half_width = t_quantile(0.5 + confidence / 2.0, df) * se
    return Interval(diff, se, df, half_width, confidence)


def pooled_std(stds: list[float], ns: list[int]) -> float:
    """sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)) over rows with n_i >= 2 (ValueError if none)."""
    usable = [(s, n) for s, n in zip(stds, ns) if n >= 2]
    df = sum(n - 1 for _, n in usable)
    if df == 0:
        raise ValueError("pooled_std needs a row with 2 or more seeds")
    return math.sqrt(sum((n - 1) * s ** 2 for s, n in usable) / df)


def seeds_needed(sigma: float, effect: float, equivalence: bool = False, comparisons: int = 1,
                 alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Seeds per row to resolve ``effect`` at seed noise ``sigma`` (module docstring);
    None when more than ``MAX_SEEDS`` (or ``effect`` is 0)."""
    if sigma < 0 or comparisons < 1 or not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError(f"seeds_needed: bad sigma={sigma}, comparisons={comparisons}, "
                         f"alpha={alpha} or power={power}")
    effect = abs(effect)
    if effect == 0.0:
        return None
    if sigma == 0.0:
        return 2
    p_alpha = 1.0 - alpha / (2 * comparisons)
    miss = (1.0 - power) / comparisons
    p_power = 1.0 - (miss / 2 if equivalence else miss)
    # the normal quantiles are smaller than t's: a lower bound to start from
    z = NormalDist().inv_cdf(p_alpha) + NormalDist().inv_cdf(p_power)
    n = max(2, math.ceil(2.0 * (z * sigma / effect) ** 2))
    while n <= MAX_SEEDS:
        df = 2 * n - 2
        needed = (t_quantile(p_alpha, df) + t_quantile(p_power, df)) * sigma * math.sqrt(2.0 / n)
        if needed <= effect:
            return n
        n += 1
    return None
