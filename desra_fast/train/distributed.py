"""Multi-process training under ``torchrun``: process group, per-rank device, DDP wrapping.

``torchrun --nproc_per_node=N -m desra_fast finetune ...`` (or any script calling
:func:`desra_fast.train.finetune`) sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; the loop then
runs one process per device with DistributedDataParallel (NCCL on CUDA, gloo on the CPU), each
rank drawing its share of every batch (:meth:`FinetuneData.batch`), gradients averaged, rank 0
writing checkpoints and the final model. Without those variables everything runs in one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.initialised_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def setup(device: str = "cpu") -> DistContext:
    """Join the ``torchrun`` process group if the environment describes one.

    ``device``: ``"cpu"``, ``"cuda"`` (each rank takes ``cuda:LOCAL_RANK``) or an explicit
    ``"cuda:N"`` (single process only).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = torch.device(device)
    if world <= 1:
        return DistContext(device=dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if dev.index is not None:
            raise ValueError(f"--device {device}: under torchrun give --device cuda (each rank uses "
                             "cuda:LOCAL_RANK)")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    here = False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        here = True
    return DistContext(rank, world, local, dev, here)


def wrap(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """DistributedDataParallel around ``module`` when running multi-process, else ``module``."""
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DDP(module, device_ids=ids)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


__all__ = ["DistContext", "setup", "wrap", "unwrap"]
