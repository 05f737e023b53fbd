"""Data parallelism across processes: `torchrun --nproc-per-node N -m lfcc_deploy distill RECIPE`.

torchrun starts N copies of the CLI and tells each one its place through RANK, WORLD_SIZE and
LOCAL_RANK. Each rank trains on its own 1/N shard of every epoch (`batch_size` is per process),
gradients are averaged by DistributedDataParallel, and only rank 0 writes files and prints.
LFCC's InfoNCE gathers the embeddings of every rank (with gradient), so the negatives are the
global batch. With one process every function here is a no-op and nothing changes.
"""
from __future__ import annotations

import atexit
import inspect
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from .errors import BadInput, LfccError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; `Dist()` is the single-process case."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """`(rank, world)` as `Source.batches(shard=...)` takes it."""
        return self.rank, self.world

    def barrier(self) -> None:
        barrier()

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return broadcast_object(obj, src)


_current: Dist | None = None


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def current() -> Dist:
    """The running job: rank and world from the initialised process group, else world 1."""
    if not _active():
        return Dist(device=_current.device if _current else None)
    if _current is not None and _current.rank == dist.get_rank():
        return _current
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), None)


def is_main() -> bool:
    return current().is_main()


def init_from_env(device: torch.device) -> Dist:
    """Join torchrun's process group once (nccl on CUDA, each rank on cuda:LOCAL_RANK; gloo on CPU).

    Without torchrun (WORLD_SIZE unset or 1) nothing is joined and `device` is returned as is.
    Every rank checks the same things first, so a bad setup fails on all of them alike.
    """
    global _current
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=device)
    if _current is not None and _active():
        return _current
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if per_node > torch.cuda.device_count():
            raise BadInput(f"{per_node} processes per node but {torch.cuda.device_count()} CUDA device(s)",
                           key="device", hint="pass --nproc-per-node at most the number of GPUs")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
        atexit.register(shutdown)
    _current = Dist(rank, world, local, device)
    return _current


def shutdown() -> None:
    global _current
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _current = None


def barrier() -> None:
    if _active():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` as rank `src` has it, on every rank (any picklable value)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over ranks (a new tensor); `t` itself with one process."""
    if not _active():
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t


def reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of a floating `t` over ranks, for logging."""
    return reduce_sum(t) / dist.get_world_size() if _active() else t


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient for this rank's slice.

    Each rank's loss depends on every rank's embeddings, so the gradient of the sum of the losses
    with respect to the local slice needs the other ranks' contributions: all-reduce, then slice.
    DDP's averaging then makes the update that of the mean loss over the global batch.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = len(x)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(world·B)×… rows of every rank in rank order; gradients reach the local B rows. Every rank
    must pass the same shape (data shards have equal length by construction)."""
    return _GatherWithGrad.apply(x) if _active() else x


class DataParallel(nn.parallel.DistributedDataParallel):
    """DDP over a `Method`; forward is the method's forward, every other attribute (student,
    teacher, trainable_state, ...) reads through to the wrapped method."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


def unwrap(method: nn.Module) -> nn.Module:
    """The method inside a DataParallel wrapper (itself otherwise): what names and cache keys describe."""
    return method.module if isinstance(method, DataParallel) else method


def wrap(method: nn.Module, sync_batchnorm: bool, d: Dist | None = None) -> nn.Module:
    """With world > 1: BatchNorm -> SyncBatchNorm in the trainable parts (not the frozen teacher)
    when asked, then DDP so gradients are averaged across ranks. With one process: `method`."""
    d = d or current()
    if d.world <= 1:
        return method
    if sync_batchnorm:
        for name, child in list(method.named_children()):
            if name != "teacher":
                setattr(method, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    dev = next(method.parameters()).device
    # buffers (BatchNorm statistics) are synced once at the start, not at every forward: the
    # teacher's are frozen and only rank 0 evaluates and saves the student's
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DataParallel(method, device_ids=[dev.index] if dev.type == "cuda" else None,
                        find_unused_parameters=False, **no_sync)


def lr_factor(rule: str, world: int) -> float:
    """`linear`: lr × world (the global batch grows world-fold); `sqrt`: lr × √world; `none`: 1."""
    if world <= 1 or rule == "none":
        return 1.0
    return float(world) if rule == "linear" else math.sqrt(world)


def scale_lr(cfg, world: int):
    """`cfg` (a TrainConfig) with the lr its `lr_scaling` rule gives for `world` processes."""
    f = lr_factor(getattr(cfg, "lr_scaling", "linear"), world)
    return cfg if f == 1.0 else cfg.model_copy(update={"lr": cfg.lr * f})


def on_main(fn: Callable[[], Any]) -> None:
    """Run `fn` on rank 0 only, after every rank got here; an error it raises is raised on every
    rank (same class and message for toolkit errors), so all ranks stop alike instead of waiting."""
    if not _active():
        fn()
        return
    dist.barrier()
    failure, caught = None, None
    if is_main():
        try:
            fn()
        except LfccError as err:
            failure, caught = (type(err), err.message, dict(file=err.file, key=err.key, hint=err.hint)), err
        except Exception as err:
            failure, caught = (LfccError, f"rank 0 failed: {type(err).__name__}: {err}", {}), err
    failure = broadcast_object(failure)
    if caught is not None:
        raise caught
    if failure is not None:
        cls, message, kw = failure
        raise cls(message, **kw)
