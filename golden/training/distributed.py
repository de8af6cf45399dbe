"""torch.distributed support: the collectives the trainer and the policies use, DDP wrapping,
start-up from torchrun's environment, and a local launcher for tests.

One process per rank, each holding a shard of every global mini-batch (``--batch-size`` is the
global batch). Gradients are averaged by DistributedDataParallel; the trainer scales the loss by
the world size so the update equals the single-process one on the same global batch. Decisions
that concern the whole batch, a window of steps or a layer are agreed: batch confidence and
training accuracy are all-reduced before deciding, layer decisions are broadcast from rank 0,
random draws come from generators seeded alike on every rank.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import torch

__all__ = ["Dist", "TorchDist", "init_from_env", "run_local"]


class Dist:
    """A single process: collectives are identities, nothing is wrapped."""

    rank = 0
    world = 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def broadcast_object(self, obj):
        return obj

    def broadcast_buffers(self, model) -> None:
        pass

    def wrap(self, model):
        return model

    def close(self) -> None:
        pass


class TorchDist(Dist):
    """The default process group of torch.distributed (already initialised)."""

    def __init__(self, device: torch.device):
        import torch.distributed as dist
        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised")
        self._dist = dist
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.device = device
        self._wrapped = None

    def all_reduce_sum(self, t):
        # nccl reduces GPU tensors only; the counters live on the CPU
        dev = self.device if self._dist.get_backend() == "nccl" else torch.device("cpu")
        out = t.to(dev, copy=True)
        self._dist.all_reduce(out)
        return out.to(t.device)

    def broadcast_object(self, obj):
        box = [obj]
        self._dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_buffers(self, model):
        for b in model.buffers():
            self._dist.broadcast(b, 0)

    def wrap(self, model):
        """A fresh DistributedDataParallel over the parameters that need gradients now.

        The trainer re-wraps whenever the trainable set changes (a WUS window, a frozen layer),
        on all ranks at the same step, so DDP never waits for a gradient that is not computed.
        """
        from torch.nn.parallel import DistributedDataParallel as DDP
        if self._wrapped is not None:
            # the old reducer's autograd hooks must be gone before the next backward
            self._wrapped = None
            gc.collect()
        if not any(p.requires_grad for p in model.parameters()):
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        self._wrapped = DDP(model, device_ids=ids)  # buffers (BN statistics) follow rank 0
        return self._wrapped

    def close(self):
        self._wrapped = None


def init_from_env(device: torch.device) -> Dist:
    """A :class:`TorchDist` when started by torchrun (WORLD_SIZE > 1), else :class:`Dist`.

    Backend: nccl on CUDA, gloo on CPU. Each rank uses GPU LOCAL_RANK when on CUDA.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return TorchDist(device)


def _local_worker(rank: int, world: int, store: str, fn, args):
    import torch.distributed as dist
    # localhost only: gloo would otherwise pick the interface the host name resolves to
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def run_local(fn, world: int, args: tuple, workdir: str | Path, timeout: float = 120.0) -> None:
    """Run ``fn(rank, world, *args)`` in ``world`` fresh CPU processes joined by gloo over a file
    store in ``workdir``; raise if one fails or the whole run exceeds ``timeout`` seconds
    (then every process is terminated). ``fn`` must be importable (a module-level function)."""
    import torch.multiprocessing as mp
    store = Path(workdir) / "dist_store"
    if store.exists():
        store.unlink()
    ctx = mp.start_processes(_local_worker, args=(world, str(store), fn, args), nprocs=world,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=max(0.1, min(1.0, deadline - time.monotonic()))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"distributed run of {world} processes exceeded {timeout} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
                p.join(5)


def agreement_worker(rank: int, world: int, out_dir: str, dataset_kw: dict, model: str,
                     spec: str, options: dict, config_kw: dict) -> None:
    """Train one run as rank ``rank`` and save what must agree across ranks to
    ``out_dir/rank<rank>.pt``: the per-epoch decisions of the batch, window and layer policies,
    the low-resolution steps, the global step outcomes and the final parameters. Used by the
    tests through :func:`run_local`."""
    from .datasets import make_synthetic
    from .trainer import TrainConfig, train

    data = make_synthetic(**dataset_kw)
    result = train(data, model, spec, TrainConfig(**config_kw), dist=TorchDist(torch.device("cpu")),
                   options=options)
    torch.save({"epochs": result.epochs,
                "params": {k: v for k, v in result.final_state.items()},
                "final_accuracy": result.final_accuracy},
               Path(out_dir) / f"rank{rank}.pt")
