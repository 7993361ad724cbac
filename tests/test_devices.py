"""Dtypes and devices: half-precision models are scanned in their own dtype; CUDA where present."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import relu_doctor as rd
from tests.models import case, sample_data

CASE = case("reused_relu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def hook_fires(model: torch.nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    """Naive reference: the activation module's outputs, kept, then counted per channel."""
    outs: list[torch.Tensor] = []
    handle = model.relu.register_forward_hook(lambda m, i, o: outs.append(o.detach().clone()))
    with torch.inference_mode():
        model(x)
    handle.remove()
    return [(o > 0).sum(dim=(0, 2, 3)).cpu().numpy() for o in outs]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_models_are_scanned_in_their_own_dtype(dtype: torch.dtype) -> None:
    model = CASE.build().to(dtype)
    data = sample_data(CASE, n=32)
    report = rd.scan(model, data)
    assert [s.dead_indices for s in report.sites] == [list(s.dead) for s in CASE.sites]
    expected = hook_fires(model, torch.from_numpy(data).to(dtype))
    for site, fires in zip(report.sites, expected, strict=True):
        np.testing.assert_array_equal(site.counters.fires, fires)


def test_unknown_device_is_a_user_error() -> None:
    with pytest.raises(rd.UserError, match="unknown --device"):
        rd.scan(CASE.build(), sample_data(CASE, n=4), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(rd.UserError, match="no CUDA device"):
            rd.scan(CASE.build(), sample_data(CASE, n=4), device="cuda")


@pytest.mark.gpu
@needs_cuda
def test_cuda_scan_equals_cpu_scan() -> None:
    data = sample_data(CASE, n=64)
    cpu = rd.scan(CASE.build(), data, device="cpu")
    gpu = rd.scan(CASE.build(), data, device="cuda")
    for a, b in zip(cpu.sites, gpu.sites, strict=True):
        assert a.name == b.name and a.dead_indices == b.dead_indices
        np.testing.assert_array_equal(a.counters.fires, b.counters.fires)
        np.testing.assert_allclose(a.counters.abs_sum, b.counters.abs_sum, rtol=1e-5)


@pytest.mark.gpu
@needs_cuda
def test_cuda_scan_does_not_move_the_callers_module() -> None:
    model = CASE.build()
    rd.scan(model, sample_data(CASE, n=8), device="cuda")
    assert next(model.parameters()).device.type == "cpu"


class _Hog(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x.new_empty(2**45))  # 128 TiB: the allocator refuses at once


def test_a_batch_that_does_not_fit_is_a_clear_user_error() -> None:
    with pytest.raises(rd.UserError, match="does not fit in cpu memory") as e:
        rd.scan(_Hog(), input_shape=(3,), samples=4)
    assert "--batch-size auto" in str(e.value.hint)


@pytest.mark.parametrize("free, expected", [(2**50, 40), (0, 1)])
def test_auto_batch_size_is_bounded_by_the_sample_and_by_one(free: int, expected: int,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory for millions of samples: the batch is the whole sample of 40; memory for none:
    one sample at a time. Either way the scan gives the planted answer."""
    from relu_doctor.backends import torch_memory

    monkeypatch.setattr(torch_memory, "free_bytes", lambda device: free)
    report = rd.scan(CASE.build(), sample_data(CASE, n=40), batch_size="auto")
    assert report.sample["batch_size"] == expected
    assert [s.dead_indices for s in report.sites] == [list(s.dead) for s in CASE.sites]
