"""Where a result came from: the code (commit + patch), package versions, machine.

The code is the git checkout that holds ``atss_bench/``, captured when training starts:

    git_commit          HEAD of the checkout (None outside a git checkout)
    git_dirty           the tree differs from HEAD: tracked changes or untracked, non-ignored files
    code_patch          "code.patch" beside the record when dirty, else None
    code_patch_sha256   its SHA-256
    code_patch_omitted  why a dirty tree has no patch (over MAX_PATCH_BYTES, git failed), else None

``git apply code.patch`` on a clean checkout of ``git_commit`` gives the tree that ran. The patch
is staged through a temporary copy of the user's index (``GIT_INDEX_FILE``), so the user's own
staging area is never touched. The results folder being written is left out of both the dirty
check and the patch: run records are data, not code, and a store committed inside the checkout
(``results/mini``) would otherwise make every run after the first one dirty.

Versions come from the installed distributions' metadata (no torch import): milliseconds.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from atss_bench.job import rundir as rd

PACKAGES = ("torch", "torchvision", "atss-bench", "pycocotools", "numpy", "pandas")
PATCH_NAME = "code.patch"
MAX_PATCH_BYTES = 20 * 1024 * 1024
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding atss_bench/
_GIT_TIMEOUT_S = 30
_GIT_ADD_TIMEOUT_S = 300  # hashes every changed and untracked file once
_STORE_PARTS = ("runs", "submitit")  # what a results folder at the checkout's top holds


@dataclass(frozen=True)
class Checkout:
    """A git work tree and the pathspec that leaves the results folder out."""

    top: Path
    pathspec: tuple[str, ...]


def _git(args: list[str], cwd: Path, env: Mapping[str, str] | None = None,
         timeout: float = _GIT_TIMEOUT_S) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, env=None if env is None else dict(env))
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _excluded(top: Path, paths: Iterable[str | Path]) -> tuple[str, ...]:
    """``:(exclude)`` pathspecs for the given folders that lie inside ``top``."""
    specs = []
    for path in paths:
        try:
            rel = Path(path).resolve().relative_to(top)
        except ValueError:
            continue  # outside this work tree: nothing to leave out
        parts = [rel / part for part in _STORE_PARTS] if rel == Path(".") else [rel]
        specs += [f":(top,exclude,literal){p.as_posix()}" for p in parts]
    return tuple(specs)


def find_checkout(root: Path | None = None, exclude: Iterable[str | Path] = ()
                  ) -> Checkout | None:
    """The git work tree holding ``root`` (default: the checkout holding atss_bench/; it must
    have its own ``.git``), else None."""
    root = _PACKAGE_ROOT if root is None else root
    if not (root / ".git").exists():  # e.g. installed into site-packages inside another repo
        return None
    top = _git(["rev-parse", "--show-toplevel"], root)
    if not top:
        return None
    top_path = Path(top).resolve()
    return Checkout(top_path, (".", *_excluded(top_path, exclude)))


def is_dirty(checkout: Checkout) -> bool | None:
    """Tracked changes or untracked, non-ignored files outside the excluded folders."""
    changes = _git(["status", "--porcelain", "--untracked-files=normal", "--",
                    *checkout.pathspec], checkout.top)
    return None if changes is None else bool(changes)


def _commit_and_dirty(checkout: Checkout | None) -> dict[str, Any]:
    if checkout is None:
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": _git(["rev-parse", "HEAD"], checkout.top),
            "git_dirty": is_dirty(checkout)}


def git_info(root: Path | None = None, exclude: Iterable[str | Path] = ()) -> dict[str, Any]:
    """Commit and dirty flag of the atss_bench checkout; None for both outside a git checkout."""
    return _commit_and_dirty(find_checkout(root, exclude))


def _untracked_bytes(checkout: Checkout) -> int | None:
    listing = _git(["ls-files", "--others", "--exclude-standard", "-z", "--",
                    *checkout.pathspec], checkout.top)
    if listing is None:
        return None
    total = 0
    for name in filter(None, listing.split("\0")):
        try:
            total += (checkout.top / name).lstat().st_size
        except OSError:
            continue
    return total


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def make_patch(checkout: Checkout, max_bytes: int = MAX_PATCH_BYTES) -> tuple[bytes | None, str]:
    """The binary diff from HEAD to the working tree (untracked files included) and, when there
    is none, why. The user's index is copied, never written."""
    untracked = _untracked_bytes(checkout)
    if untracked is None:
        return None, "git ls-files failed"
    if untracked > max_bytes:
        return None, f"untracked files hold {_mb(untracked)}, over the {_mb(max_bytes)} limit"
    with tempfile.TemporaryDirectory(prefix="atss-bench-index-") as tmp:
        index = Path(tmp) / "index"
        user_index = _git(["rev-parse", "--git-path", "index"], checkout.top)
        if user_index and (checkout.top / user_index).is_file():
            shutil.copyfile(checkout.top / user_index, index)  # its stat cache: add -A is fast
        env = {**os.environ, "GIT_INDEX_FILE": str(index)}
        if _git(["add", "-A", "--", *checkout.pathspec], checkout.top, env,
                _GIT_ADD_TIMEOUT_S) is None:
            return None, "git add (into a temporary index) failed"
        out = Path(tmp) / "patch"
        args = ["git", "diff", "--cached", "--binary", "--full-index", "--no-color",
                "--no-ext-diff", "--no-textconv", "--no-renames", "--src-prefix=a/",
                "--dst-prefix=b/", "HEAD", "--", *checkout.pathspec]
        try:
            with open(out, "wb") as handle:
                done = subprocess.run(args, cwd=checkout.top, env=env, stdout=handle,
                                      stderr=subprocess.DEVNULL, timeout=_GIT_ADD_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError):
            return None, "git diff failed"
        if done.returncode != 0:
            return None, "git diff failed"
        size = out.stat().st_size
        if size > max_bytes:
            return None, f"the diff is {_mb(size)}, over the {_mb(max_bytes)} limit"
        return out.read_bytes(), ""


