"""TensorMap (backends/torch_calls.py): the capture's per-pass map from tensors to their
neuron axis, which must behave as torch's WeakTensorKeyDictionary."""

from __future__ import annotations

import gc
import weakref

import torch

from relu_doctor.backends.torch_calls import TensorMap


def test_keys_are_the_tensors_themselves_not_their_values() -> None:
    tags = TensorMap()
    a, b = torch.zeros(3), torch.zeros(3)
    tags[a] = 1
    assert tags.get(a) == 1 and a in tags
    assert tags.get(b) is None and b not in tags and tags.get(b, 7) == 7
    tags[a] = 2
    assert tags.get(a) == 2 and len(tags) == 1
    del tags[a]
    assert a not in tags and tags.get(a) is None
    del tags[b]  # absent: nothing to do, as `del` after an `in` check never needs


def test_a_key_keeps_no_tensor_alive_and_a_dead_keys_id_matches_no_new_tensor() -> None:
    tags = TensorMap()
    a = torch.ones(4)
    tags[a] = 1
    alive = weakref.ref(a)
    del a
    gc.collect()
    assert alive() is None and len(tags) == 0
    # A new tensor at the dead key's address (CPython reuses it; planted here, so that the
    # check does not depend on the allocator): the dead entry is not the new tensor's.
    t, dead = torch.ones(4), torch.ones(4)
    tags._items[id(t)] = (weakref.ref(dead), 1)
    del dead
    gc.collect()
    assert tags.get(t) is None and t not in tags
    tags[t] = 2
    assert tags.get(t) == 2
