"""Issue 14's capture cases in every format, against explicit math on the planted model.

Each case of tests/models.py's CAPTURE_CASES runs as the module, a TorchScript trace and
script (where the model scripts), a .pt2 and an ONNX export, on the same data. The
reference computes each activation with plain torch ops written out here (einsum as a
sum of products, the RNN as its loop, the encoder layer's feed-forward from its weights),
never through relu-doctor's capture, and reads the dead neurons off it."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import relu_doctor as rd
from tests.models import CAPTURE_CASES, Case, sample_data

FORMATS = ("module", "trace", "script", "pt2", "onnx")
# scripted, the layer's fast-path conditions are graph control flow around the fused kernel
# and the relu: both come from the same module, so the site keeps its name


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dead(y: torch.Tensor, axis: int) -> list[int]:
    per_neuron = y.movedim(axis, 0).reshape(y.shape[axis], -1)
    return [int(i) for i in torch.nonzero(per_neuron.amax(dim=1) <= 0).flatten()]


def reference(c: Case, model: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, int, list[int]]]:
    """(neurons, axis, dead) of every site, from explicit math on the model's weights."""
    out: list[tuple[int, int, list[int]]] = []

    def site(y: torch.Tensor, axis: int) -> None:
        out.append((y.shape[axis], axis, _dead(y, axis)))

    with torch.no_grad():
        if c.name == "linear_maps":
            m = model
            h = F.relu((x[..., None, :] * m.w1).sum(-1) + m.b1)  # einsum btd,fd->btf
            site(h, 2)
            h = F.relu((h[..., :, None] * m.w2).sum(-2) + m.b2)  # tensordot over the last axis
            site(h, 2)
            h = F.relu((h[..., :, None] * m.w3).sum(-2) + m.b3)  # bmm
            site(h, 2)
            site(F.relu(h.reshape(len(x), -1) @ m.head.weight.T + m.head.bias), 1)
        elif c.name == "channels_last":
            m = model
            a = m.bn1(m.conv1(x))  # (B, C, H, W): channels are axis 1 before the permute
            site(F.relu(a).movedim(1, 3), 3)
            b = m.bn2(m.conv2(F.relu(a)))
            site(F.relu(b).flatten(2).transpose(1, 2), 2)
        elif c.name == "relu_rnn":
            rnn, h_in = model.rnn, x
            for layer in range(2):
                w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
                b = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")
                h, states = torch.zeros(len(x), 10), []
                for t in range(h_in.shape[1]):
                    h = F.relu(h_in[:, t] @ w_ih.T + h @ w_hh.T + b)
                    states.append(h)
                h_in = torch.stack(states, 1)
                site(h_in, 2)
        elif c.name == "encoder_layer":
            layer = model.layer
            attn = layer.self_attn
            q, k, v = (x @ attn.in_proj_weight.T + attn.in_proj_bias).chunk(3, dim=-1)

            def heads(t: torch.Tensor) -> torch.Tensor:
                return t.reshape(len(x), -1, 2, 6).transpose(1, 2)

            scores = heads(q) @ heads(k).transpose(-1, -2) / 6 ** 0.5
            mixed = (scores.softmax(-1) @ heads(v)).transpose(1, 2).reshape(len(x), -1, 12)
            h = layer.norm1(x + attn.out_proj(mixed))
            site(F.relu(layer.linear1(h)), 2)
    return out


def _saved(c: Case, fmt: str, model: torch.nn.Module, example: torch.Tensor) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "module":
            return model
        if fmt == "trace":
            with torch.no_grad():
                return torch.jit.trace(model, (example,))
        if fmt == "script":
            return torch.jit.script(model)
        if fmt == "pt2":
            batch = torch.export.Dim("batch", min=2)
            return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        import onnx

        buffer = io.BytesIO()
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "b"}, "output": {0: "b"}})
        return onnx.load_from_string(buffer.getvalue())


def _params() -> Iterator[object]:
    for c in CAPTURE_CASES:
        for fmt in FORMATS:
            # torch.export dominates the run time: the .pt2 runs are the slow tier (tests/test_zoo.py
            # runs einsum, channels-last and encoder .pt2 files in the quick one)
            marks = [pytest.mark.slow] if fmt == "pt2" else []
            yield pytest.param(c, fmt, id=f"{c.name}-{fmt}", marks=marks)


@pytest.mark.parametrize(("c", "fmt"), list(_params()))
def test_every_format_reports_the_planted_dead_neurons(c: Case, fmt: str) -> None:
    model = c.build()
    data = sample_data(c, n=24, seed=3)
    want = reference(c, model, torch.from_numpy(data))
    # the reference sees exactly the planted answer
    assert want == [(s.neurons, s.axis, list(s.dead)) for s in c.sites]
    report = rd.scan(_saved(c, fmt, model, torch.from_numpy(sample_data(c, n=4, seed=9))), data=data, batch_size=8)
    got = [(s.neurons, s.axis, s.dead_indices) for s in report.sites]
    assert got == want, [(s.name, s.op, s.shape) for s in report.sites]
    assert [s.kind for s in report.sites] == [s.kind for s in c.sites]
    assert not any("names are generic" in w for w in report.warnings)
    if fmt != "onnx":  # ONNX names sites by node
        assert [s.name for s in report.sites] == [s.name for s in c.sites]