def capture_code(dest_dir: Path, *, exclude: Iterable[str | Path] = (),
                 root: Path | None = None, max_bytes: int = MAX_PATCH_BYTES) -> dict[str, Any]:
    """The code provenance fields (module doc); a dirty tree's patch is written to
    ``dest_dir/code.patch``. Git problems are recorded, never raised."""
    checkout = find_checkout(root, exclude)
    info: dict[str, Any] = {**_commit_and_dirty(checkout), "code_patch": None,
                            "code_patch_sha256": None, "code_patch_omitted": None}
    if checkout is None or not info["git_dirty"] or info["git_commit"] is None:
        return info
    patch, why = make_patch(checkout, max_bytes)
    if patch is None:
        info["code_patch_omitted"] = why
        return info
    rd.atomic_write_bytes(Path(dest_dir) / PATCH_NAME, patch)
    info["code_patch"] = PATCH_NAME
    info["code_patch_sha256"] = hashlib.sha256(patch).hexdigest()
    return info


def _nearest_existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path if path.is_dir() else path.parent


def store_is_tracked(results_dir: str | Path) -> bool:
    """``results_dir`` lies in a git work tree and its run records are not ignored there."""
    where = _nearest_existing(Path(results_dir))
    top = _git(["rev-parse", "--show-toplevel"], where)
    if not top:
        return False
    probe = Path(results_dir).resolve() / rd.RUNS / "run" / rd.META
    try:
        rel = probe.relative_to(Path(top).resolve())
    except ValueError:
        return False
    try:
        done = subprocess.run(["git", "check-ignore", "-q", "--", rel.as_posix()], cwd=top,
                              capture_output=True, timeout=_GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 1  # 0: ignored, 1: not ignored, 128: error


def tracked_store_warning(results_dir: str | Path, root: Path | None = None) -> str | None:
    """One line when runs go into a git-tracked results folder from a dirty atss_bench checkout
    (their records then name a commit plus a patch, not a commit anyone can check out)."""
    if not store_is_tracked(results_dir):
        return None
    checkout = find_checkout(root, exclude=[results_dir])
    if checkout is None or not is_dirty(checkout):
        return None
    return (f"{results_dir} is tracked by git but the atss_bench checkout {checkout.top} has "
            "uncommitted changes: these records will not be rebuildable from a commit (only "
            f"from a commit plus the {PATCH_NAME} beside each); commit your changes first")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def slurm_job_id() -> str | None:
    """The id users see in squeue: ``<array job>_<task>`` for array tasks, else SLURM_JOB_ID."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def host_info() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": slurm_job_id()}


def collect_provenance(code: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Code and environment provenance for metrics.json (the engine adds device, speed, ...).

    ``code``: the fields ``capture_code`` returned when training started; None: the commit and
    dirty flag now."""
    return {**(git_info() if code is None else dict(code)), "versions": package_versions(),
            "host": socket.gethostname(), "slurm_job_id": slurm_job_id()}
