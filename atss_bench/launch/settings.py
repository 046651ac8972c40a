"""Where a submission runs and with what resources: flags > environment > config file > defaults.

The user config file is TOML (``$ATSS_BENCH_CONFIG``, else
``$XDG_CONFIG_HOME/atss-bench/config.toml``, else ``~/.config/atss-bench/config.toml``); only its
``[cluster]`` table is read here, and an unknown key in it is an error that names the key::

    [cluster]
    cluster = "slurm"
    partition = "gpu"
    gpus_per_node = 8
    cpus_per_task = 10
    time = 1440            # minutes
    setup = ["module load cuda/12.1"]

Every field can also come from ``ATSS_BENCH_<FIELD>`` (``ATSS_BENCH_PARTITION=gpu``,
``ATSS_BENCH_GPUS_PER_NODE=8``); list fields (``setup``) take ``;``-separated items.
"""
from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from atss_bench.config import Strict
from atss_bench.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover  (Python 3.10)
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None  # type: ignore[assignment]

CONFIG_ENV = "ATSS_BENCH_CONFIG"
ENV_PREFIX = "ATSS_BENCH_"
SECTION = "cluster"
CLUSTERS = ("slurm", "local", "debug")

Cluster = Literal["slurm", "local", "debug"]


class ClusterSettings(Strict):
    """Resources and placement of every job of one submission (one job = one run)."""

    cluster: Cluster = "slurm"
    partition: str | None = None
    gpus_per_node: int = Field(0, ge=0)  # one task (process) per GPU; 0 = one CPU-only task
    nodes: int = Field(1, ge=1)
    cpus_per_task: int | None = Field(None, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    time: int = Field(720, ge=1)  # minutes per attempt; time-outs requeue (max_num_timeout times)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int | None = Field(None, ge=1)  # slurm: %N; local: background processes
    signal_delay_s: int = Field(120, ge=1)  # SIGUSR2 this long before the time limit
    max_num_timeout: int = Field(3, ge=0)  # requeues after time-outs before giving up
    setup: list[str] = Field(default_factory=list)  # shell lines run before the job (sbatch)
    python: str | None = None  # interpreter of the jobs (default: this one)

    @property
    def tasks_per_node(self) -> int:
        return max(1, self.gpus_per_node)


FIELDS = tuple(ClusterSettings.model_fields)


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path("~/.config")
    return (base / "atss-bench" / "config.toml").expanduser()


def read_config_section(path: Path, *, required: bool = False) -> dict[str, Any]:
    """The ``[cluster]`` table of a TOML file ({} when the file does not exist and not required)."""
    if not path.is_file():
        if required:
            raise ConfigError(f"config file {path} not found",
                              hint=f"unset {CONFIG_ENV} or point it at a TOML file")
        return {}
    if tomllib is None:  # pragma: no cover
        raise ConfigError(f"cannot read {path}: Python < 3.11 needs the 'tomli' package")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    section = data.get(SECTION, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: '{SECTION}' must be a table", hint="write it as [cluster]")
    for key in section:
        if key not in FIELDS:
            close = [f for f in FIELDS if f.startswith(key) or key.startswith(f)] \
                or difflib.get_close_matches(key, FIELDS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(FIELDS)}"
            raise ConfigError(f"{path}: unknown key '{SECTION}.{key}'", hint=hint)
    return dict(section)


def read_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``ATSS_BENCH_<FIELD>`` variables that are set and not empty, by field name."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = env.get(env_name(name), "").strip()
        if value:
            out[name] = [s.strip() for s in value.split(";") if s.strip()] if name == "setup" \
                else value
    return out


def _validate(values: dict[str, Any], sources: dict[str, str]) -> ClusterSettings:
    try:
        return ClusterSettings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        where = sources.get(field, "settings")
        raise ConfigError(f"{where}: {field}: {error['msg']} (got {error.get('input')!r})",
                          hint=f"one of {', '.join(CLUSTERS)}" if field == "cluster" else None
                          ) from None


def resolve_settings(
    flags: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_path: Path | None = None,
) -> tuple[ClusterSettings, dict[str, str]]:
    """Merge defaults < config file < environment < flags (None flags are "not given").

    Returns the settings and, for every field not left at its default, where it came from
    (``"--partition"``, ``"ATSS_BENCH_PARTITION"``, ``"~/.config/atss-bench/config.toml"``).
    """
    env = os.environ if environ is None else environ
    path = config_path or default_config_path(env)
    required = config_path is not None or bool(env.get(CONFIG_ENV))
    layers = [
        (str(path), read_config_section(path, required=required)),
        *((env_name(k), {k: v}) for k, v in read_env(env).items()),
        *((f"--{k.replace('_', '-')}", {k: v}) for k, v in (flags or {}).items()
          if v is not None),
    ]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        for key, value in layer.items():
            if key not in FIELDS:
                raise ConfigError(f"{source}: unknown cluster setting '{key}'")
            values[key] = value
            sources[key] = source
    return _validate(values, sources), sources
