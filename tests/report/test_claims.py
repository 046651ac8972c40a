"""Claims: our difference, its Welch interval, the verdict and the seed plan, by hand and scipy."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats as sp
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.errors import ConfigError
from atss_bench.report.claims import (
    PAPER_CLAIMS,
    Claim,
    RowAP,
    evaluate_claim,
    evaluate_claims,
    load_claims,
    render_claims,
)
from atss_bench.report.summary import MetricStat

runner = CliRunner()
T975_4 = 2.7764451051977987  # t(0.975, 4): two rows of 3 seeds with equal stds
EFFECT = {"row": "9:e1", "than": "9:e0"}  # paper 11.0 - 10.0: a 1.0 AP effect


def claim(**fields) -> Claim:
    return Claim.model_validate({"id": "c", "claim": "a claim", **fields})


def rows(**spec: tuple) -> dict[str, RowAP]:
    """name=(paper, mean, std, n[, failed]) -> rows 9:<name>, plus the effect rows 9:e0/9:e1."""
    out = {"9:e0": RowAP(MetricStat(10.0)), "9:e1": RowAP(MetricStat(11.0))}
    for name, (paper, mean, std, n, *failed) in spec.items():
        out[f"9:{name}"] = RowAP(MetricStat(paper, mean, std, n), *failed)
    return out


@pytest.fixture
def t3_frame(table, make_frame):
    # AP = paper + value: retinanet 37.0 + (0, .2, .4), retinanet_atss 39.3 (x3),
    # fcos 37.8 + (0, 3), fcos_center_sampling 38.6 once, fcos_atss 39.2 + (-1, 1)
    return make_frame(table(3), "mini", {
        "retinanet": [0.0, 0.2, 0.4], "retinanet_atss": [0.0, 0.0, 0.0],
        "fcos": [0.0, 3.0], "fcos_center_sampling": [0.0], "fcos_atss": [-1.0, 1.0],
    })


def test_better_claim_interval_is_welchs_on_the_seed_values(table, t3_frame):
    (result,) = evaluate_claims([claim(kind="better", row="3:retinanet_atss", than="3:retinanet")],
                                t3_frame, "mini", recipes=[table(3)])
    half = sp.t.ppf(0.975, 2) * 0.2 / math.sqrt(3)  # retinanet_atss's seeds do not vary
    low, high = 2.1 - half, 2.1 + half
    assert result.diff == pytest.approx(39.3 - 37.2)
    assert (result.interval.low, result.interval.high) == (pytest.approx(low), pytest.approx(high))
    assert result.interval.df == pytest.approx(2.0)  # only retinanet's seeds vary
    assert (result.paper, result.effect) == (pytest.approx(2.3), pytest.approx(2.3))
    assert result.ratio == pytest.approx(2.1 / 2.3)
    assert (result.n, result.verdict) == ((3, 3), "holds (interval above 0)")
    assert result.pair == ("3:retinanet_atss", "3:retinanet")


@pytest.mark.parametrize("a, b, verdict", [
    ((40.0, 40.6, 0.2, 3), (39.0, 40.0, 0.2, 3), "holds (interval above 0)"),
    ((40.0, 40.0, 0.2, 3), (39.0, 40.6, 0.2, 3), "reversed (interval below 0)"),
    ((40.0, 40.3, 1.0, 3), (39.0, 40.0, 1.0, 3), "inconclusive (interval contains 0)"),
])
def test_better_verdicts_need_the_interval_to_exclude_zero(a, b, verdict):
    result = evaluate_claim(claim(kind="better", row="9:a", than="9:b"), rows(a=a, b=b))
    assert result.verdict == verdict and result.effect == pytest.approx(1.0)


@pytest.mark.parametrize("mean_a, std, verdict", [
    # diff 0, half-width t(.975, 4) * .2 * sqrt(2/3) = 0.453 <= 1.0
    (40.0, 0.2, "no difference: within ±0.45 AP"),
    # diff 0, half-width 2.267 > 1.0: cannot rule out the paper's effect
    (40.0, 1.0, "inconclusive (interval reaches ±2.27 AP, more than the 1.0 AP effect)"),
    # [0.147, 1.053]: excludes 0, reaches past the effect
    (40.6, 0.2, "differs (interval excludes 0)"),
    # [0.273, 0.727]: excludes 0 but inside the effect
    (40.5, 0.1, "differs, by less than the effect (interval excludes 0): within ±0.73 AP"),
])
def test_same_verdicts_compare_the_far_end_of_the_interval_with_the_effect(mean_a, std, verdict):
    result = evaluate_claim(claim(kind="same", row="9:a", than="9:b", effect=EFFECT),
                            rows(a=(39.0, mean_a, std, 3), b=(39.1, 40.0, std, 3)))
    half = T975_4 * std * math.sqrt(2 / 3)
    assert result.interval.half_width == pytest.approx(half)
    assert result.interval.bound == pytest.approx(abs(mean_a - 40.0) + half)
    assert result.verdict == verdict
    assert (result.paper, result.effect) == (pytest.approx(-0.1), pytest.approx(1.0))
    assert result.ratio == pytest.approx((mean_a - 40.0) / 1.0)


def _bonferroni(diff: float, std: float, n: int, m: int) -> tuple[float, float]:
    half = sp.t.ppf(1 - 0.05 / (2 * m), 2 * n - 2) * std * math.sqrt(2 / n)
    return diff - half, diff + half


def test_flat_claim_compares_every_row_with_the_reference_bonferroni():
    flat = claim(kind="flat", rows=["9:r1", "9:r2", "9:r3", "9:r4"], reference="9:r2",
                 effect=EFFECT)
    spec = {"r1": (39.1, 40.1, 0.1, 3), "r2": (39.3, 40.0, 0.1, 3), "r3": (38.9, 39.6, 0.1, 3),
            "r4": (39.0, 40.2, 0.1, 3)}
    result = evaluate_claim(flat, rows(**spec))
    assert result.paper == pytest.approx(-0.4)  # r3 - r2, the paper's farthest row
    assert result.pair == ("9:r3", "9:r2")  # -0.4 +- 0.32 (m = 3): excludes 0
    low, high = _bonferroni(-0.4, 0.1, 3, 3)
    assert (result.interval.low, result.interval.high) == (pytest.approx(low), pytest.approx(high))
    assert result.interval.confidence == pytest.approx(1 - 0.05 / 3)
    assert result.verdict == f"differs, by less than the effect (9:r3 vs 9:r2: interval excludes " \
                             f"0): every row within ±{-low:.2f} AP of 9:r2"
    assert result.n == (3, 3, 3, 3)
    calm = {**spec, "r3": (38.9, 40.05, 0.1, 3), "r4": (39.0, 39.98, 0.1, 3)}
    result = evaluate_claim(flat, rows(**calm))
    assert result.pair == ("9:r1", "9:r2")  # +0.1, the farthest end
    assert result.verdict == f"no difference: every row within " \
                             f"±{_bonferroni(0.1, 0.1, 3, 3)[1]:.2f} AP of 9:r2"
    noisy = {**calm, "r4": (39.0, 39.98, 1.5, 3)}
    result = evaluate_claim(flat, rows(**noisy))
    assert result.verdict.startswith("inconclusive (9:r4 vs 9:r2: interval reaches ±")


def test_missing_rows_one_seed_and_failed_runs_are_named():
    flat = claim(kind="flat", rows=["9:a", "9:b", "9:c"], reference="9:b", effect=EFFECT)
    result = evaluate_claim(flat, rows(a=(39.0, None, None, 0), b=(39.3, 40.0, 0.2, 3),
                                       c=(39.1, None, None, 0)))
    assert result.verdict == "not run (missing: 9:a, 9:c)"
    assert (result.diff, result.interval, result.n) == (None, None, (0, 3, 0))
    single = evaluate_claim(claim(kind="better", row="9:a", than="9:b"),
                            rows(a=(40.0, 41.0, None, 1), b=(39.0, 40.0, 0.3, 3)))
    assert single.verdict == "no interval (1 seed: 9:a)" and single.interval is None
    assert single.diff == pytest.approx(1.0) and single.ratio == pytest.approx(1.0)
    failed = evaluate_claim(claim(kind="better", row="9:a", than="9:b"),
                            rows(a=(40.0, 41.0, 0.2, 3), b=(39.0, None, None, 0, 3)))
    assert failed.verdict == "9:b: 3 of 3 runs failed" and failed.diff is None


def test_a_row_whose_runs_failed_is_named_in_the_verdict(table, make_frame):
    frame = make_frame(table(1), "mini", {
        "none": [("failed", "TrainingError: non-finite loss"), ("failed", "nan"), None],
        "gn": [0.0, 0.2, 0.4],
    })
    (result,) = evaluate_claims([claim(kind="better", row="1:gn", than="1:none")], frame, "mini",
                                recipes=[table(1)], seeds=3)
    assert (result.diff, result.interval, result.n) == (None, None, (3, 0))
    assert result.verdict == "1:none: 2 of 2 runs failed" and result.paper == pytest.approx(0.9)
    frame = make_frame(table(1), "mini", {"none": [0.0, ("failed", "nan"), 0.2],
                                          "gn": [0.0, 0.2, 0.4]})
    (result,) = evaluate_claims([claim(kind="better", row="1:gn", than="1:none")], frame, "mini",
                                recipes=[table(1)], seeds=3)
    assert result.diff == pytest.approx(33.6 - 32.6) and result.n == (3, 2)
    assert result.interval.df == pytest.approx((0.02 / 2 + 0.04 / 3) ** 2
                                               / ((0.02 / 2) ** 2 + (0.04 / 3) ** 2 / 2))
    assert result.verdict == "holds (interval above 0); 1:none: 1 of 3 runs failed"


def test_plan_is_the_seeds_per_row_that_resolve_the_effect():
    # gain 1.0 at sigma .2: n = 2 gives (t(.975,2) + t(.8,2)) * .2 = 1.07 > 1; n = 3 gives 0.61
    result = evaluate_claim(claim(kind="better", row="9:a", than="9:b"),
                            rows(a=(40.0, 40.3, 0.2, 3), b=(39.0, 40.0, 0.2, 5)))
    assert (result.noise, result.seeds_needed) == (pytest.approx(0.2), 3)
    # equivalence; pooled variance of stds 1 and sqrt(2), 3 seeds each: (2 * 1 + 2 * 2) / 4
    same = evaluate_claim(claim(kind="same", row="9:a", than="9:b", effect=EFFECT),
                          rows(a=(40.0, 40.0, 1.0, 3), b=(39.0, 40.0, math.sqrt(2), 3)))
    assert same.noise == pytest.approx(math.sqrt(1.5))
    n = same.seeds_needed
    q = sp.t.ppf(0.975, 2 * n - 2) + sp.t.ppf(0.9, 2 * n - 2)
    q_less = sp.t.ppf(0.975, 2 * n - 4) + sp.t.ppf(0.9, 2 * n - 4)
    assert q * math.sqrt(1.5 * 2 / n) <= 1.0 < q_less * math.sqrt(1.5 * 2 / (n - 1))
    nothing = evaluate_claim(claim(kind="better", row="9:a", than="9:b"),
                             rows(a=(40.0, 41.0, None, 1), b=(39.0, None, None, 0)))
    assert (nothing.noise, nothing.seeds_needed) == (None, None)


def test_render_columns_effects_note_and_plan():
    results = [
        evaluate_claim(claim(kind="better", row="9:a", than="9:b"),
                       rows(a=(40.0, 40.6, 0.2, 3), b=(39.0, 40.0, 0.2, 3))),
        evaluate_claim(claim(kind="same", claim="no diff", row="9:a", than="9:b", effect=EFFECT),
                       rows(a=(39.0, 40.0, 0.2, 3), b=(39.1, 40.0, 0.2, 3))),
    ]
    half = T975_4 * 0.2 * math.sqrt(2 / 3)
    text = render_claims(results, "mini")
    lines = text.splitlines()
    assert lines[0] == "## The paper's claims on the mini profile"
    assert "| claim | paper Δ | effect | ours Δ | 95% CI | df | seeds | ours / effect | verdict |" \
        in lines
    assert f"| a claim | +1.0 | 1.0 | +0.60 | [{0.6 - half:+.2f}, {0.6 + half:+.2f}] | 4.0 | 3/3 " \
           f"| +0.60× | holds (interval above 0) |" in lines
    assert f"| no diff | -0.1 | 1.0 | +0.00 | [{-half:+.2f}, {half:+.2f}] | 4.0 | 3/3 | +0.00× " \
           f"| no difference: within ±{half:.2f} AP |" in lines
    assert "- no diff: effect 1.0 AP, the paper's 9:e1 − 9:e0" in lines
    assert "seeds/row needed" not in text and "Seeds per row needed" not in text
    planned = render_claims(results, "mini", plan=True).splitlines()
    assert any(line.startswith("| a claim |") and line.endswith("| 3 (σ 0.20) | holds (interval "
                                                                "above 0) |") for line in planned)
    assert any(line.startswith("Seeds per row needed: the smallest n") for line in planned)


def test_every_shipped_claim_names_real_rows_and_tables_5_and_6_are_claimed():
    claims = load_claims()
    results = evaluate_claims(claims, pd.DataFrame(), "mini")
    assert len(results) == len(claims) >= 19
    assert all(r.verdict.startswith("not run (missing: ") for r in results)
    beyond = {r.claim.id for r in results if all(ref.startswith("9:") for ref in r.claim.refs())}
    assert beyond == {"task_aligned_vs_atss", "simota_vs_atss"}  # Table 9: no paper numbers
    assert all(r.paper is not None and r.effect for r in results if r.claim.id not in beyond)
    assert all(r.paper is None and r.effect is None for r in results if r.claim.id in beyond)
    by_id = {r.claim.id: r for r in results}
    scale, ratio = by_id["anchor_scale_insensitive"], by_id["aspect_ratio_insensitive"]
    assert scale.claim.rows == [f"5:scale{s}" for s in range(5, 10)]
    assert scale.claim.reference == "5:scale8" and scale.paper == pytest.approx(-0.4)
    assert ratio.claim.reference == "6:ratio1to1" and ratio.paper == pytest.approx(-0.3)
    assert len(ratio.claim.rows) == 5
    effects = {r.claim.id: round(r.effect, 6) for r in results if r.claim.kind != "better"}
    assert effects == {"start_iou": 0.8, "start_scale": 0.8, "k_insensitive": 1.3,
                       "anchor_scale_insensitive": 1.4, "aspect_ratio_insensitive": 1.4,
                       "anchors_3x3": 1.4, "anchors_3x1": 1.4, "anchors_1x3": 1.4}


@pytest.mark.parametrize("fields, message", [
    ({"kind": "better", "row": "3:fcos"}, "names `row` and `than`"),
    ({"kind": "flat", "rows": ["4:k7"], "reference": "4:k7", "effect": EFFECT},
     "2 or more `rows`"),
    ({"kind": "same", "row": "fcos", "than": "3:fcos", "effect": EFFECT}, "pattern"),
    ({"kind": "same", "row": "3:a", "than": "3:b"}, "names the paper's `effect`"),
    ({"kind": "better", "row": "3:a", "than": "3:b", "effect": EFFECT}, "its own difference"),
    ({"kind": "flat", "rows": ["4:k7", "4:k9"], "effect": EFFECT}, "include its `reference`"),
    ({"kind": "flat", "rows": ["4:k7", "4:k9"], "reference": "4:k3", "effect": EFFECT},
     "include its `reference`"),
    ({"kind": "flat", "rows": ["4:k7", "4:k7", "4:k9"], "reference": "4:k9", "effect": EFFECT},
     "distinct"),
    ({"kind": "same", "row": "3:a", "than": "3:b", "reference": "3:a", "effect": EFFECT},
     "not `rows`/`reference`"),
    ({"kind": "same", "row": "3:a", "than": "3:b", "effect": {"row": "3:a"}}, "than"),
])
def test_malformed_claims_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        claim(**fields)


def test_unknown_rows_and_an_effect_of_zero_are_config_errors(table):
    with pytest.raises(ConfigError, match="claim 'c': no recipe row 3:nope"):
        evaluate_claims([claim(kind="same", row="3:nope", than="3:fcos",
                               effect={"row": "3:fcos", "than": "3:retinanet"})],
                        pd.DataFrame(), "mini", recipes=[table(3)])
    with pytest.raises(ConfigError, match="claim 'c': no recipe row 3:gone"):
        evaluate_claims([claim(kind="same", row="3:fcos", than="3:retinanet",
                               effect={"row": "3:gone", "than": "3:retinanet"})],
                        pd.DataFrame(), "mini", recipes=[table(3)])
    with pytest.raises(ConfigError, match="same paper AP"):
        evaluate_claim(claim(kind="same", row="9:a", than="9:b", effect={"row": "9:a",
                                                                          "than": "9:b"}),
                       rows(a=(39.0, None, None, 0), b=(39.0, None, None, 0)))


def test_a_claim_on_another_metric_compares_that_metric(table, make_frame):
    # every metric = paper + value: APl paper 51.5 (ATSS) and 49.8 (center sampling)
    frame = make_frame(table(3), "mini", {"fcos_atss": [-1.0, 1.0, 0.0],
                                          "fcos_center_sampling": [0.0, 0.5, 1.0]})
    better = claim(kind="better", row="3:fcos_atss", than="3:fcos_center_sampling", metric="APl")
    same = claim(kind="same", row="3:fcos_atss", than="3:fcos_center_sampling", metric="APs",
                 effect={"row": "3:fcos_atss", "than": "3:retinanet"})
    large, small = evaluate_claims([better, same], frame, "mini", recipes=[table(3)])
    a, b = [51.5 - 1.0, 51.5 + 1.0, 51.5], [49.8, 50.3, 50.8]
    welch = sp.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert large.diff == pytest.approx(51.5 - 50.3)
    assert (large.paper, large.effect) == (pytest.approx(1.7), pytest.approx(1.7))
    assert (large.interval.low, large.interval.high) == (pytest.approx(welch.low),
                                                          pytest.approx(welch.high))
    assert small.paper == pytest.approx(22.7 - 22.3)
    assert small.effect == pytest.approx(22.7 - 21.4)  # the effect rows' APs, not their AP
    assert " APs" in small.verdict and " AP " not in small.verdict + " "


def test_a_metric_the_rows_table_does_not_report_is_a_config_error(table):
    with pytest.raises(ConfigError, match="claim 'c': 1:gn, 1:none report no APl"):
        evaluate_claims([claim(kind="better", row="1:gn", than="1:none", metric="APl")],
                        pd.DataFrame(), "mini", recipes=[table(1)])
    with pytest.raises(ValueError, match="metric"):
        claim(kind="better", row="1:gn", than="1:none", metric="mAP")


def test_cli_claims_plan_and_one_line_errors(tmp_path):
    empty = str(tmp_path / "empty")
    result = runner.invoke(app, ["report", "--claims", "--profile", "mini", "--results", empty])
    assert result.exit_code == 0, result.output
    assert "| Table 3: ATSS beats the IoU rule (RetinaNet) | +2.3 | 2.3 | – | – | – | 0/0 | – | " \
           "not run (missing: 3:retinanet_atss, 3:retinanet) |" in result.output
    assert "Table 5: with ATSS, AP barely moves across anchor scales" in result.output
    assert "seeds/row needed" not in result.output
    result = runner.invoke(app, ["report", "--claims", "--plan", "--profile", "mini",
                                 "--results", empty])
    assert result.exit_code == 0 and "| seeds/row needed | verdict |" in result.output
    result = runner.invoke(app, ["report", "--table", "3", "--plan", "--results", empty])
    assert result.exit_code == 2 and "--plan goes with --claims" in result.output
    assert "Traceback" not in result.output
    bad = tmp_path / "claims.yaml"
    bad.write_text("claims:\n  - {id: x, claim: y, kind: same, row: '3:fcos', than: '3:fcos', "
                   "effect: {row: '3:fcos', than: '3:x'}, extra: 1}\n")
    result = runner.invoke(app, ["report", "--claims", "--claims-file", str(bad),
                                 "--results", empty])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{bad}: claims.0.extra" in result.output
    assert PAPER_CLAIMS.is_file()
