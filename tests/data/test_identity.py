"""Dataset identity: content fingerprints (not paths), the hash cache, hostile folders/records."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from atss_bench.config import DataConfig
from atss_bench.data import identity as ident
from atss_bench.data import mini
from atss_bench.data.cache import FORMAT, MAX_BYTES
from atss_bench.data.identity import DatasetIdentity, resolve_dataset_identity
from atss_bench.errors import DataError
from tests.data.tiny_coco import write_tiny_coco

COCO = DataConfig(kind="coco")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("ATSS_BENCH_CACHE", str(cache))
    monkeypatch.delenv("ATSS_BENCH_DATA", raising=False)
    return cache


@pytest.fixture()
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The annotation files actually read (cache misses)."""
    calls: list[str] = []
    real = ident.sha256_of_file

    def counting(path: Path) -> str:
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(ident, "sha256_of_file", counting)
    return calls


def test_mini_identity_is_the_generator_spec_and_reads_no_file(_cache: Path) -> None:
    data = DataConfig(kind="mini")
    first = resolve_dataset_identity(data, None)
    assert first.kind == "mini" and first.name == "mini-coco seed 0"
    assert len(first.fingerprint) == 16 and int(first.fingerprint, 16) >= 0
    assert first.splits == {"train2017": {"images": 600, "annotations_sha256": None},
                            "val2017": {"images": 150, "annotations_sha256": None}}
    assert first.root == str(_cache / f"mini-coco-{mini.MiniCocoSpec().digest()}")
    assert not _cache.exists()  # nothing generated, nothing cached
    assert resolve_dataset_identity(data, "/elsewhere") == first  # data_root is ignored for mini
    for change in ({"seed": 1}, {"num_train": 599}, {"category_hue": False}):
        other = DataConfig(kind="mini", mini=change)
        assert resolve_dataset_identity(other, None).fingerprint != first.fingerprint, change


def test_mini_fingerprint_follows_the_generator_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = resolve_dataset_identity(DataConfig(kind="mini"), None).fingerprint
    monkeypatch.setattr(mini, "GENERATOR_VERSION", mini.GENERATOR_VERSION + 1)
    assert resolve_dataset_identity(DataConfig(kind="mini"), None).fingerprint != before


def test_coco_fingerprint_is_content_not_path(tmp_path: Path) -> None:
    root = write_tiny_coco(tmp_path / "first")
    first = resolve_dataset_identity(COCO, str(root))
    assert first.kind == "coco" and first.name == "first" and first.root == str(root)
    assert first.splits["train2017"]["images"] == 2 and first.splits["val2017"]["images"] == 2
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.move(str(root), moved)
    again = resolve_dataset_identity(COCO, str(moved))
    assert again.fingerprint == first.fingerprint and again.splits == first.splits
    assert (again.name, again.root) == ("renamed", str(moved))


def test_one_changed_box_or_one_image_more_or_less_is_another_dataset(tmp_path: Path) -> None:
    base = resolve_dataset_identity(COCO, str(write_tiny_coco(tmp_path / "a"))).fingerprint
    changed = resolve_dataset_identity(COCO, str(write_tiny_coco(tmp_path / "b", variant=1)))
    assert changed.fingerprint != base
    root = write_tiny_coco(tmp_path / "c")
    assert resolve_dataset_identity(COCO, str(root)).fingerprint == base
    shutil.copy(root / "val2017" / "c.jpg", root / "val2017" / "extra.jpg")
    added = resolve_dataset_identity(COCO, str(root))
    assert added.fingerprint != base and added.splits["val2017"]["images"] == 3
    (root / "val2017" / "extra.jpg").unlink()
    (root / "train2017" / "b.png").unlink()
    assert resolve_dataset_identity(COCO, str(root)).fingerprint not in (base, added.fingerprint)


def test_root_resolution_matches_the_engine(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DataError, match="no COCO dataset root given"):
        resolve_dataset_identity(COCO, None)
    env, config_root, flag = (write_tiny_coco(tmp_path / n, variant=i)
                              for i, n in enumerate(("env", "config", "flag")))
    monkeypatch.setenv("ATSS_BENCH_DATA", str(env))
    assert resolve_dataset_identity(COCO, None).name == "env"
    with_root = DataConfig(kind="coco", root=str(config_root))
    assert resolve_dataset_identity(with_root, None).name == "config"
    assert resolve_dataset_identity(with_root, str(flag)).name == "flag"


def test_hashes_are_cached_by_path_size_and_mtime(tmp_path: Path, hashed: list[str]) -> None:
    root = write_tiny_coco(tmp_path / "d")
    first = resolve_dataset_identity(COCO, str(root))
    assert sorted(hashed) == ["instances_train2017.json", "instances_val2017.json"]
    assert resolve_dataset_identity(COCO, str(root)) == first
    assert len(hashed) == 2  # second time: stat calls only
    val = root / "annotations" / "instances_val2017.json"
    os.utime(val, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same bytes
    assert resolve_dataset_identity(COCO, str(root)).fingerprint == first.fingerprint
    assert hashed[2:] == ["instances_val2017.json"]


@pytest.mark.parametrize("garbage", [
    b"\x00\xff not json", b"[1, 2]", b'{"format": 1, "entries": []}', b"[" * 100_000,
    json.dumps({"format": FORMAT, "entries": {"x": 1}}).encode()[:-3],
])
def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path: Path, _cache: Path,
                                                  hashed: list[str], garbage: bytes) -> None:
    root = write_tiny_coco(tmp_path / "e")
    expected = resolve_dataset_identity(COCO, str(root))
    cache_file = _cache / ident.HASH_CACHE
    cache_file.write_bytes(garbage)
    assert resolve_dataset_identity(COCO, str(root)) == expected
    assert len(hashed) == 4  # recomputed, not trusted
    assert json.loads(cache_file.read_text())["format"] == FORMAT  # rewritten whole


