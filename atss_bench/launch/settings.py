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

Every value lands in the sbatch script, so each is checked whatever its source (flag, variable or
file key), and a bad one is a ``ConfigError`` naming the source and the value:

=============================  ==============================================================
field                          allowed
=============================  ==============================================================
partition, qos                 names of letters, digits and ``._+-``, comma separated
account                        one such name
constraint                     names and SLURM's operators ``&|*[]()`` ``:,=``
job name (recipe and profile)  letters, digits and ``._+-`` (see ``check_job_name``)
setup, python                  shell by design, from the config file or the environment only
                               (never a flag); each one line: no newline, NUL or control byte
=============================  ==============================================================

Values are at most 128 characters. No space, quote, ``$``, backtick, ``;`` or newline reaches an
``#SBATCH`` line: a newline there would end the header and run the rest as a shell command.
"""
from __future__ import annotations

import difflib
import os
import re
import sys
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

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

_NAME = r"A-Za-z0-9._+\-"  # a regex character class: SLURM partition, account and QoS names
_LIST = rf"[{_NAME}]+(?:,[{_NAME}]+)*"  # one name or a comma-separated list
# field -> (characters allowed, shape of the whole value, the allowed characters in words)
SBATCH_VALUES: dict[str, tuple[str, str, str]] = {
    "partition": (_NAME + ",", _LIST, "letters, digits, . _ + - and commas"),
    "qos": (_NAME + ",", _LIST, "letters, digits, . _ + - and commas"),
    "account": (_NAME, rf"[{_NAME}]+", "letters, digits, . _ + -"),
    "constraint": (_NAME + r"&|*\[\]():,=", r".+",
                   "letters, digits, . _ + - and the operators & | * [ ] ( ) : , ="),
    "job name": (_NAME, rf"[{_NAME}]+", "letters, digits, . _ + -"),
}
MAX_VALUE_CHARS = 128
MAX_SHELL_CHARS = 4096
SHELL_FIELDS = ("setup", "python")  # shell text by design: config file / environment only


def check_sbatch_value(field: str, value: str) -> str:
    """``value`` when it is safe in ``#SBATCH --<field>=value``; else ValueError saying why."""
    chars, shape, allowed = SBATCH_VALUES[field]
    bad = re.search(f"[^{chars}]", value)
    if bad:
        raise ValueError(f"character {bad.group()!r} is not allowed in an #SBATCH value "
                         f"(allowed: {allowed})")
    if not value or len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"must have 1 to {MAX_VALUE_CHARS} characters")
    if not re.fullmatch(shape, value):
        raise ValueError("must be one name or names separated by single commas")
    return value


def check_shell_line(value: str) -> str:
    """A setup line or interpreter command: any shell text, but a single line."""
    bad = next((c for c in value if c != "\t" and unicodedata.category(c) in ("Cc", "Zl", "Zp")),
               None)
    if bad is not None:
        raise ValueError(f"must be a single line: control character {bad!r} found")
    if len(value) > MAX_SHELL_CHARS:
        raise ValueError(f"longer than {MAX_SHELL_CHARS} characters")
    return value


def check_job_name(name: str) -> str:
    """The job name (``atss-table7-mini``): ConfigError naming it when unsafe."""
    try:
        return check_sbatch_value("job name", name)
    except ValueError as exc:
        raise ConfigError(f"job name {name!r}: {exc}",
                          hint="recipe 'table' and profile 'name' must be short identifiers"
                          ) from None


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

    @field_validator("partition", "qos", "account", "constraint")
    @classmethod
    def _sbatch_safe(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_sbatch_value(str(info.field_name), value)

    @field_validator("setup")
    @classmethod
    def _setup_lines(cls, lines: list[str]) -> list[str]:
        return [check_shell_line(line) for line in lines]

    @field_validator("python")
    @classmethod
    def _python_line(cls, value: str | None) -> str | None:
        return None if value is None else check_shell_line(value)

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


def _hint(field: str) -> str | None:
    if field == "cluster":
        return f"one of {', '.join(CLUSTERS)}"
    if field in SHELL_FIELDS:
        return f"one command per item; set {field} in the config file's [cluster] table"
    return None


def _validate(values: dict[str, Any], sources: dict[str, str], config_file: str
              ) -> ClusterSettings:
    try:
        return ClusterSettings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        where = sources.get(field, "settings")
        key = f"{SECTION}.{field}" if where == config_file else field
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{where}: {key}: {message} (got {error.get('input')!r:.200})",
                          hint=_hint(field)) from None


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
            if key in SHELL_FIELDS and source.startswith("--"):
                raise ConfigError(f"{source}: {key} is shell text: it comes only from the "
                                  f"config file or {env_name(key)}", hint=_hint(key))
            values[key] = value
            sources[key] = source
    return _validate(values, sources, str(path)), sources
