"""Scans spread over torchrun ranks: each rank scans its shard, counters are all-reduced.

Launched with `torchrun --nproc-per-node N -m relu_doctor scan ...`: torchrun sets
WORLD_SIZE / RANK, every rank scans rows [rank*S/N, (rank+1)*S/N) of the sample, the
counters are summed over torch.distributed (gloo on CPU, nccl on CUDA), and rank 0
alone writes the report. Counts are exact; float sums agree to float64 rounding.
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends import CapturedSite
from .errors import UserError
from .stats import COUNTERS, CounterField, SiteCounters


@dataclass(frozen=True)
class World:
    rank: int
    size: int

    @property
    def is_writer(self) -> bool:
        return self.rank == 0


SINGLE = World(0, 1)


def current_world() -> World:
    """The world a scan splits its sample over: torchrun's (RANK and WORLD_SIZE set), or a
    single process. A process group that a training framework made without torchrun's
    variables (Lightning's DDP sets WORLD_SIZE, not RANK) is not a scan's world: each rank
    then scans alone, so a scan called on one rank (`if trainer.is_global_zero:`) never
    waits for ranks that will not come."""
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1 or (not os.environ.get("RANK", "").strip() and _process_group() is not None):
        return SINGLE
    # Impossible settings would make init_process_group wait forever for ranks that never come
    rank = _env_int("RANK", -1)
    if not 0 <= rank < size:
        raise UserError(f"RANK={os.environ.get('RANK')!r} with WORLD_SIZE={size}: the rank must be in 0..{size - 1}",
                        "Launch with torchrun, which sets RANK and WORLD_SIZE, or unset WORLD_SIZE.")
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise UserError(f"WORLD_SIZE={size} but {' and '.join(missing)} not set",
                        "Launch with torchrun, which sets them, or unset WORLD_SIZE.")
    group = _process_group()
    if group is not None:
        return group
    import torch.distributed as dist

    backend = "nccl" if os.environ.get("RELU_DOCTOR_DIST_BACKEND") == "nccl" else "gloo"
    dist.init_process_group(backend=backend)
    # A process that exits with the group alive can abort in its C++ teardown ("terminate
    # called without an active exception", SIGABRT): 3 of 8 torchrun runs on a 2-core
    # machine. Python's atexit runs before that teardown.
    atexit.register(dist.destroy_process_group)
    return World(dist.get_rank(), dist.get_world_size())


def training_world() -> World:
    """The world a training run's windows are summed over: the process group it trains in,
    whoever made it (torchrun, Lightning, accelerate, the user's own DDP code), where one
    exists; else torchrun's (current_world). Every rank runs the same steps, so every rank
    reaches each window's all-reduce."""
    group = _process_group()
    return group if group is not None else current_world()


def _process_group() -> World | None:
    """The default process group, if this process has one (never imports torch)."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    return World(dist.get_rank(), dist.get_world_size())


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{name}={text!r} is not a whole number",
                        "Launch with torchrun, which sets it, or unset it.") from None


def all_reduce_sites(sites: list[CapturedSite], world: World) -> list[CapturedSite]:
    """Sum every rank's counters; all ranks must have met the same sites in the same order."""
    if world.size == 1:
        return sites
    import torch.distributed as dist

    signatures: list[object] = [None] * world.size
    dist.all_gather_object(signatures, [(s.name, s.kind, s.counters.neurons) for s in sites])
    if any(sig != signatures[0] for sig in signatures):
        raise UserError("the ranks met different activation sites (data-dependent control flow?)",
                        "Scan without torchrun, or with --shard per job and `relu-doctor merge`.")
    reduced = []
    for site in sites:
        merged = _all_reduce_counters(site.counters)
        reduced.append(CapturedSite(site.name, site.kind, site.op, site.params, site.shape, site.axis, merged))
    return reduced


def _all_reduce_counters(c: SiteCounters) -> SiteCounters:
    """One all-reduce per (dtype, merge) group of the counter schema, every field of the group
    packed into one tensor (per-neuron fields are `neurons` long, scalars 1)."""
    import torch
    import torch.distributed as dist

    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    values = c.values()
    groups: dict[tuple[str, str], list[CounterField]] = {}
    for f in COUNTERS:
        if values[f.name] is not None:  # the same on every rank: the kind decides
            groups.setdefault((f.dtype, f.merge), []).append(f)
    out: dict[str, Any] = dict(values)
    for (dtype, merge), group in groups.items():
        packed = np.concatenate([np.atleast_1d(np.asarray(values[f.name], dtype)) for f in group])
        t = torch.from_numpy(packed.copy()).to(_comm_device())
        dist.all_reduce(t, op=ops[merge])
        flat, start = t.cpu().numpy(), 0
        for f in group:
            width = c.neurons if f.per_neuron else 1
            out[f.name] = flat[start:start + width] if f.per_neuron else flat[start]
            start += width
    return SiteCounters.of(c.neurons, out)


def all_reduce_count(value: int, world: World) -> int:
    if world.size == 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(t)
    return int(t[0])


def _comm_device() -> Any:
    """Where collective tensors must live: NCCL (a DDP training run on GPUs) reduces only CUDA
    tensors, on this rank's current device; gloo reduces CPU tensors."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
