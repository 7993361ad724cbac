"""relu-doctor patch, format by format: the written file leaks exactly where it should.

The checks here do not use relu-doctor's own verifier. They reload the written file with
plain torch / onnxruntime, run fresh random inputs, record the input and output of every
activation call in order, and compare with the catalogue's planted answer: a planted dead
channel's pre-activation is exactly -1, so after the patch it must output exactly
-slope; every other channel must equal ReLU of its input, bit for bit.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import relu_doctor as rd
from relu_doctor.patching import ScanOptions, patch_file
from tests.models import Case, case, sample_data

SLOPE = 0.05

# id: (saved format, scan options, --to, how to reload the output)
FORMATS: dict[str, tuple[str, dict[str, Any], str | None, str]] = {
    "module": ("module", {"trust_pickle": True}, None, "module"),
    "state_dict": ("state_dict", {"arch": True}, None, "module"),
    "safetensors-to-pt2": ("safetensors", {"arch": True}, "pt2", "pt2"),
    "pt2": ("pt2", {}, None, "pt2"),
    "onnx": ("onnx", {}, None, "onnx"),
    "state_dict-to-onnx": ("state_dict", {"arch": True}, "onnx", "onnx"),
    "state_dict-to-torchscript": ("state_dict", {"arch": True}, "torchscript", "torchscript"),
}
EXTENSIONS = {"module": "pt", "pt2": "pt2", "onnx": "onnx", "torchscript": "pt"}
CASES = ["functional", "relu6", "mlp_tokens"]  # functional calls, upper bounds, neurons on the last axis


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory,
          all_formats: Callable[[str], dict[str, Path]]) -> dict[str, tuple[dict[str, Path], Path]]:
    out = {}
    for name in ["functional", "relu6", "mlp_tokens", "reused_relu"]:
        data = tmp_path_factory.mktemp(name) / "data.npy"
        np.save(data, sample_data(case(name), n=48, seed=1))
        out[name] = (all_formats(name), data)
    return out


def options(c: Case, data: Path, extra: dict[str, Any]) -> ScanOptions:
    kwargs = {k: (c.factory if k == "arch" else v) for k, v in extra.items()}
    return ScanOptions(data=data, device="cpu", **kwargs)


# ---- recording every activation call of a reloaded model, independently of relu-doctor ----


@dataclass
class Call:
    kind: str  # relu | relu6 | prelu | leaky_relu
    x: np.ndarray
    y: np.ndarray


class _Record(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Call] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        op = func._overloadpacket.__name__
        kind = None
        if op in ("relu", "relu_"):
            kind = "relu"
        elif op in ("prelu", "_prelu_kernel", "leaky_relu", "leaky_relu_"):
            kind = op.strip("_").replace("prelu_kernel", "prelu")
        elif op in ("hardtanh", "hardtanh_") and tuple(args[1:3]) == (0.0, 6.0):
            kind = "relu6"
        elif op in ("clamp", "clamp_") and len(args) > 1 and args[1] == 0:
            kind = "relu"
        if kind is not None:
            self.calls.append(Call(kind, args[0].detach().clone().numpy(), out.detach().clone().numpy()))
        return out


def torch_calls(model: Any, x: np.ndarray) -> list[Call]:
    with torch.no_grad(), _Record() as rec:
        model(torch.from_numpy(x))
    return rec.calls


def onnx_calls(path: Path, x: np.ndarray) -> list[Call]:
    """Every Relu / PRelu / LeakyRelu / Clip(0, 6) node's input and output, in graph order."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    kinds = {"Relu": "relu", "PRelu": "prelu", "LeakyRelu": "leaky_relu", "Clip": "relu6"}
    # a Clip without a lower bound is the upper bound kept before a leak, not a site
    nodes = [n for n in model.graph.node
             if n.op_type in kinds and not (n.op_type == "Clip" and (len(n.input) < 2 or not n.input[1]))]
    for n in nodes:
        model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in (n.input[0], n.output[0])
                                  if name not in {o.name for o in model.graph.output})
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, {session.get_inputs()[0].name: x})))
    return [Call(kinds[n.op_type], values[n.input[0]], values[n.output[0]]) for n in nodes]


def reload_calls(path: Path, how: str, x: np.ndarray) -> list[Call]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if how == "module":
            return torch_calls(torch.load(path, weights_only=False), x)
        if how == "pt2":
            return torch_calls(torch.export.load(path).module(), x)
        if how == "torchscript":
            return torch_calls(torch.jit.load(str(path)), x)
    return onnx_calls(path, x)


