"""Distributed training on CPU (gloo): 2 processes x 2 images == 1 process x 4 images.

The global batch (train.images_per_batch = 4) is the same in both runs and the sampler gives
process r the r-th half of exactly the images the single process sees. Losses are normalised by
the positives averaged over processes and DDP averages gradients, so the two runs make the same
updates. The test uses GroupNorm everywhere: BatchNorm would normalise 2-image per-process
batches with different statistics than one 4-image batch (so the two runs would legitimately
differ), and it uses same-size images so both runs pad every batch to the same shape.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from atss_bench.engine.distributed import env_rendezvous, first_host, init_distributed
from atss_bench.engine.monitor import read_log
from tests.engine.conftest import tiny_config

NUM_ITERS = 5


def _config():
    return tiny_config(
        data={"kind": "coco", "flip_prob": 0.5, "val_images": 4},
        model={"backbone": {"norm": "gn"}},
        train={"images_per_batch": 4, "max_iter": NUM_ITERS, "checkpoint_period": 100,
               # A small lr: float32 sums over 4 vs 2 + 2 images differ in the last bits (~1e-7
               # relative); a from-scratch network amplifies that with every large update.
               "warmup_iters": 2, "base_lr": 0.005},
    )


def _run(rank: int, world_size: int, port: int, data_root: str, run_dir: str, out: str) -> None:
    """One process of the job (also used with world_size 1, in-process, LOG_PERIOD patched)."""
    from atss_bench.engine import runner, train
    from atss_bench.engine.distributed import shutdown_distributed

    torch.set_num_threads(1)
    if world_size > 1:
        train.LOG_PERIOD = 1  # a log line per iteration (a fresh spawned interpreter)
    info = init_distributed(rank=rank, world_size=world_size, master_port=port) \
        if world_size > 1 else None
    try:
        result = runner.run_experiment(_config(), Path(run_dir), data_root=data_root,
                                       progress=False)
    finally:
        if info is not None:
            shutdown_distributed(info)
    Path(out, f"result_{rank}.json").write_text(json.dumps(result, allow_nan=True))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _losses(run_dir: Path) -> list[dict[str, float]]:
    return [r for r in read_log(run_dir / "log.jsonl") if "eval" not in r]


def test_two_processes_match_one_process(square_coco: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("atss_bench.engine.train.LOG_PERIOD", 1)
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    mp.spawn(_run, args=(2, _free_port(), str(square_coco), str(ddp_dir), str(tmp_path)),
             nprocs=2, join=True)
    ddp_results = [json.loads((tmp_path / f"result_{r}.json").read_text()) for r in (0, 1)]
    _run(0, 1, 0, str(square_coco), str(single_dir), str(tmp_path))
    single_result = json.loads((tmp_path / "result_0.json").read_text())

    ddp, single = _losses(ddp_dir), _losses(single_dir)
    assert [r["iter"] for r in ddp] == [r["iter"] for r in single] == list(range(1, NUM_ITERS + 1))
    for a, b in zip(ddp, single):
        for name in ("loss", "loss_cls", "loss_reg", "loss_centerness", "lr"):
            assert a[name] == pytest.approx(b[name], abs=1e-5), (a["iter"], name)
    assert ddp[0]["loss_cls"] > 0
    # Every process returns rank 0's metrics; the provenance says how it ran.
    assert ddp_results[0]["metrics"] == ddp_results[1]["metrics"]
    assert ddp_results[0]["provenance"]["world_size"] == 2
    assert single_result["provenance"]["world_size"] == 1
    assert ddp_results[0]["provenance"]["num_val_images"] == 4
    assert not (ddp_dir / "checkpoints").exists() or all(
        p.name.startswith("ckpt_") for p in (ddp_dir / "checkpoints").iterdir())


def test_first_host_of_slurm_nodelists() -> None:
    assert first_host("node001") == "node001"
    assert first_host("gpu[003-005,9]") == "gpu003"
    assert first_host("gpu[12,14],cpu1") == "gpu12"
    assert first_host("a-b1,c2") == "a-b1"


def test_rendezvous_from_torchrun_and_slurm_env() -> None:
    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h0",
                "MASTER_PORT": "1234"}
    assert env_rendezvous(torchrun) == {"rank": 3, "world_size": 8, "local_rank": 1,
                                        "master_addr": "h0", "master_port": 1234}
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5",
             "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242"}
    assert env_rendezvous(slurm) == {"rank": 5, "world_size": 16, "local_rank": 5,
                                     "master_addr": "gpu07", "master_port": 20000 + 4242}
    assert env_rendezvous({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None
    assert env_rendezvous({}) is None


def test_single_process_without_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.backend, info.is_main) == (0, 1, None, True)
