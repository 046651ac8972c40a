"""Code provenance: the commit plus a patch that rebuilds the tree that ran, the user's index
untouched, the results folder left out, big patches refused; the warning for tracked stores."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from atss_bench.job.provenance import (
    PATCH_NAME,
    capture_code,
    collect_provenance,
    store_is_tracked,
    tracked_store_warning,
)

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                          env={**GIT_ENV, "PATH": "/usr/bin:/bin"})
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed checkout: a package, a binary file, a file to delete, an ignore rule."""
    root = tmp_path / "checkout"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "model.py").write_text("SCALE = 1\n")
    (root / "pkg" / "gone.py").write_text("OLD = True\n")
    (root / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (root / ".gitignore").write_text("/data/\n/results/runs/\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


def tree_files(root: Path) -> dict[str, bytes]:
    listed = git(root, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    return {name: (root / name).read_bytes() for name in listed.split("\0")
            if name and (root / name).is_file()}


def rebuild(repo: Path, commit: str, patch: Path, where: Path) -> Path:
    git(repo.parent, "clone", "-q", str(repo), str(where))
    git(where, "checkout", "-q", commit)
    git(where, "apply", str(patch))
    return where


def test_a_clean_tree_records_the_commit_and_no_patch(repo: Path, tmp_path: Path):
    info = capture_code(tmp_path, root=repo)
    assert info == {"git_commit": git(repo, "rev-parse", "HEAD"), "git_dirty": False,
                    "code_patch": None, "code_patch_sha256": None, "code_patch_omitted": None}
    assert not (tmp_path / PATCH_NAME).exists()


def test_the_patch_rebuilds_tracked_changes_and_untracked_files(repo: Path, tmp_path: Path):
    (repo / "pkg" / "model.py").write_text("SCALE = 2  # the change that ran\n")
    (repo / "pkg" / "new_rule.py").write_text("def assign():\n    return 0\n")  # untracked
    (repo / "pkg" / "gone.py").unlink()
    (repo / "weights.bin").write_bytes(bytes(range(255, -1, -1)) * 4)
    (repo / "data").mkdir()
    (repo / "data" / "big.bin").write_bytes(b"\0" * 4096)  # ignored: not code
    git(repo, "add", "pkg/model.py")  # something staged by the user: their index stays as is
    index_before = (repo / ".git" / "index").read_bytes()
    status_before = git(repo, "status", "--porcelain")
    dest = tmp_path / "run"
    dest.mkdir()

    info = capture_code(dest, root=repo)

    patch = dest / PATCH_NAME
    assert info["git_dirty"] is True and info["code_patch"] == PATCH_NAME
    assert info["code_patch_sha256"] == hashlib.sha256(patch.read_bytes()).hexdigest()
    assert (repo / ".git" / "index").read_bytes() == index_before
    assert git(repo, "status", "--porcelain") == status_before  # new_rule.py still untracked
    clean = rebuild(repo, info["git_commit"], patch, tmp_path / "clean")
    assert tree_files(clean) == tree_files(repo)
    assert (clean / "pkg" / "new_rule.py").read_text().startswith("def assign")
    assert not (clean / "pkg" / "gone.py").exists() and not (clean / "data").exists()


def test_the_results_folder_is_neither_dirt_nor_patch(repo: Path, tmp_path: Path):
    store = repo / "results" / "mini"
    (store / "runs" / "abc").mkdir(parents=True)
    (store / "runs" / "abc" / "meta.json").write_text("{}")  # a record of an earlier run
    info = capture_code(tmp_path, root=repo, exclude=[store])
    assert info["git_dirty"] is False and info["code_patch"] is None
    (repo / "pkg" / "model.py").write_text("SCALE = 3\n")
    info = capture_code(tmp_path, root=repo, exclude=[store])
    assert info["git_dirty"] is True
    assert "results/mini" not in (tmp_path / PATCH_NAME).read_text()
    assert "SCALE = 3" in (tmp_path / PATCH_NAME).read_text()


@pytest.mark.parametrize("what", ["untracked", "diff"])
def test_a_patch_over_the_limit_is_not_stored_and_says_why(repo: Path, tmp_path: Path, what):
    if what == "untracked":
        (repo / "dump.bin").write_bytes(b"x" * 5000)
    else:
        (repo / "pkg" / "model.py").write_text("SCALE = 1\n" * 1000)
    info = capture_code(tmp_path, root=repo, max_bytes=1000)
    assert info["git_dirty"] is True and info["code_patch"] is None
    assert info["code_patch_sha256"] is None and "over the" in info["code_patch_omitted"]
    assert not (tmp_path / PATCH_NAME).exists()


def test_outside_a_git_checkout_everything_is_none(tmp_path: Path):
    info = capture_code(tmp_path, root=tmp_path)
    assert set(info.values()) == {None}
    prov = collect_provenance(info)
    assert prov["git_commit"] is None and "versions" in prov


def test_warning_only_for_a_tracked_store_and_a_dirty_checkout(repo: Path, tmp_path: Path):
    tracked, ignored = repo / "results" / "mini", repo / "results"
    outside = tmp_path / "elsewhere"
    assert store_is_tracked(tracked) and not store_is_tracked(ignored)  # /results/runs/ ignored
    assert not store_is_tracked(outside)
    assert tracked_store_warning(tracked, root=repo) is None  # clean checkout
    (repo / "pkg" / "model.py").write_text("SCALE = 5\n")
    line = tracked_store_warning(tracked, root=repo)
    assert line is not None and "\n" not in line
    assert str(tracked) in line and "commit" in line and "uncommitted changes" in line
    assert tracked_store_warning(ignored, root=repo) is None
    assert tracked_store_warning(outside, root=repo) is None
    git(repo, "commit", "-q", "-am", "done")
    (tracked / "runs" / "x").mkdir(parents=True)
    (tracked / "runs" / "x" / "meta.json").write_text("{}")  # the store's own files: not dirt
    assert tracked_store_warning(tracked, root=repo) is None