def test_cache_values_of_the_wrong_type_are_recomputed(tmp_path: Path, _cache: Path,
                                                       hashed: list[str]) -> None:
    root = write_tiny_coco(tmp_path / "f")
    expected = resolve_dataset_identity(COCO, str(root))
    cache_file = _cache / ident.HASH_CACHE
    entries = json.loads(cache_file.read_text())["entries"]
    poisoned = {k: ("ZZ" if k.startswith("sha256") else -5) for k in entries}
    cache_file.write_text(json.dumps({"format": FORMAT, "entries": poisoned}))
    assert resolve_dataset_identity(COCO, str(root)) == expected and len(hashed) == 4


@pytest.mark.parametrize("blocker", ["folder", "fifo", "huge"])
def test_an_unusable_cache_file_never_blocks_or_fails(tmp_path: Path, _cache: Path,
                                                      blocker: str) -> None:
    root = write_tiny_coco(tmp_path / "g")
    _cache.mkdir()
    cache_file = _cache / ident.HASH_CACHE
    if blocker == "folder":
        cache_file.mkdir()
    elif blocker == "fifo":
        os.mkfifo(cache_file)
    else:
        cache_file.write_bytes(b" " * (MAX_BYTES + 1))
    start = time.monotonic()
    assert resolve_dataset_identity(COCO, str(root)).kind == "coco"
    assert time.monotonic() - start < 2


def test_cache_file_honours_the_umask(tmp_path: Path, _cache: Path) -> None:
    old = os.umask(0o022)
    try:
        resolve_dataset_identity(COCO, str(write_tiny_coco(tmp_path / "h")))
    finally:
        os.umask(old)
    assert (_cache / ident.HASH_CACHE).stat().st_mode & 0o777 == 0o644


def test_missing_or_hostile_files_name_the_split_and_file(tmp_path: Path) -> None:
    root = write_tiny_coco(tmp_path / "i")
    val = root / "annotations" / "instances_val2017.json"
    val.unlink()
    with pytest.raises(DataError, match=r"split val2017: annotation file .*instances_val2017\.json"
                                        r" not found"):
        resolve_dataset_identity(COCO, str(root))
    os.mkfifo(val)  # would block a plain open()
    with pytest.raises(DataError, match="split val2017: annotation file .* is not a regular file"):
        resolve_dataset_identity(COCO, str(root))
    val.unlink()
    write_tiny_coco(root)
    shutil.rmtree(root / "train2017")
    with pytest.raises(DataError, match=r"split train2017: image folder .*train2017 not found"):
        resolve_dataset_identity(COCO, str(root))


def test_real_coco_tiny_has_a_stable_fingerprint(coco_tiny_root: Path, tmp_path: Path) -> None:
    first = resolve_dataset_identity(COCO, str(coco_tiny_root))
    assert first.name == "coco-tiny" and first.splits["val2017"]["images"] == len(
        [p for p in (coco_tiny_root / "val2017").iterdir() if p.is_file()])
    copy = tmp_path / "copy"
    (copy / "annotations").mkdir(parents=True)
    for name in ("instances_train2017.json", "instances_val2017.json"):
        shutil.copy(coco_tiny_root / "annotations" / name, copy / "annotations" / name)
    for split in ("train2017", "val2017"):
        (copy / split).mkdir()
        for image in (coco_tiny_root / split).iterdir():
            (copy / split / image.name).symlink_to(image)
    assert resolve_dataset_identity(COCO, str(copy)).fingerprint == first.fingerprint


# --- records: from_json never raises, never trusts ------------------------------------------------

GOOD = {"kind": "coco", "fingerprint": "0123456789abcdef", "name": "coco", "root": "/d",
        "splits": {"val2017": {"images": 5, "annotations_sha256": "a" * 64}}}


def test_to_json_round_trips() -> None:
    identity = DatasetIdentity.from_json(GOOD)
    assert identity is not None and identity.to_json() == GOOD
    assert DatasetIdentity.from_json(json.loads(json.dumps(identity.to_json()))) == identity


@pytest.mark.parametrize("bad", [
    None, [], "0123456789abcdef", {**GOOD, "kind": "imagenet"}, {**GOOD, "fingerprint": "0123"},
    {**GOOD, "fingerprint": "0123456789ABCDEF"}, {**GOOD, "fingerprint": 123},
    {**GOOD, "name": ["x"]}, {**GOOD, "root": 5}, {**GOOD, "splits": []},
    {**GOOD, "splits": {"val": {"images": True, "annotations_sha256": None}}},
    {**GOOD, "splits": {"val": {"images": -1, "annotations_sha256": None}}},
    {**GOOD, "splits": {"val": {"images": 1, "annotations_sha256": "xyz"}}},
    {**GOOD, "splits": {str(i): {"images": 1} for i in range(100)}},
    {k: v for k, v in GOOD.items() if k != "fingerprint"},
])
def test_malformed_records_read_as_none(bad) -> None:
    assert DatasetIdentity.from_json(bad) is None


def test_record_text_is_made_one_line_and_bounded() -> None:
    identity = DatasetIdentity.from_json({**GOOD, "name": "evil\nname\x1b[31m" + "x" * 500,
                                          "root": "/a\nb"})
    assert identity is not None
    line = identity.describe()
    assert "\n" not in line and "\x1b" not in line and len(identity.name) <= 120
    assert line.startswith("'evil?name?[31mxxx") and "fingerprint 0123456789abcdef" in line