def neuron_axis(x: np.ndarray, neurons: int) -> int:
    """Where the neurons are in a leaky op's input: torch moves them to axis 1 for its prelu."""
    if x.shape[1] == neurons:
        return 1
    return max(i for i, d in enumerate(x.shape) if d == neurons)


def check_leaky_call(call: Call, neurons: int, dead: tuple[int, ...], slope: float, mode: str = "channel") -> None:
    assert call.kind == ("prelu" if mode == "channel" else "leaky_relu")
    x, y = call.x, call.y
    axis = neuron_axis(x, neurons)
    moved_x, moved_y = np.moveaxis(x, axis, 0), np.moveaxis(y, axis, 0)
    live = [i for i in range(neurons) if i not in dead]
    if mode == "channel":
        relu = np.where(moved_x[live] > 0, moved_x[live], np.float32(0))
        assert np.array_equal(moved_y[live].view(np.uint32), relu.view(np.uint32)), "live neurons changed bits"
    else:
        leak = np.where(moved_x > 0, moved_x, moved_x * np.float32(slope))
        np.testing.assert_allclose(moved_y, leak, rtol=1e-6, atol=0)
    # planted dead: pre-activation exactly -1, so the leak is exactly -slope, on every input
    assert np.all(moved_x[list(dead)] == -1)
    assert np.all(moved_y[list(dead)] == np.float32(-1) * np.float32(slope))


# ---- every format --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("name", CASES)
def test_patched_file_leaks_exactly_the_dead_neurons(name: str, fmt: str, saved: dict, tmp_path: Path) -> None:
    c = case(name)
    paths, data = saved[name]
    source, extra, to, how = FORMATS[fmt]
    model = paths[source]
    before = sha256(model)
    out = tmp_path / f"patched.{EXTENSIONS[how]}"
    outcome = patch_file(model, out, options=options(c, data, extra), slope=SLOPE, to=to)
    assert outcome.written and out.is_file()
    assert sha256(model) == before, "MODEL changed"
    assert [p.index for p in outcome.plan.sites] == list(range(len(c.sites)))
    assert outcome.verification is not None and outcome.verification.ok
    assert outcome.verification.leaking == outcome.verification.negative_inputs > 0

    calls = reload_calls(out, how, sample_data(c, n=16, seed=1234))  # fresh inputs, never scanned
    assert len(calls) == len(c.sites)
    for site, call in zip(c.sites, calls):
        check_leaky_call(call, site.neurons, site.dead, SLOPE)

    rescan = rd.scan(out, data=str(data), trust_pickle=True, fail_dead_ratio=0.0)
    assert rescan.gates.passed
    assert [s.kind for s in rescan.sites] == ["prelu"] * len(c.sites)
    assert [s.dead_indices for s in rescan.sites] == [list(s.dead) for s in c.sites]  # dead, but leaking now


@pytest.mark.parametrize("fmt", ["module", "pt2", "onnx"])
def test_layer_mode_makes_every_neuron_leak(fmt: str, saved: dict, tmp_path: Path) -> None:
    c = case("relu6")
    paths, data = saved["relu6"]
    source, extra, to, how = FORMATS[fmt]
    out = tmp_path / f"patched.{EXTENSIONS[how]}"
    patch_file(paths[source], out, options=options(c, data, extra), mode="layer", slope=SLOPE)
    calls = reload_calls(out, how, sample_data(c, n=8, seed=77))
    for site, call in zip(c.sites, calls):
        check_leaky_call(call, site.neurons, site.dead, SLOPE, mode="layer")
        assert call.x.max() <= 6  # the upper bound is applied before the leak


@pytest.mark.parametrize("fmt", ["module", "state_dict", "pt2", "onnx"])
def test_shared_relu_called_three_times_patches_only_the_selected_call(fmt: str, saved: dict,
                                                                       tmp_path: Path) -> None:
    c = case("reused_relu")
    paths, data = saved["reused_relu"]
    source, extra, to, how = FORMATS[fmt]
    out = tmp_path / f"patched.{EXTENSIONS[how]}"
    outcome = patch_file(paths[source], out, options=options(c, data, extra), select=["*relu#2", "*relu_1*"],
                         slope=SLOPE)
    assert [p.index for p in outcome.plan.sites] == [1]
    calls = reload_calls(out, how, sample_data(c, n=8, seed=5))
    assert [call.kind for call in calls] == ["relu", "prelu", "relu"]
    check_leaky_call(calls[1], 8, c.sites[1].dead, SLOPE)
    rescan = rd.scan(out, data=str(data), trust_pickle=True)
    assert [s.grad_blocked for s in rescan.sites] == [True, False, True]
    assert [s.dead_indices for s in rescan.sites] == [list(s.dead) for s in c.sites]


