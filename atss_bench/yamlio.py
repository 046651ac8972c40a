"""Bounded YAML 1.2 reading for recipes, profiles, claims files and ``--set`` values.

Everything YAML that a user hands us goes through ``parse_yaml`` (text) or ``load_yaml_mapping``
(a file). On top of ``yaml.safe_load`` (no tags that build Python objects) it does two things:

1. **Bounds the work.** PyYAML turns an alias into a shared reference, so a "billion laughs"
   document loads at once and explodes later, when the overrides are walked, copied or validated.
   The loader therefore counts while it composes and stops with a one-line ``ConfigError``:

   ===========================  ========  =========================================
   limit                        value     why
   ===========================  ========  =========================================
   file size                    1 MiB     the largest shipped recipe is ~10 KiB
   nesting depth                64        configs are ~6 deep; bounds the recursion
   alias uses                   1,000     no shipped file uses one
   keys + values, expanded      10,000    the largest shipped recipe has ~350
   an alias inside its anchor   refused   ``&a [*a]``: walking it never ends
   ===========================  ========  =========================================

2. **YAML 1.2 scalars** (the core schema) instead of PyYAML's YAML 1.1 rules, so a value means
   what it reads as:

   ===================  ============  ====================  =================================
   text                 YAML 1.1      here (1.2)            note
   ===================  ============  ====================  =================================
   ``010``              8 (octal)     10                    ``0o10`` is 8, ``0x10`` is 16
   ``1e-3``             "1e-3"        0.001
   ``1_000``            1000          "1_000" (a string)    an int field still parses it
   ``yes no on off``    bools         strings               a bool field still parses them
   ``1:30``             90            "1:30"                no sexagesimal numbers
   ``2024-01-01``       a date        "2024-01-01"          no timestamps
   ===================  ============  ====================  =================================

   Strings that are not 1.2 numbers stay strings; the typed config then accepts or refuses them
   with an error that names the key (``seed: Input should be a valid integer``). The shipped
   recipes and profiles resolve to the same run ids under either rule set (tests/test_yamlio.py).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from atss_bench.errors import ConfigError

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_ALIASES = 1_000
MAX_NODES = 10_000
LIMIT_HINT = ("recipes, profiles and --set values are small and flat: write values out "
              "instead of aliasing them (&name / *name)")

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_DROPPED = {_BOOL, _INT, _FLOAT, "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"}


class YamlLimitError(ComposerError):
    """A document over one of the bounds above (a YAMLError, reported with its line)."""


class BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` with the YAML 1.2 core schema that counts depth, aliases and the size of
    the document after alias expansion while it composes (before anything is constructed)."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._expanded = 0  # values composed so far, each alias counting as its target's size
        self._sizes: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._count(self._alias_size(self.peek_event()))
            return super().compose_node(parent, index)
        self._count(1)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self._limit(f"nested deeper than {MAX_DEPTH} levels")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._size(node)
        return node

    def _count(self, values: int) -> None:
        self._expanded += values
        if self._expanded > MAX_NODES:
            raise self._limit(f"more than {MAX_NODES} keys and values once aliases are expanded")

    def _alias_size(self, event: yaml.AliasEvent) -> int:
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            raise self._limit(f"more than {MAX_ALIASES} aliases")
        target = self.anchors.get(event.anchor)
        if target is None:
            return 0  # PyYAML reports the undefined alias
        if id(target) not in self._sizes:
            raise self._limit(f"alias *{event.anchor} refers to a value that contains it")
        return self._sizes[id(target)]

    def _size(self, node: yaml.Node) -> int:
        if isinstance(node, yaml.SequenceNode):
            return 1 + sum(self._sizes[id(child)] for child in node.value)
        if isinstance(node, yaml.MappingNode):
            return 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        return 1

    def _limit(self, problem: str) -> YamlLimitError:
        return YamlLimitError(None, None, problem, self.peek_event().start_mark)


def _construct_int(loader: BoundedLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    digits = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    try:
        if digits[:2] in ("0o", "0x"):
            return sign * int(digits[2:], 8 if digits[1] == "o" else 16)
        return sign * int(digits, 10)  # 010 -> 10: no YAML 1.1 octal
    except ValueError:  # an explicit !!int that is not one, or too many digits
        raise ConstructorError(None, None, f"not an integer: {text[:40]!r}",
                               node.start_mark) from None


def _construct_float(loader: BoundedLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    if text in special:
        return special[text]
    try:
        return float(text)
    except ValueError:
        raise ConstructorError(None, None, f"not a number: {text[:40]!r}",
                               node.start_mark) from None


# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution); ints before floats.
BoundedLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
BoundedLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
BoundedLoader.add_implicit_resolver(
    _FLOAT, re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))
BoundedLoader.add_constructor(_INT, _construct_int)
BoundedLoader.add_constructor(_FLOAT, _construct_float)


def _describe(exc: yaml.YAMLError) -> tuple[str, str]:
    """(" line N", problem) of a PyYAML error."""
    mark = getattr(exc, "problem_mark", None)
    line = f" line {mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return line, problem


def parse_yaml(text: str, source: str) -> Any:
    """YAML 1.2 ``text`` -> plain Python data, within the bounds above; ``source`` (a path or
    ``--set 'k=v'``) starts the one-line ``ConfigError`` for anything malformed or too big."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_FILE_BYTES // 1024} KiB",
                          hint="recipes, profiles and values are small: is this the right file?")
    try:
        return yaml.load(text, Loader=BoundedLoader)  # noqa: S506  (a SafeLoader subclass)
    except RecursionError:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        line, problem = _describe(exc)
        hint = (LIMIT_HINT if isinstance(exc, YamlLimitError) else
                "only plain YAML is allowed (no !!python tags)")
        raise ConfigError(f"{source}:{line}: invalid YAML: {problem}", hint=hint) from None


def read_text_bounded(path: Path, what: str = "file") -> str:
    """A regular UTF-8 file of at most ``MAX_FILE_BYTES``, read without trusting its size."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found",
                          hint="check the path; `atss-bench recipes` lists the shipped recipes")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: {what} is larger than {MAX_FILE_BYTES // 1024} KiB",
                          hint="recipes and profiles are small: is this the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None


def load_yaml_mapping(path: Path, what: str = "file") -> dict[str, Any]:
    """A YAML file that must hold a mapping (see the module docstring for the rules)."""
    data = parse_yaml(read_text_bounded(path, what), str(path))
    if data is None:
        raise ConfigError(f"{path}: {what} is empty", hint="see recipes/table2.yaml for the format")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping, got {type(data).__name__}",
                          hint="see recipes/table2.yaml for the format")
    return data
