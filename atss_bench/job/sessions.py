"""Which code trained each part of a run: ``sessions.json``, one entry per training attempt.

The engine resumes a run from its checkpoints, so one result may be trained by several attempts,
possibly from different commits (or a clean and a dirty tree). Each attempt that trains in a run
folder appends ``{"attempt", "started", "git_commit", "git_dirty", "code_patch_sha256"}`` (what
``provenance.capture_code`` saw) to ``run_dir/sessions.json``; the list restarts whenever
training starts from scratch (no checkpoints left to resume from).

When the engine says it resumed (``resumed_from`` > 0), metrics.json's provenance gets
``earlier_sessions`` (the entries of the earlier attempts; null: their record is unreadable; an
all-null entry stands for lost ones) and ``mixed_code``: True when two sessions are known to have
run different code (other commits, clean vs dirty, other patches), False when all ran the same
identified code, None when it cannot be told (history lost, no git checkout, or a dirty tree
without a patch hash). A run that did not resume gets neither key.

The file sits in a results folder, so it is read as untrusted data: at most ``MAX_BYTES``, a JSON
list of at most ``MAX_SESSIONS`` objects with exactly the expected scalar types. Anything else is
ignored: the history is unknown (``read_sessions`` returns None), never trusted, never executed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from atss_bench.job import rundir as rd
from atss_bench.job.safeio import UnsafeFile, read_bytes

SESSIONS = "sessions.json"
MAX_SESSIONS = 100  # attempts of one run kept; more collapse into an "unknown" entry
MAX_BYTES = 64 * 1024  # 100 entries are ~25 KB
MAX_TEXT = 80  # a commit (40 or 64 hex), a SHA-256 (64 hex), a UTC time (~25)
FIELDS = ("attempt", "started", "git_commit", "git_dirty", "code_patch_sha256")
# stands for earlier sessions whose record is lost (an unreadable file, or too many attempts)
UNKNOWN: dict[str, Any] = dict.fromkeys(FIELDS)


def _text_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and len(value) <= MAX_TEXT)


def _valid_entry(entry: Any) -> bool:
    if not isinstance(entry, dict) or set(entry) != set(FIELDS):
        return False
    attempt = entry["attempt"]
    return ((attempt is None or (type(attempt) is int and 0 < attempt < 2**31))
            and entry["git_dirty"] in (None, True, False)
            and all(_text_or_none(entry[k]) for k in ("started", "git_commit",
                                                       "code_patch_sha256")))


def read_sessions(run_dir: Path) -> list[dict[str, Any]] | None:
    """The recorded sessions of ``run_dir`` ([] when there is no file); None when the file is
    not a regular file, too big, not JSON, or not a list of well-typed entries (unknown)."""
    try:
        data = read_bytes(Path(run_dir) / SESSIONS, MAX_BYTES)
    except FileNotFoundError:
        return []
    except UnsafeFile:
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if (not isinstance(value, list) or len(value) > MAX_SESSIONS
            or not all(_valid_entry(e) for e in value)):
        return None
    return [{k: e[k] for k in FIELDS} for e in value]


def session_entry(attempt: int, started: str, code: Mapping[str, Any]) -> dict[str, Any]:
    """This attempt's entry from ``capture_code``'s result."""
    return {"attempt": attempt, "started": started, "git_commit": code.get("git_commit"),
            "git_dirty": code.get("git_dirty"),
            "code_patch_sha256": code.get("code_patch_sha256")}


def start_session(run_dir: Path, entry: Mapping[str, Any], *, fresh: bool
                  ) -> list[dict[str, Any]] | None:
    """Record ``entry`` in ``run_dir/sessions.json`` (atomically) and return the earlier sessions
    that may have trained this run: [] when ``fresh`` (training starts from scratch), None when
    their record is unreadable or missing beside checkpoints (then an ``UNKNOWN`` entry stands for
    them in the new file)."""
    path = Path(run_dir) / SESSIONS
    if fresh:
        earlier: list[dict[str, Any]] | None = []
    elif not os.path.lexists(path):  # checkpoints of an attempt that kept no record (older code)
        earlier = None
    else:
        earlier = read_sessions(run_dir)
    kept = [dict(UNKNOWN)] if earlier is None else earlier
    if len(kept) >= MAX_SESSIONS:  # keep the file readable: the oldest become one unknown entry
        kept = [dict(UNKNOWN)] + kept[len(kept) - MAX_SESSIONS + 2:]
    rd.atomic_write_json(path, [*kept, dict(entry)])
    return earlier


def _code(entry: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return entry.get("git_commit"), entry.get("git_dirty"), entry.get("code_patch_sha256")


def _identified(entry: Mapping[str, Any]) -> bool:
    """Its code can be named: a commit, and a patch hash when the tree was dirty."""
    commit, dirty, sha = _code(entry)
    return commit is not None and (dirty is False or (dirty is True and sha is not None))


def _surely_different(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Known to be other code: other commits, clean vs dirty, or other patches."""
    (commit_a, dirty_a, sha_a), (commit_b, dirty_b, sha_b) = _code(a), _code(b)
    if commit_a is None or commit_b is None:
        return False
    if commit_a != commit_b:
        return True
    if dirty_a is None or dirty_b is None:
        return False
    return dirty_a != dirty_b or (dirty_a and sha_a is not None and sha_b is not None
                                  and sha_a != sha_b)


def mixed_code(earlier: list[Mapping[str, Any]] | None, current: Mapping[str, Any]) -> bool | None:
    """True: the sessions (earlier ones and this one) are known to have run different code;
    False: all ran the same identified code; None: cannot be told (history unknown, or a
    session's code not identified)."""
    sessions = [current, *(earlier or [])]
    if any(_surely_different(a, b) for i, a in enumerate(sessions) for b in sessions[i + 1:]):
        return True
    if earlier is None or not all(_identified(s) for s in sessions):
        return None
    return False


def resume_provenance(result_provenance: Any, earlier: list[dict[str, Any]] | None,
                      current: Mapping[str, Any]) -> dict[str, Any]:
    """metrics.json provenance keys for a resumed result (``resumed_from`` an int > 0): the
    earlier sessions (None: unknown) and ``mixed_code``; {} when the run did not resume."""
    resumed = (result_provenance.get("resumed_from")
               if isinstance(result_provenance, Mapping) else None)
    if type(resumed) is not int or resumed <= 0:
        return {}
    return {"earlier_sessions": earlier, "mixed_code": mixed_code(earlier, current)}
