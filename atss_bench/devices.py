"""Which device the engine trains on, chosen without importing torch (the CLI sets it).

``$ATSS_BENCH_DEVICE`` is read by every training process (``engine.distributed``), so a choice
made by ``atss-bench run --device`` reaches the jobs it starts, local or submitted:

- ``auto`` (unset or empty): CUDA when torch sees a GPU, else CPU;
- ``cpu``: CPU on any machine. CPU runs are exactly reproducible and are what the committed
  records (``results/mini``) and the CI baseline were made with;
- ``cuda``: a GPU, or an error naming the variable.
"""
from __future__ import annotations

import os
from typing import Mapping

from atss_bench.errors import ConfigError

DEVICE_ENV = "ATSS_BENCH_DEVICE"
DEVICES = ("auto", "cpu", "cuda")


def requested_device(env: Mapping[str, str] | None = None) -> str:
    """``auto``, ``cpu`` or ``cuda`` from ``$ATSS_BENCH_DEVICE``; anything else is a ConfigError."""
    value = (os.environ if env is None else env).get(DEVICE_ENV, "").strip().lower() or "auto"
    if value not in DEVICES:
        raise ConfigError(f"{DEVICE_ENV}={value[:40]!r} is not a device",
                          hint="one of auto, cpu, cuda")
    return value


def use_device(device: str) -> None:
    """Make ``device`` the choice of this process and of every job it starts."""
    if device not in DEVICES:
        raise ConfigError(f"--device {device[:40]!r} is not a device", hint="one of auto, cpu, cuda")
    if device == "cuda":
        import torch  # only here: the CLI does not import torch to start

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda, but torch sees no CUDA GPU here",
                              hint="--device cpu or auto, or a CUDA build of torch")
    os.environ[DEVICE_ENV] = device


def resolved_device() -> str:
    """The device type a run started here trains on: ``cpu`` or ``cuda`` (``auto`` resolved)."""
    wanted = requested_device()
    if wanted != "auto":
        return wanted
    import torch  # only here: the CLI does not import torch to start

    return "cuda" if torch.cuda.is_available() else "cpu"


def recorded_device(provenance: Mapping[str, object] | None) -> str | None:
    """The device type a record's provenance names (``"cuda (NVIDIA H200)"`` -> ``cuda``), or
    None when it names none this module knows (older or foreign records are not judged)."""
    device = provenance.get("device") if isinstance(provenance, Mapping) else None
    if not isinstance(device, str):
        return None
    kind = device.strip().split(" ", 1)[0].split(":", 1)[0].lower()
    return kind if kind in ("cpu", "cuda") else None
