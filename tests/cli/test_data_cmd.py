"""CLI `data mini | stats | subset`."""
import hashlib
from pathlib import Path

from typer.testing import CliRunner

from atss_bench.cli.main import app

runner = CliRunner()


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_data_mini_twice_is_byte_identical(tmp_path: Path):
    for name in ("a", "b"):
        result = runner.invoke(app, ["data", "mini", "--out", str(tmp_path / name),
                                     "--num-train", "6", "--num-val", "4", "--seed", "3"])
        assert result.exit_code == 0, result.output
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert len(a) >= 12 and a == b


def test_data_stats_side_by_side(tmp_path: Path):
    runner.invoke(app, ["data", "mini", "--out", str(tmp_path / "m"), "--num-train", "4",
                        "--num-val", "4"])
    runner.invoke(app, ["data", "mini", "--out", str(tmp_path / "r"), "--num-train", "4",
                        "--num-val", "4", "--seed", "1"])
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "m"), "--reference",
                                 str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "statistic " in line)
    assert "m" in header and "r" in header
    assert "rel size median" in result.output and "aspect" in result.output


def test_data_stats_missing_folder_is_one_line(tmp_path: Path):
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "none" in result.output


def test_data_subset(tmp_path: Path):
    runner.invoke(app, ["data", "mini", "--out", str(tmp_path / "m"), "--num-train", "4",
                        "--num-val", "6"])
    result = runner.invoke(app, ["data", "subset", "--root", str(tmp_path / "m"), "--images", "3",
                                 "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "s" / "val2017").iterdir())) == 3
