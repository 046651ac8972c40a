"""torch.distributed set-up from torchrun or SLURM, and the few collectives the engine needs.

Where the process group comes from, first match wins:

1. already initialised by the caller (e.g. the launch layer with submitit's JobEnvironment);
2. explicit ``rank`` / ``world_size`` / ``local_rank`` / ``master_addr`` / ``master_port``;
3. torchrun: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``;
4. SLURM (srun / submitit): ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, master = first
   host of ``SLURM_JOB_NODELIST``, port = ``MASTER_PORT`` or derived from ``SLURM_JOB_ID``;
5. otherwise a single process (no process group).

Device: ``$ATSS_BENCH_DEVICE`` (``atss_bench.devices``; ``atss-bench run --device``): ``auto``
picks CUDA when torch sees a GPU, ``cpu`` stays on CPU on any machine, ``cuda`` needs a GPU.
Backend: NCCL on CUDA, gloo on CPU. This module never imports submitit.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping

import torch
import torch.distributed as dist

from atss_bench.devices import DEVICE_ENV, resolved_device
from atss_bench.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: single process, no process group
    owns_group: bool = False  # True when init_distributed created the group (and must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list: ``"gpu[003-005,9],cpu1"`` -> ``"gpu003"``."""
    nodelist = nodelist.strip()
    match = re.match(r"^([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not match:
        raise ConfigError(f"cannot parse SLURM_JOB_NODELIST={nodelist!r}")
    prefix, ranges = match.group(1), match.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def env_rendezvous(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """``rank, world_size, local_rank, master_addr, master_port`` from torchrun or SLURM, or None
    when the environment describes a single process."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return {
            "rank": int(env["RANK"]), "world_size": int(env["WORLD_SIZE"]),
            "local_rank": int(env.get("LOCAL_RANK", 0)),
            "master_addr": env.get("MASTER_ADDR", "127.0.0.1"),
            "master_port": int(env.get("MASTER_PORT", 29500)),
        }
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        job_id = int(re.sub(r"\D", "", env.get("SLURM_JOB_ID", "0")) or 0)
        return {
            "rank": int(env["SLURM_PROCID"]), "world_size": int(env["SLURM_NTASKS"]),
            "local_rank": int(env.get("SLURM_LOCALID", 0)),
            "master_addr": env.get("MASTER_ADDR") or first_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1")),
            "master_port": int(env.get("MASTER_PORT", 20000 + job_id % 20000)),
        }
    return None


def _device_for(local_rank: int) -> torch.device:
    if resolved_device() == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():  # asked for cuda explicitly
        raise ConfigError(f"{DEVICE_ENV}=cuda, but torch sees no CUDA GPU here",
                          hint="--device cpu or auto, or a CUDA build of torch")
    torch.cuda.set_device(local_rank % torch.cuda.device_count())
    return torch.device("cuda", torch.cuda.current_device())


def init_distributed(
    *, rank: int | None = None, world_size: int | None = None, local_rank: int | None = None,
    master_addr: str | None = None, master_port: int | None = None, backend: str | None = None,
    timeout_s: float = 1800.0,
) -> DistInfo:
    """Join (or create) the process group and pick this process's device; see module doc."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", local_rank if local_rank is not None else 0))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, _device_for(local),
                        dist.get_backend(), owns_group=False)
    if world_size is not None:
        spec = {"rank": rank or 0, "world_size": world_size, "local_rank": local_rank or 0,
                "master_addr": master_addr or "127.0.0.1", "master_port": master_port or 29500}
    else:
        spec = env_rendezvous()
    if spec is None or spec["world_size"] <= 1:
        return DistInfo(device=_device_for(0 if spec is None else spec["local_rank"]))
    if not dist.is_available():
        raise ConfigError("torch.distributed is not available in this PyTorch build")
    device = _device_for(spec["local_rank"])
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(
        backend=backend, init_method=f"tcp://{spec['master_addr']}:{spec['master_port']}",
        rank=spec["rank"], world_size=spec["world_size"], timeout=timedelta(seconds=timeout_s),
    )
    return DistInfo(spec["rank"], spec["world_size"], spec["local_rank"], device, backend,
                    owns_group=True)


def shutdown_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        if info.backend == "nccl":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def reduce_mean(values: dict[str, torch.Tensor], info: DistInfo) -> dict[str, float]:
    """Mean over processes of each scalar (one all_reduce for all of them), as floats."""
    names = sorted(values)
    stacked = torch.stack([values[name].detach().float().reshape(()) for name in names])
    if info.distributed:
        stacked = stacked.to(info.device)
        dist.all_reduce(stacked)
        stacked /= info.world_size
    return dict(zip(names, stacked.cpu().tolist()))


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every process's ``obj`` on rank 0 (a list, by rank); None on the other ranks."""
    if not info.distributed:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered if info.is_main else None


def broadcast_from_main(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not info.distributed:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
