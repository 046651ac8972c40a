"""Reading a results folder as untrusted data.

A results folder may come from anyone: a pull request, a lab mate's store, a copied archive.
Everything read from it is data, never a path to follow or code to run:

- a file is opened only if it is a regular file (``lstat`` first, so a FIFO or a device is never
  even opened), without following a final symlink (``O_NOFOLLOW``) and without blocking
  (``O_NONBLOCK``); ``fstat`` after the open checks again (the name may have been swapped);
- reads are bounded: a JSON file is refused above ``MAX_JSON_BYTES``, a log is read by its tail;
- ``read_tail_confined`` walks from a trusted root folder one name at a time through directory
  descriptors, so no symlinked folder can lead it outside the root.
Nothing here unpickles, imports or executes anything.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAX_JSON_BYTES = 1 << 20  # a metrics.json is ~2 KB; anything near 1 MiB is not ours
_OPEN_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0))
_DIR_FLAGS = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
              | getattr(os, "O_CLOEXEC", 0))


class UnsafeFile(ValueError):
    """A file in a results folder that is not read: its reason says why (one phrase)."""


def _open_regular(name: str | Path, dir_fd: int | None = None) -> int:
    """A read-only descriptor of a regular file (FileNotFoundError when missing)."""
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise UnsafeFile(f"cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFile("is a symbolic link")
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile("is not a regular file")
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile("is a symbolic link") from None
        raise UnsafeFile(f"cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped between the stat and the open
        os.close(fd)
        raise UnsafeFile("is not a regular file")
    return fd


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_bytes(name: str | Path, max_bytes: int, *, tail: bool = False,
               dir_fd: int | None = None) -> bytes:
    """A regular file's content (``tail``: its last ``max_bytes``). FileNotFoundError when
    missing; UnsafeFile when it is not a regular file, or larger than ``max_bytes`` (not tail)."""
    fd = _open_regular(name, dir_fd)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            if not tail:
                raise UnsafeFile(f"is {size} bytes (at most {max_bytes} read)")
            os.lseek(fd, size - max_bytes, os.SEEK_SET)
        return _read_at_most(fd, max_bytes)
    except OSError as exc:
        raise UnsafeFile(f"cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)


def parse_json_object(data: bytes) -> dict[str, Any]:
    """A JSON object from bytes; UnsafeFile naming what is wrong (encoding, syntax, depth, type)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeFile("is not valid UTF-8") from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise UnsafeFile("is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, an integer with too many digits
        raise UnsafeFile(f"is not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(value, dict):
        raise UnsafeFile(f"holds a JSON {type(value).__name__}, not an object")
    return value


def load_json_object(path: str | Path, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any] | None:
    """A JSON object from a store file; None when the file is missing, UnsafeFile when it
    cannot be trusted (not a regular file, too big, not UTF-8, not JSON, too deep, not an object).
    """
    try:
        data = read_bytes(path, max_bytes)
    except FileNotFoundError:
        return None
    return parse_json_object(data)


def _valid_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def read_tail_confined(root: str | Path, names: Sequence[str], max_bytes: int) -> bytes | None:
    """The last ``max_bytes`` of ``root/names[0]/.../names[-1]``, reached without following any
    symlink below ``root``; None when it is missing, not a regular file, or a name is not a
    plain file name."""
    if not names or not all(_valid_name(name) for name in names):
        return None
    try:
        fd = os.open(root, _DIR_FLAGS & ~getattr(os, "O_NOFOLLOW", 0))  # the root is trusted
    except OSError:
        return None
    try:
        for name in names[:-1]:
            next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        return read_bytes(names[-1], max_bytes, tail=True, dir_fd=fd)
    except (OSError, UnsafeFile):
        return None
    finally:
        os.close(fd)
