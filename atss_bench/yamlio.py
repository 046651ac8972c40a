"""Safe YAML reading with errors that name the file and line."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from atss_bench.errors import ConfigError


def load_yaml_mapping(path: Path, what: str = "file") -> dict[str, Any]:
    """``yaml.safe_load`` a file that must hold a mapping; never executes tags."""
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found",
                          hint="check the path; `atss-bench recipes` lists the shipped recipes")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{line}: invalid YAML: {problem}",
                          hint="only plain YAML is allowed (no !!python tags)") from None
    if data is None:
        raise ConfigError(f"{path}: {what} is empty", hint="see recipes/table2.yaml for the format")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping, got {type(data).__name__}",
                          hint="see recipes/table2.yaml for the format")
    return data