def test_item_in_eager_forward() -> None:
    """`.item()` returns a Python number: the capture follows tensors only."""

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(6, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scale = 1.0 + 0.0 * x.abs().max().item()
            return F.relu(self.fc(x) * scale)

    torch.manual_seed(0)
    model = Scaled().eval()
    with torch.no_grad():
        model.fc.weight[1].zero_()
        model.fc.bias[1] = -1.0
    data = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    report = rd.scan(model, data=data, batch_size=8)
    with torch.no_grad():
        want = _dead(F.relu(model.fc(torch.from_numpy(data))), 1)
    assert [s.dead_indices for s in report.sites] == [want] and 1 in want


def test_fused_encoder_layer_in_a_trace_is_measured_from_its_arguments() -> None:
    """A trace of the layer in eval holds one fused kernel and no relu: the site is still
    there, measured by recomputing the feed-forward from the kernel's arguments."""
    c = next(c for c in CAPTURE_CASES if c.name == "encoder_layer")
    model = c.build()
    traced = _saved(c, "trace", model, torch.from_numpy(sample_data(c, n=4, seed=9)))
    kinds = [n.kind() for n in traced.inlined_graph.nodes()]  # type: ignore[attr-defined]
    assert "aten::_transformer_encoder_layer_fwd" in kinds and "aten::relu" not in kinds
    report = rd.scan(traced, data=sample_data(c, n=16), batch_size=8)
    assert [(s.name, s.op, s.dead_indices) for s in report.sites] == [
        ("layer/relu", "aten._transformer_encoder_layer_fwd", sorted(c.sites[0].dead))]


class _FusedCalls(torch.nn.Module):
    """Kernels that apply a relu inside them, called directly: _addmm_activation (linear +
    relu, as compiled graphs call it) and _add_relu (add + relu, from mobile-optimized
    TorchScript)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 8)
        self.conv = torch.nn.Conv2d(3, 5, 1)
        self.shift = torch.nn.Parameter(torch.zeros(1, 5, 1, 1))

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        h = torch.ops.aten._addmm_activation(self.fc.bias, x, self.fc.weight.t())
        c = torch.ops.aten._add_relu(self.conv(image), self.shift)
        return h.sum(1) + c.mean((1, 2, 3))


@pytest.mark.parametrize("fmt", ["module", "trace"])
def test_fused_relu_kernels_are_measured(fmt: str) -> None:
    torch.manual_seed(0)
    model = _FusedCalls().eval()
    with torch.no_grad():
        model.fc.weight[[1, 6]] = 0.0
        model.fc.bias.copy_(torch.rand(8) * 0.3 + 0.3)
        model.fc.bias[[1, 6]] = -1.0
        model.conv.weight[3] = 0.0
        model.conv.bias.copy_(torch.rand(5) * 0.3 + 0.3)
        model.conv.bias[3] = -1.0
    rng = np.random.default_rng(0)
    x, image = rng.standard_normal((16, 6)).astype(np.float32), rng.standard_normal((16, 3, 4, 4)).astype(np.float32)
    with torch.no_grad():  # the reference: the same math, unfused
        tx, timage = torch.from_numpy(x), torch.from_numpy(image)
        want = [(8, 1, _dead(F.relu(model.fc(tx)), 1)), (5, 1, _dead(F.relu(model.conv(timage)), 1))]
    assert [w[2] for w in want] == [[1, 6], [3]]
    subject = model if fmt == "module" else torch.jit.trace(model, (tx[:2], timage[:2]))
    report = rd.scan(subject, data={"x": x, "image": image}, batch_size=8)
    assert [(s.neurons, s.axis, s.dead_indices) for s in report.sites] == want
    assert [s.op for s in report.sites] == ["aten._addmm_activation", "aten._add_relu"]


class _Branches(torch.nn.Module):
    """Scripted control flow around relus: named where the branches cannot change the origin."""

    __constants__ = ["same_module"]  # folded when scripted: the graph holds one of the two branches

    def __init__(self, same_module: bool) -> None:
        super().__init__()
        self.a, self.b = torch.nn.ReLU(), torch.nn.ReLU()
        self.same_module = same_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x.sum() > 0):
            x = self.a(x)
        elif self.same_module:
            x = self.a(x - 1)
        else:
            x = self.b(x - 1)
        return x


@pytest.mark.parametrize("same_module", [True, False])
def test_scripted_branches_name_sites_only_when_unambiguous(same_module: bool) -> None:
    scripted = torch.jit.script(_Branches(same_module))
    data = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    report = rd.scan(scripted, data=data, batch_size=4)
    generic = any("names are generic" in w for w in report.warnings)
    assert generic is not same_module
    if same_module:
        assert {s.name for s in report.sites} == {"a"}


def test_pt2_sites_inside_a_fused_kernel_are_named_and_never_patched(tmp_path: object) -> None:
    """A .pt2 relu RNN: its layers are sites named as the capture names them, and a patch
    that selects them is refused with a hint (exit 2), not a mismatch."""
    from pathlib import Path

    from relu_doctor.errors import UserError
    from relu_doctor.patching import patch_file
    from relu_doctor.patching.torch_export import graph_sites

    c = next(c for c in CAPTURE_CASES if c.name == "relu_rnn")
    model = c.build()
    program = _saved(c, "pt2", model, torch.from_numpy(sample_data(c, n=4, seed=9)))
    names = [name for name, _ in graph_sites(program.module().graph)]  # type: ignore[attr-defined]
    assert names == [s.name for s in c.sites]
    folder = Path(str(tmp_path))
    torch.export.save(program, folder / "rnn.pt2")  # type: ignore[arg-type]
    np.save(folder / "data.npy", sample_data(c, n=16))
    with pytest.raises(UserError, match="inside a fused kernel"):
        patch_file(folder / "rnn.pt2", folder / "out.pt2",
                   options=rd.patching.ScanOptions(data=str(folder / "data.npy")))


class _Cond(torch.nn.Module):
    """torch.cond: a relu on batches whose first column is positive on average, else none."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x[:, 0].mean() > 0, lambda t: F.relu(t - 1), lambda t: t * 2, (x,))


# .pt2 first: on torch 2.13, once torch.cond has run eagerly under any dispatch mode (torch's
# own included), exporting a model with torch.cond fails in this process
@pytest.mark.parametrize("fmt", ["pt2", "module"])
def test_torch_cond_measures_the_branch_it_takes(fmt: str) -> None:
    """It failed with a traceback: the capture mode had no rule for higher-order ops, and an
    eager torch.cond compiles, which loads dynamo in the middle of the scan."""
    x = np.random.default_rng(0).standard_normal((24, 6)).astype(np.float32)
    x[:, 0] = np.abs(x[:, 0]) * np.repeat([-1, 1, -1], 8)  # batches of 8: only the second takes the relu
    subject: object = _Cond()
    if fmt == "pt2":
        subject = torch.export.export(_Cond(), (torch.from_numpy(x[:8]),),
                                      dynamic_shapes=({0: torch.export.Dim("b", min=2)},))
    report = rd.scan(subject, data=x, batch_size=8)
    taken = x[8:16] - 1  # the reference: the relu's input on the batch that takes it
    dead = [int(i) for i in np.flatnonzero((taken <= 0).all(0))]
    assert [(s.kind, s.dead_indices) for s in report.sites] == [("relu", dead)]
    assert report.sites[0].to_dict()["counters"]["samples"] == 8


@pytest.mark.slow
def test_torch_cond_in_a_process_that_has_not_loaded_dynamo() -> None:
    """The eager torch.cond loads dynamo during the first batch; the scan then starts over
    with compiled code running eagerly (a fresh process: here dynamo is long loaded), still in
    eval mode (the first try used to restore train mode before the second)."""
    import subprocess
    import sys

    code = """if True:
        import sys, numpy as np, torch, relu_doctor as rd
        from tests.test_capture_cases import _Cond
        assert "torch._dynamo" not in sys.modules

        class Normed(torch.nn.Module):  # built in train mode, as a user may pass it
            def __init__(self):
                super().__init__()
                self.norm, self.cond = torch.nn.BatchNorm1d(6), _Cond()

            def forward(self, x):
                return self.cond(self.norm(x))

        model = Normed()
        x = np.random.default_rng(0).standard_normal((24, 6)).astype(np.float32)
        x[:, 0] = np.abs(x[:, 0]) * np.repeat([-1, 1, -1], 8)
        report = rd.scan(model, data=x, batch_size=8)
        untouched = torch.equal(model.norm.running_mean, torch.zeros(6)) and int(model.norm.num_batches_tracked) == 0
        print([(s.kind, s.to_dict()["counters"]["samples"]) for s in report.sites], untouched, model.training)
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # the second try ran in eval mode too (the model's statistics unchanged), then train mode came back
    assert done.stdout.strip() == "[('relu', 8)] True True"


class _ScalarRelu(torch.nn.Module):
    """A relu of a scalar parameter beside a relu of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * torch.relu(self.gain)


@pytest.mark.parametrize("fmt", ["module", "script", "pt2"])
def test_a_relu_of_a_scalar_is_one_neuron_per_forward_pass(fmt: str) -> None:
    """It failed with an IndexError in every torch format (a 0-dim activation has no sample axis)."""
    data = np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32)
    subject: object = _ScalarRelu()
    if fmt == "script":
        subject = torch.jit.script(subject)
    elif fmt == "pt2":
        subject = torch.export.export(_ScalarRelu(), (torch.from_numpy(data[:8]),),
                                      dynamic_shapes=({0: torch.export.Dim("b", min=2)},))
    report = rd.scan(subject, data=data, batch_size=8)
    scalar = report.sites[1].to_dict()
    assert (scalar["neurons"], scalar["counters"]["samples"], scalar["counters"]["fires"]) == (1, 2, [2])
    assert any("one number per forward pass" in w for w in report.warnings)
