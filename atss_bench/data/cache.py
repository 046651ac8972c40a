"""Small JSON caches under ``$ATSS_BENCH_CACHE`` (default ``~/.cache/atss-bench``).

A cache only saves work: a missing, corrupt, oversized or foreign file reads as empty, and one
that cannot be written is left alone. Writes are atomic (a temporary file in the same folder,
then ``os.replace``) and honour the umask, so processes sharing a cache never see half a file;
when two write at once the last one wins and the other's new entries are simply computed again.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
from contextlib import suppress
from pathlib import Path
from typing import Any

CACHE_ENV = "ATSS_BENCH_CACHE"
FORMAT = 1
MAX_BYTES = 4 << 20
MAX_ENTRIES = 2048


def default_cache_dir() -> Path:
    """``$ATSS_BENCH_CACHE`` if set, else ``~/.cache/atss-bench``."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/atss-bench").expanduser()


def _read_entries(path: Path) -> dict[str, Any]:
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_BYTES:
            return {}
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            data = json.loads(handle.read(MAX_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return {}
    entries = data.get("entries")
    return entries if isinstance(entries, dict) else {}


class JsonCache:
    """``key -> JSON value``, loaded once; ``save()`` writes what ``put`` added."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._entries = _read_entries(self.path)
        self._new: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self._new.get(key, self._entries.get(key))

    def put(self, key: str, value: Any) -> None:
        self._new[key] = value

    def save(self) -> None:
        """Merge the new entries into the file as it is now (best effort, never raises)."""
        if not self._new:
            return
        entries = {**_read_entries(self.path), **self._new}
        entries = dict(list(entries.items())[-MAX_ENTRIES:])  # oldest first out
        text = json.dumps({"format": FORMAT, "entries": entries}, sort_keys=False)
        if len(text) > MAX_BYTES:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "x", encoding="utf-8") as handle:  # mode 0666 & ~umask
                handle.write(text)
            os.replace(tmp, self.path)
        except OSError:
            with suppress(OSError):
                tmp.unlink()
            return
        self._entries, self._new = entries, {}
