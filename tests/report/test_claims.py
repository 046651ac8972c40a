"""Claims: the difference of two rows' mean AP, its standard error and the verdict, by hand."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from atss_bench.cli.main import app
from atss_bench.errors import ConfigError
from atss_bench.report.claims import (
    PAPER_CLAIMS,
    Claim,
    evaluate_claims,
    load_claims,
    render_claims,
)

runner = CliRunner()


def claim(**fields) -> Claim:
    return Claim.model_validate({"id": "c", "claim": "a claim", **fields})


@pytest.fixture
def t3_frame(table, make_frame):
    # AP = paper + value: retinanet 37.0 + (0, .2, .4), retinanet_atss 39.3 (x3),
    # fcos 37.8 + (0, 3), fcos_center_sampling 38.6 once, fcos_atss 39.2 + (-1, 1)
    return make_frame(table(3), "mini", {
        "retinanet": [0.0, 0.2, 0.4], "retinanet_atss": [0.0, 0.0, 0.0],
        "fcos": [0.0, 3.0], "fcos_center_sampling": [0.0], "fcos_atss": [-1.0, 1.0],
    })


def test_better_claim_difference_standard_error_and_verdict(table, t3_frame):
    (result,) = evaluate_claims([claim(kind="better", row="3:retinanet_atss", than="3:retinanet")],
                                t3_frame, "mini", recipes=[table(3)])
    assert result.paper == pytest.approx(2.3)
    assert result.diff == pytest.approx(39.3 - 37.2)
    assert result.se == pytest.approx(0.2 / math.sqrt(3))  # the other side has std 0
    assert (result.n, result.verdict) == ((3, 3), "holds")


def test_verdicts_at_two_standard_errors(table, t3_frame):
    claims = [
        # fcos_atss 39.2 ± 1.414 (n 2) vs fcos 39.3 ± 2.121 (n 2): diff -0.1, SE 1.803
        claim(kind="better", row="3:fcos_atss", than="3:fcos"),
        claim(kind="same", row="3:fcos_atss", than="3:fcos"),
        # retinanet 37.2 vs retinanet_atss 39.3: -2.1 with SE 0.115 -> reversed / differs
        claim(kind="better", row="3:retinanet", than="3:retinanet_atss"),
        claim(kind="same", row="3:retinanet", than="3:retinanet_atss"),
        claim(kind="better", row="3:fcos_atss", than="3:fcos_center_sampling"),  # one seed
    ]
    results = evaluate_claims(claims, t3_frame, "mini", recipes=[table(3)])
    assert results[0].diff == pytest.approx(-0.1)
    assert results[0].se == pytest.approx(math.sqrt(2.0 / 2 + 4.5 / 2))
    assert [r.verdict for r in results] == [
        "within noise", "no difference seen", "reversed", "differs", "n < 2"]
    assert results[4].diff == pytest.approx(39.2 - 38.6) and results[4].se is None


def test_flat_claim_is_the_spread_between_best_and_worst_row(table, make_frame):
    frame = make_frame(table(4), "mini", {  # k7 39.1+.2, k9 39.3-.4 +- .., k11 39.1 + 0
        "k7": [0.1, 0.3], "k9": [-0.5, -0.3], "k11": [0.0, 0.0],
    })
    flat = claim(kind="flat", rows=["4:k7", "4:k9", "4:k11"])
    (result,) = evaluate_claims([flat], frame, "mini", recipes=[table(4)])
    assert result.diff == pytest.approx(39.3 - 38.9)  # k7 mean 39.3, k9 mean 38.9
    assert result.se == pytest.approx(math.sqrt(2 * 0.02 / 2))  # both stds 0.1414, n 2
    assert result.paper == pytest.approx(0.2) and result.verdict == "differs"
    (partial,) = evaluate_claims([claim(kind="flat", rows=["4:k7", "4:k13"])], frame, "mini",
                                 recipes=[table(4)])
    assert (partial.diff, partial.verdict) == (None, "not run")


def test_render_shows_paper_ours_seeds_and_verdict(table, t3_frame):
    results = evaluate_claims([claim(kind="better", row="3:retinanet_atss", than="3:retinanet")],
                              t3_frame, "mini", recipes=[table(3)])
    lines = render_claims(results, "mini").splitlines()
    assert lines[-1] == "| a claim | +2.3 | +2.10 ± 0.12 | 3/3 | holds |"


def test_every_shipped_claim_names_real_rows():
    claims = load_claims()
    results = evaluate_claims(claims, pd.DataFrame(), "mini")
    assert len(results) == len(claims) >= 10
    assert {r.verdict for r in results} == {"not run"}
    assert all(r.paper is not None for r in results)


@pytest.mark.parametrize("fields, message", [
    ({"kind": "better", "row": "3:fcos"}, "names `row` and `than`"),
    ({"kind": "flat", "rows": ["4:k7"]}, "2 or more `rows`"),
    ({"kind": "same", "row": "fcos", "than": "3:fcos"}, "pattern"),
])
def test_malformed_claims_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        claim(**fields)


def test_a_claim_on_an_unknown_row_names_it(table):
    with pytest.raises(ConfigError, match="claim 'c': no recipe row 3:nope"):
        evaluate_claims([claim(kind="same", row="3:nope", than="3:fcos")], pd.DataFrame(),
                        "mini", recipes=[table(3)])


def test_cli_claims_renders_and_a_bad_claims_file_is_one_line(tmp_path):
    result = runner.invoke(app, ["report", "--claims", "--profile", "mini",
                                 "--results", str(tmp_path / "empty")])
    assert result.exit_code == 0, result.output
    assert "| Table 3: ATSS beats the IoU rule (RetinaNet) | +2.3 | – | 0/0 | not run |" \
        in result.output
    bad = tmp_path / "claims.yaml"
    bad.write_text("claims:\n  - {id: x, claim: y, kind: worse, row: '3:fcos', than: '3:fcos'}\n")
    result = runner.invoke(app, ["report", "--claims", "--claims-file", str(bad),
                                 "--results", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{bad}: claims.0.kind" in result.output
    assert PAPER_CLAIMS.is_file()


def test_a_row_whose_runs_all_failed_is_named_in_the_verdict(table, make_frame):
    frame = make_frame(table(1), "mini", {
        "none": [("failed", "TrainingError: non-finite loss"), ("failed", "nan"), None],
        "gn": [0.0, 0.2, 0.4],
    })
    (result,) = evaluate_claims([claim(kind="better", row="1:gn", than="1:none")], frame, "mini",
                                recipes=[table(1)], seeds=3)
    assert (result.diff, result.se, result.n) == (None, None, (3, 0))
    assert result.verdict == "1:none: 2 of 2 runs failed" and result.paper == pytest.approx(0.9)
    frame = make_frame(table(1), "mini", {"none": [0.0, ("failed", "nan"), 0.2],
                                          "gn": [0.0, 0.2, 0.4]})
    (result,) = evaluate_claims([claim(kind="better", row="1:gn", than="1:none")], frame, "mini",
                                recipes=[table(1)], seeds=3)
    assert result.diff == pytest.approx(33.6 - 32.6) and result.n == (3, 2)
    assert result.verdict == "holds; 1:none: 1 of 3 runs failed"
