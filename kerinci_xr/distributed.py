"""Training on several processes with PyTorch's own distributed package (torchrun, DDP).

``torchrun --nproc_per_node N -m kerinci_xr train ...`` (or ``python -m torch.distributed.run``,
on one machine or several) starts N processes and tells each its ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; :func:`world` reads them. Each process trains on its part of every global
batch (:class:`~kerinci_xr.batching.GlobalBatches`), DistributedDataParallel averages the
gradients, validation pixels are gathered so that each is counted once, and only rank 0 writes.
NCCL connects CUDA processes and gloo CPU processes; a collective that waits longer than the
timeout ends the run with an error instead of a hang.
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInputError, KerinciError

__all__ = ["DistributedError", "Orders", "World", "all_gather", "barrier", "setup", "teardown", "world"]

log = logging.getLogger(__name__)


class DistributedError(KerinciError, RuntimeError):
    """A process of a distributed run failed, or the others stopped waiting for it."""


@dataclass(frozen=True)
class World:
    """Where this process stands in a run: its rank, the number of processes, its local rank."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world() -> World:
    """The run this process belongs to, from torchrun's environment (one process without it)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise InvalidInputError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers ({exc}).") from exc
    if size < 1 or not 0 <= rank < size:
        raise InvalidInputError(f"RANK {rank} and WORLD_SIZE {size}: expected 0 <= RANK < WORLD_SIZE.")
    return World(rank, size, local)


def _stopped(signum: int, _frame: Any) -> None:
    raise DistributedError(
        f"rank {world().rank}: stopped by signal {signal.Signals(signum).name}: another process of the run "
        "failed (torchrun ends the others). Fix: see the failed rank's message; continue with --resume."
    )


def setup(w: World, device_type: str, timeout_s: float) -> None:
    """Join the process group (NCCL on CUDA, gloo otherwise) with a timeout on every collective;
    a SIGTERM (torchrun stopping the run after another process failed) becomes a clear error."""
    import torch.distributed as dist

    if not w.active or dist.is_initialized():
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        backend = "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    signal.signal(signal.SIGTERM, _stopped)
    log.info("rank %d of %d joined the %s process group (pid %d)", w.rank, w.size, backend, os.getpid())


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _collective(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (RuntimeError, OSError) as exc:
        if isinstance(exc, KerinciError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistributedError(
            f"rank {world().rank}: {what} failed: another process of the run stopped or did not answer "
            f"within the timeout ({first[:200]}). Fix: see that rank's message; continue with --resume."
        ) from exc


def barrier(w: World) -> None:
    """Wait for every process (nothing to wait for alone)."""
    if w.active:
        import torch.distributed as dist

        _collective("waiting for the other processes", dist.barrier)


def all_gather(w: World, obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` alone)."""
    if not w.active:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * w.size
    _collective("gathering results", dist.all_gather_object, out, obj)
    return out


class Orders:
    """Rank 0 tells the other processes what to do next (a stage like ``crossval`` runs on rank 0
    and the others join each training it starts): a gloo group of its own whose timeout covers
    rank 0's work between two trainings (sampling, per-pixel models, predicting the scene)."""

    def __init__(self, w: World, timeout_s: float) -> None:
        self.w = w
        self.group = None
        if w.active:
            import torch.distributed as dist

            self.group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))

    def send(self, order: Any) -> None:
        if self.w.active:
            import torch.distributed as dist

            _collective("sending the next order", dist.broadcast_object_list, [order], 0, self.group)

    def receive(self) -> Any:
        import torch.distributed as dist

        box: list[Any] = [None]
        _collective("waiting for rank 0's next order", dist.broadcast_object_list, box, 0, self.group)
        return box[0]