# ---- the Python API --------------------------------------------------------------------------


def test_api_patch_returns_a_new_module_and_leaves_the_original() -> None:
    c = case("reused_relu")
    model = c.build()
    x = torch.from_numpy(sample_data(c, n=16, seed=3))
    with torch.no_grad():
        want = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    report = rd.scan(model, data=sample_data(c, n=32))
    patched = rd.patch(model, report, slope=SLOPE)
    assert patched is not model
    with torch.no_grad():
        assert torch.equal(model(x), want)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert set(patched.state_dict()) == set(state)  # the slopes are not state: checkpoints still fit
    calls = torch_calls(patched, sample_data(c, n=8, seed=9))
    for site, call in zip(c.sites, calls):
        check_leaky_call(call, site.neurons, site.dead, SLOPE)


def test_fine_tuning_the_patched_module_reaches_the_dead_neurons() -> None:
    c = case("reused_relu")
    model = c.build()
    x = torch.from_numpy(sample_data(c, n=16, seed=8))
    dead = list(c.sites[0].dead)  # bn1's dead channels, before the first relu call

    def bias_grad(m: torch.nn.Module) -> torch.Tensor:
        m.train()
        m.zero_grad()
        m(x).square().sum().backward()
        return m.bn1.bias.grad[dead]

    patched = rd.patch(model, rd.scan(model, data=sample_data(c, n=32)))
    assert torch.all(bias_grad(model) == 0)  # a dying ReLU: no gradient, ever
    assert torch.all(bias_grad(patched) != 0)  # the leak lets it through


def test_api_patch_of_an_exported_program_and_an_onnx_model(saved: dict) -> None:
    import onnx

    c = case("functional")
    paths, data = saved["functional"]
    x = sample_data(c, n=8, seed=4)
    program = torch.export.load(paths["pt2"])
    patched = rd.patch(program, rd.scan(program, data=str(data)), slope=SLOPE)
    assert isinstance(patched, torch.export.ExportedProgram)
    for site, call in zip(c.sites, torch_calls(patched.module(), x)):
        check_leaky_call(call, site.neurons, site.dead, SLOPE)
    proto = onnx.load(str(paths["onnx"]))
    new = rd.patch(proto, rd.scan(proto, data=str(data)), mode="layer", select=["/Relu"], slope=SLOPE)
    assert [n.op_type for n in new.graph.node if n.name == "/Relu"] == ["LeakyRelu"]
    assert [n.op_type for n in proto.graph.node if n.name == "/Relu"] == ["Relu"]  # the input is untouched


def test_a_report_of_another_model_is_refused() -> None:
    other = rd.scan(case("functional").build(), data=sample_data(case("functional"), n=16))
    with pytest.raises(rd.UserError, match="a report of this model"):
        rd.patch(case("reused_relu").build(), other)


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 1)
        self.bn = torch.nn.BatchNorm2d(4)
        with torch.no_grad():
            self.bn.bias.fill_(0.5)
            self.bn.weight[1], self.bn.bias[1] = 0.0, -1.0  # channel 1 is dead on every input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu(self.bn(self.conv(x)))


class _Twice(torch.nn.Module):
    """One block run twice: its functional relu is two sites, but one call in the code."""

    def __init__(self) -> None:
        super().__init__()
        self.block = _Block()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.block(x))


def test_sites_sharing_one_call_cannot_be_patched_apart() -> None:
    torch.manual_seed(0)
    model = _Twice().eval()
    report = rd.scan(model, input_shape=(4, 5, 5), samples=16)
    assert [(s.name, s.dead_indices) for s in report.sites] == [("block/relu", [1]), ("block/relu#2", [1])]
    with pytest.raises(rd.UserError, match="one call in the code"):
        rd.patch(model, report, select=["block/relu"])
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 5), dtype=np.float32)
    for mode in ("layer", "channel"):
        both = rd.patch(model, report, mode=mode)
        calls = torch_calls(both, x)
        assert [call.kind for call in calls] == ["leaky_relu" if mode == "layer" else "prelu"] * 2
