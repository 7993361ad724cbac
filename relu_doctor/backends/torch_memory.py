"""--batch-size auto for torch models: the largest batch whose activations fit in memory.

One probe forward of a single sample adds up the bytes of every tensor the model produces
(an upper bound: inference frees most of them on the way), then a quarter of the free
memory of the device, divided by that, is the batch. A probe costs one sample's forward.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..inputs import Sample

MAX_AUTO_BATCH = 4096
MEMORY_SHARE = 0.25


class _BytesProduced(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.total += sum(t.nbytes for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        return out


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:  # Linux; elsewhere assume 4 GiB free
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 4 * 2**30 if not os.path.exists("/proc/meminfo") else 2**30


def auto_batch_size(model: Any, sample: Sample, to_tensor: Callable[[Any, Any], torch.Tensor]) -> int:
    """`model` is a backends.torch.TorchModel; `to_tensor(array, model)` its input conversion."""
    if model.fixed_batch:
        return model.fixed_batch
    batch = next(replace(sample, count=1).batches(1))  # a copy: the probe is not part of the scan
    probe = _BytesProduced()
    with torch.inference_mode(), probe:
        model.forward(*[to_tensor(a, model) for a in batch.arrays])
    per_sample = max(probe.total, 1)
    fits = int(free_bytes(model.device) * MEMORY_SHARE // per_sample)
    return max(1, min(fits, MAX_AUTO_BATCH, sample.count))
