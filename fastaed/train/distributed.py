"""Data parallelism over ``torchrun`` ranks: process-group setup, rank helpers and gradient all-reduce.

``torchrun --nproc-per-node N -m fastaed train ...`` sets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR /
MASTER_PORT; :func:`setup` joins the process group (gloo on CPU, nccl on CUDA). Without those variables the
job is a single process and every helper here is a no-op.

Why an explicit all-reduce instead of the ``DistributedDataParallel`` reducer: DDP launches its gradient
all-reduces *during* backward. A CUDA out-of-memory in the middle of that backward leaves some buckets
reduced and others not, so the ranks' collectives no longer line up and the job hangs; nothing can be
retried. Here each rank accumulates its gradients locally (where an OOM can be recovered by splitting the
batch, see ``faults.py``) and the ranks then sum them once per optimizer step in a few flat buckets. The cost
is that communication does not overlap the backward pass, a small share of a step with the large per-rank
batches that 2D bucketing and the batch-size search produce. :func:`broadcast_model_` gives the familiar
start-up guarantee of DDP: every rank begins from rank 0's weights.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fastaed.util.devices import resolve_device

GRAD_BUCKET_BYTES = 64 << 20  # gradients are all-reduced in flat buckets of about this size


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


_INFO = DistInfo()
_OWNS_GROUP = False  # setup() created the process group, so cleanup() destroys it


def info() -> DistInfo:
    return _INFO


def enable_expandable_segments() -> None:
    """Let the CUDA caching allocator grow segments in place (less fragmentation with varying batch shapes).

    Must run before the first CUDA allocation: the allocator reads the variable once, at initialisation.
    Newer torch also reads ``PYTORCH_ALLOC_CONF``; a user setting in either is extended, not replaced.
    """
    names = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")
    if any("expandable_segments" in os.environ.get(n, "") for n in names):
        return
    name = next((n for n in names if os.environ.get(n)), "PYTORCH_CUDA_ALLOC_CONF")
    os.environ[name] = ",".join(filter(None, [os.environ.get(name, ""), "expandable_segments:True"]))


def setup(device_choice: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if there is one; returns (rank info, this rank's device)."""
    global _INFO, _OWNS_GROUP
    wants_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    if wants_cuda:
        enable_expandable_segments()
    device = resolve_device(device_choice)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        _OWNS_GROUP = True
    if dist.is_initialized():
        _INFO = DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())
    else:
        _INFO = DistInfo()
    return _INFO, device


def cleanup(finished: bool = True) -> None:
    """Leave the process group if :func:`setup` joined it (a caller's own group is left alone).
    ``finished``: every rank got through its work (False on an error path: no barrier that a crashed rank
    would never reach)."""
    global _INFO, _OWNS_GROUP
    if _OWNS_GROUP and dist.is_initialized():
        leave_group(finished)
    _INFO, _OWNS_GROUP = DistInfo(), False


def leave_group(finished: bool = True) -> None:
    """Destroy the default process group once every rank has finished its collectives.

    The barrier first: without it a fast rank tears its group down (and its process exits) while a gloo
    worker thread of a slower rank still holds the last collective's tensors; that thread then needs the
    GIL during interpreter shutdown and the process aborts ("terminate called without an active
    exception"), seen on a loaded 2-core machine as a SIGABRT after a run had finished."""
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def print0(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only."""
    if _INFO.is_main:
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    if _INFO.enabled:
        dist.barrier()


@contextmanager
def rank0_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a cache), the others after it (and then read the cache)."""
    if not _INFO.is_main:
        barrier()
    yield
    if _INFO.is_main:
        barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place."""
    if _INFO.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not _INFO.enabled:
        return [obj]
    out: list[Any] = [None] * _INFO.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_model_(model: nn.Module) -> nn.Module:
    """Copy rank 0's parameters and buffers to every rank (the start-up guarantee of DDP)."""
    if _INFO.enabled:
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)
    return model


def all_reduce_gradients_(params: Sequence[nn.Parameter]) -> None:
    """Sum every parameter's gradient over ranks, in flat buckets.

    A parameter that has a gradient on some rank gets the sum on every rank (a rank without one, e.g. whose
    whole batch was skipped as bad input, counts as zero). A parameter without a gradient on *every* rank
    (a frozen encoder, an unused head) keeps ``grad = None``, as in a single process: AdamW then leaves its
    weights and moments alone (a zero gradient would still apply weight decay and advance its step). The
    ranks first agree on which parameters have a gradient, so all of them reduce the same tensors.

    The loss is normalised by the *global* token count before backward, so the sum is the gradient of the
    global per-token loss; no division by the world size follows.
    """
    if not _INFO.enabled or not params:
        return
    device = params[0].device
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
    dist.all_reduce(has_grad, op=dist.ReduceOp.SUM)
    grads = []
    for p, anywhere in zip(params, has_grad.tolist(), strict=True):
        if not anywhere:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads:
        bucket.append(g)
        size += g.numel() * g.element_size()
        if size >= GRAD_BUCKET_BYTES:
            _reduce_bucket(bucket)
            bucket, size = [], 0
    if bucket:
        _reduce_bucket(bucket)


def _reduce_bucket(bucket: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in bucket])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in bucket:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
