"""Catalogue of small test models whose dead neurons are planted by construction.

Every case is a tiny eval-mode model with a known answer: which ReLU-family
call sites it has (named by relu-doctor's site naming contract), how many
neurons each has, along which axis, and which of them are dead (never > 0) or,
for ReLU6, saturated (always 6).  The answer does not depend on relu-doctor:

* a BatchNorm channel with weight 0 and bias -1 outputs the constant -1, so the
  activation after it is dead on every input;
* a Linear row of zeros with bias -1 does the same for a feature;
* a BatchNorm channel with weight 0 and bias 7 makes ReLU6 output 6 everywhere
  (saturated, not dead).

Live neurons get random weights and a small *positive* BN/Linear bias, so each
is > 0 on a large share (>= 20 %) of standard-normal inputs and none reaches a
ReLU6's 6: no unplanted neuron dies or saturates on any 32-sample batch.

Site naming contract (execution order):

* a call of an activation module: its path in ``model.named_modules()``; the
  2nd, 3rd ... call of the same module get ``#2``, ``#3``;
* a functional call: ``<path of the enclosing module>/<kind>`` (the top-level
  module's path is ``""``, so ``/relu``), numbered the same way on repeats;
* kinds: ``relu`` (relu, clamp(min=0)), ``relu6`` (relu6, hardtanh(0, 6)),
  ``leaky_relu``, ``prelu``, ``rrelu``.

All model classes are module-level so that ``torch.save(model)`` pickles them
and TorchScript can compile them; every case goes through ``torch.jit.script``,
``torch.jit.trace``, ``torch.export`` (dynamic batch) and the TorchScript-based
ONNX exporter (``dynamo=False``, opset 17).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Formats written by save_all_formats, with their file extensions.
FORMAT_EXTENSIONS: dict[str, str] = {
    "module": "pt",
    "state_dict": "pt",
    "checkpoint": "pt",
    "safetensors": "safetensors",
    "script": "pt",
    "trace": "pt",
    "pt2": "pt2",
    "onnx": "onnx",
}
ALL_FORMATS: frozenset[str] = frozenset(FORMAT_EXTENSIONS)

ONNX_OPSET = 17


# --------------------------------------------------------------------------
# Expected answers
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedSite:
    """One ReLU-family call site and its planted answer."""

    name: str
    kind: str  # relu | relu6 | leaky_relu | prelu | rrelu
    neurons: int
    axis: int  # neuron axis in the full output tensor (batch dim included)
    dead: tuple[int, ...]  # sorted planted dead neuron indices
    saturated: tuple[int, ...] = ()  # planted saturated (relu6) indices


@dataclass(frozen=True)
class Case:
    """A catalogue model: how to build it and what relu-doctor must report."""

    name: str
    factory: str  # "tests.models:build_x", usable as relu-doctor's --arch
    input_shape: tuple[int, ...]  # per-sample shape, no batch dim
    sites: tuple[ExpectedSite, ...]  # in execution order
    # Formats this case can be saved in; every current case supports all.
    formats: frozenset[str] = field(default=ALL_FORMATS)

    def build(self) -> nn.Module:
        """Import the factory and call it (a fresh, deterministic eval model)."""
        module_name, _, attr = self.factory.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        model: nn.Module = factory()
        return model


# --------------------------------------------------------------------------
# Planting helpers
# --------------------------------------------------------------------------

DEAD_BIAS = -1.0  # weight 0, bias -1: constant -1 before the activation
SATURATED_BIAS = 7.0  # weight 0, bias 7: ReLU6 outputs 6 everywhere


def _plant_bn(
    bn: nn.BatchNorm1d | nn.BatchNorm2d,
    dead: Sequence[int],
    saturated: Sequence[int] = (),
) -> None:
    """Give a BN layer live random channels plus planted dead/saturated ones.

    Running stats are set to mean 0 / var 1 so the eval-mode BN is an affine
    map we control; live channels get a positive scale and a small positive
    bias so they are > 0 somewhere on any normal input and never reach 6.
    """
    n = bn.num_features
    with torch.no_grad():
        bn.running_mean.zero_()  # type: ignore[union-attr]
        bn.running_var.fill_(1.0)  # type: ignore[union-attr]
        bn.weight.copy_(torch.rand(n) * 0.5 + 0.5)
        bn.bias.copy_(torch.rand(n) * 0.4 + 0.1)
        for i in dead:
            bn.weight[i] = 0.0
            bn.bias[i] = DEAD_BIAS
        for i in saturated:
            bn.weight[i] = 0.0
            bn.bias[i] = SATURATED_BIAS


def _plant_linear(linear: nn.Linear, dead: Sequence[int]) -> None:
    """Give a Linear layer a positive bias and zero rows (bias -1) at `dead`.

    Live rows are made zero-sum: a Linear after a ReLU sees non-negative inputs
    with a common positive mean, and a random row whose weights happen to sum
    well below 0 would then be (unplanted) dead; with zero-sum rows that shared
    offset cancels and the positive bias keeps the neuron > 0 about half the
    time or more.
    """
    n = linear.out_features
    with torch.no_grad():
        assert linear.bias is not None
        linear.weight.sub_(linear.weight.mean(dim=1, keepdim=True))
        linear.bias.copy_(torch.rand(n) * 0.3 + 0.3)
        for i in dead:
            linear.weight[i].zero_()
            linear.bias[i] = DEAD_BIAS


def _conv_bn(cin: int, cout: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A 3x3 same-padding conv (no bias: the BN bias plays that role) and its BN."""
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)


# --------------------------------------------------------------------------
# Models (module-level classes: picklable and scriptable)
# --------------------------------------------------------------------------


class ReusedReluNet(nn.Module):
    """Three conv+BN blocks sharing a single nn.ReLU module (sites relu, relu#2, relu#3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 8)
        self.conv2, self.bn2 = _conv_bn(8, 8)
        self.conv3, self.bn3 = _conv_bn(8, 8)
        self.relu = nn.ReLU()
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.conv3(x)))
        # A head after the last activation so the sites are all intermediate.
        return self.head(x.mean(dim=(2, 3)))


class FunctionalBlock(nn.Module):
    """Four conv+BN stages, each followed by a different functional spelling of relu."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 8)
        self.conv2, self.bn2 = _conv_bn(8, 8)
        self.conv3, self.bn3 = _conv_bn(8, 8)
        self.conv4, self.bn4 = _conv_bn(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x)).relu()
        x = self.bn4(self.conv4(x)).clamp(min=0)
        return x


class FunctionalNet(nn.Module):
    """Functional relus inside a submodule (block/relu ... #4) and one at the top (/relu)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = FunctionalBlock()
        self.conv, self.bn = _conv_bn(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(x)
        return F.relu(self.bn(self.conv(x)))


class InplaceNet(nn.Module):
    """In-place activations: nn.ReLU(inplace=True), torch.relu_, F.relu(inplace=True)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 8)
        self.conv2, self.bn2 = _conv_bn(8, 8)
        self.conv3, self.bn3 = _conv_bn(8, 8)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = torch.relu_(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)), inplace=True)
        return x.mean(dim=(2, 3))


class Relu6Net(nn.Module):
    """nn.ReLU6, F.relu6 and F.hardtanh(0, 6), each with dead and saturated channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 8)
        self.conv2, self.bn2 = _conv_bn(8, 8)
        self.conv3, self.bn3 = _conv_bn(8, 8)
        self.relu6 = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu6(self.bn1(self.conv1(x)))
        x = F.relu6(self.bn2(self.conv2(x)))
        x = F.hardtanh(self.bn3(self.conv3(x)), 0.0, 6.0)
        return x


class LeakyNet(nn.Module):
    """Leaky kinds: nn.LeakyReLU, F.leaky_relu, nn.PReLU(C), nn.RReLU (eval: fixed slope)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 8)
        self.conv2, self.bn2 = _conv_bn(8, 8)
        self.conv3, self.bn3 = _conv_bn(8, 8)
        self.conv4, self.bn4 = _conv_bn(8, 8)
        self.leaky = nn.LeakyReLU(0.1)
        self.prelu = nn.PReLU(num_parameters=8)
        self.rrelu = nn.RReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.leaky(self.bn1(self.conv1(x)))
        x = F.leaky_relu(self.bn2(self.conv2(x)), 0.2)
        x = self.prelu(self.bn3(self.conv3(x)))
        x = self.rrelu(self.bn4(self.conv4(x)))
        return x


class TokenMLP(nn.Module):
    """Per-token MLP on (batch, tokens, features): the neuron axis is the last one."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 10), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLP(nn.Module):
    """Plain two-layer MLP on (batch, features): rank-2 activations, axis 1."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(16, 10)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.fc2(self.relu1(self.fc1(x))))


class Conv1dNet(nn.Module):
    """Conv1d -> BatchNorm1d -> ReLU on (batch, channels, length)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm1d(8)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class HandHardSwishNet(nn.Module):
    """A hard-swish written by hand, h * relu6(h + 3) / 6, then a relu and a relu6.

    The relu6 inside the hard-swish is that smooth activation, not a relu6 site (SPEC 3,
    one rule in every format): the sites are the relu and the real relu6 only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 8)
        self.conv2, self.bn2 = _conv_bn(8, 8)
        self.conv3, self.bn3 = _conv_bn(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn1(self.conv1(x))
        x = h * F.relu6(h + 3.0) / 6.0
        x = F.relu(self.bn2(self.conv2(x)))
        return F.relu6(self.bn3(self.conv3(x)))


class NoReluNet(nn.Module):
    """Conv + BN + tanh + sigmoid head: no ReLU-family activation at all (0 sites)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = _conv_bn(3, 8)
        self.act = nn.Tanh()
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        return torch.sigmoid(self.head(x.mean(dim=(2, 3))))


# --------------------------------------------------------------------------
# Factories (seeded, deterministic, eval mode) and planted indices
# --------------------------------------------------------------------------

REUSED_DEAD = ((1, 5), (0, 3, 6), (2, 7))
FUNCTIONAL_DEAD = ((0,), (2, 3), (5,), (1, 7), (4,))  # block x4, then top level
INPLACE_DEAD = ((6,), (1, 2), (0, 7))
RELU6_DEAD = ((0,), (3, 4), (7,))
RELU6_SATURATED = ((2, 5), (6,), (1, 3))
LEAKY_DEAD = ((1,), (4, 6), (0, 2), (3,))
MLP_TOKENS_DEAD = ((3, 9), (0, 6))
MLP_DEAD = ((2, 11), (5,))
CONV1D_DEAD = (1, 4, 6)
HARDSWISH_DEAD = ((2, 7), (0, 5))
HARDSWISH_SATURATED = (3,)


def build_reused_relu() -> nn.Module:
    """Case `reused_relu`."""
    torch.manual_seed(0)
    model = ReusedReluNet()
    for bn, dead in zip((model.bn1, model.bn2, model.bn3), REUSED_DEAD, strict=True):
        _plant_bn(bn, dead)
    return model.eval()


def build_functional() -> nn.Module:
    """Case `functional`."""
    torch.manual_seed(1)
    model = FunctionalNet()
    b = model.block
    bns = (b.bn1, b.bn2, b.bn3, b.bn4, model.bn)
    for bn, dead in zip(bns, FUNCTIONAL_DEAD, strict=True):
        _plant_bn(bn, dead)
    return model.eval()


def build_inplace() -> nn.Module:
    """Case `inplace`."""
    torch.manual_seed(2)
    model = InplaceNet()
    for bn, dead in zip((model.bn1, model.bn2, model.bn3), INPLACE_DEAD, strict=True):
        _plant_bn(bn, dead)
    return model.eval()


def build_relu6() -> nn.Module:
    """Case `relu6`."""
    torch.manual_seed(3)
    model = Relu6Net()
    bns = (model.bn1, model.bn2, model.bn3)
    for bn, dead, sat in zip(bns, RELU6_DEAD, RELU6_SATURATED, strict=True):
        _plant_bn(bn, dead, sat)
    with torch.no_grad():
        # A saturated channel feeds a constant 6 into the next conv, which would
        # shift some live channels there far below 0 (killing them unplanned);
        # cut those input weights so the next block only sees live signal.
        for conv, sat in zip((model.conv2, model.conv3), RELU6_SATURATED[:2], strict=True):
            conv.weight[:, list(sat)] = 0.0
    return model.eval()


def build_leaky() -> nn.Module:
    """Case `leaky`."""
    torch.manual_seed(4)
    model = LeakyNet()
    bns = (model.bn1, model.bn2, model.bn3, model.bn4)
    for bn, dead in zip(bns, LEAKY_DEAD, strict=True):
        _plant_bn(bn, dead)
    with torch.no_grad():
        # Distinct per-channel slopes so a per-channel PReLU is really exercised.
        model.prelu.weight.copy_(torch.linspace(0.05, 0.4, 8))
    return model.eval()


def build_mlp_tokens() -> nn.Module:
    """Case `mlp_tokens`."""
    torch.manual_seed(5)
    model = TokenMLP()
    linears = (model.net[0], model.net[2])
    for linear, dead in zip(linears, MLP_TOKENS_DEAD, strict=True):
        assert isinstance(linear, nn.Linear)
        _plant_linear(linear, dead)
    return model.eval()


def build_mlp() -> nn.Module:
    """Case `mlp`."""
    torch.manual_seed(6)
    model = MLP()
    for linear, dead in zip((model.fc1, model.fc2), MLP_DEAD, strict=True):
        _plant_linear(linear, dead)
    return model.eval()


def build_conv1d() -> nn.Module:
    """Case `conv1d`."""
    torch.manual_seed(7)
    model = Conv1dNet()
    _plant_bn(model.bn, CONV1D_DEAD)
    return model.eval()


def build_hand_hardswish() -> nn.Module:
    """Case `hand_hardswish` (the hard-swish's own BN is live: hard-swish is never "dead")."""
    torch.manual_seed(9)
    model = HandHardSwishNet()
    _plant_bn(model.bn1, ())
    _plant_bn(model.bn2, HARDSWISH_DEAD[0])
    _plant_bn(model.bn3, HARDSWISH_DEAD[1], HARDSWISH_SATURATED)
    return model.eval()


def build_no_relu() -> nn.Module:
    """Case `no_relu`."""
    torch.manual_seed(8)
    model = NoReluNet()
    _plant_bn(model.bn, ())
    return model.eval()


# --------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------


def _factory(name: str) -> str:
    # Spelled out (not __name__): the contract is "importable from the repo
    # root", whatever name this file happened to be imported under.
    return f"tests.models:build_{name}"


CASES: list[Case] = [
    Case(
        name="reused_relu",
        factory=_factory("reused_relu"),
        input_shape=(3, 8, 8),
        sites=tuple(
            ExpectedSite(name, "relu", 8, 1, dead)
            for name, dead in zip(("relu", "relu#2", "relu#3"), REUSED_DEAD, strict=True)
        ),
    ),
    Case(
        name="functional",
        factory=_factory("functional"),
        input_shape=(3, 8, 8),
        sites=(
            ExpectedSite("block/relu", "relu", 8, 1, FUNCTIONAL_DEAD[0]),  # F.relu
            ExpectedSite("block/relu#2", "relu", 8, 1, FUNCTIONAL_DEAD[1]),  # torch.relu
            ExpectedSite("block/relu#3", "relu", 8, 1, FUNCTIONAL_DEAD[2]),  # x.relu()
            ExpectedSite("block/relu#4", "relu", 8, 1, FUNCTIONAL_DEAD[3]),  # clamp(min=0)
            ExpectedSite("/relu", "relu", 6, 1, FUNCTIONAL_DEAD[4]),  # top-level F.relu
        ),
    ),
    Case(
        name="inplace",
        factory=_factory("inplace"),
        input_shape=(3, 8, 8),
        sites=(
            ExpectedSite("relu", "relu", 8, 1, INPLACE_DEAD[0]),  # nn.ReLU(inplace=True)
            ExpectedSite("/relu", "relu", 8, 1, INPLACE_DEAD[1]),  # torch.relu_
            ExpectedSite("/relu#2", "relu", 8, 1, INPLACE_DEAD[2]),  # F.relu(inplace=True)
        ),
    ),
    Case(
        name="relu6",
        factory=_factory("relu6"),
        input_shape=(3, 8, 8),
        sites=(
            ExpectedSite("relu6", "relu6", 8, 1, RELU6_DEAD[0], RELU6_SATURATED[0]),
            ExpectedSite("/relu6", "relu6", 8, 1, RELU6_DEAD[1], RELU6_SATURATED[1]),
            # F.hardtanh(x, 0, 6) is a relu6 too, so it continues the /relu6 count.
            ExpectedSite("/relu6#2", "relu6", 8, 1, RELU6_DEAD[2], RELU6_SATURATED[2]),
        ),
    ),
    Case(
        name="leaky",
        factory=_factory("leaky"),
        input_shape=(3, 8, 8),
        sites=(
            ExpectedSite("leaky", "leaky_relu", 8, 1, LEAKY_DEAD[0]),
            ExpectedSite("/leaky_relu", "leaky_relu", 8, 1, LEAKY_DEAD[1]),
            ExpectedSite("prelu", "prelu", 8, 1, LEAKY_DEAD[2]),
            ExpectedSite("rrelu", "rrelu", 8, 1, LEAKY_DEAD[3]),
        ),
    ),
    Case(
        name="mlp_tokens",
        factory=_factory("mlp_tokens"),
        input_shape=(5, 12),
        sites=(
            ExpectedSite("net.1", "relu", 16, 2, MLP_TOKENS_DEAD[0]),
            ExpectedSite("net.3", "relu", 10, 2, MLP_TOKENS_DEAD[1]),
        ),
    ),
    Case(
        name="mlp",
        factory=_factory("mlp"),
        input_shape=(12,),
        sites=(
            ExpectedSite("relu1", "relu", 16, 1, MLP_DEAD[0]),
            ExpectedSite("relu2", "relu", 10, 1, MLP_DEAD[1]),
        ),
    ),
    Case(
        name="conv1d",
        factory=_factory("conv1d"),
        input_shape=(4, 20),
        sites=(ExpectedSite("relu", "relu", 8, 1, CONV1D_DEAD),),
    ),
    Case(
        name="hand_hardswish",
        factory=_factory("hand_hardswish"),
        input_shape=(3, 8, 8),
        sites=(
            ExpectedSite("/relu", "relu", 8, 1, HARDSWISH_DEAD[0]),
            ExpectedSite("/relu6", "relu6", 8, 1, HARDSWISH_DEAD[1], HARDSWISH_SATURATED),
        ),
    ),
    Case(
        name="no_relu",
        factory=_factory("no_relu"),
        input_shape=(3, 8, 8),
        sites=(),
    ),
]

_BY_NAME: dict[str, Case] = {c.name: c for c in CASES}


def case(name: str) -> Case:
    """The catalogue case called `name` (KeyError lists the known names)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no catalogue case {name!r}; known: {sorted(_BY_NAME)}") from None


def sample_data(case: Case, n: int = 64, seed: int = 0) -> np.ndarray:
    """`n` standard-normal float32 samples of shape (n, *case.input_shape)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *case.input_shape), dtype=np.float32)


# --------------------------------------------------------------------------
# Saving in every format
# --------------------------------------------------------------------------


def _export_pt2(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export with a dynamic batch dimension, so the .pt2 takes any batch size."""
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def save_model(model: nn.Module, shape: Sequence[int], fmt: str, path: Path) -> Path:
    """Write `model` (per-sample input `shape`) as a pickled module ("pt"), a .pt2 or ONNX
    ("onnx"), each with a dynamic batch axis: for tests that rewrite and rerun one file."""
    example = torch.randn(2, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "pt":
            torch.save(model, path)
        elif fmt == "pt2":
            torch.export.save(_export_pt2(model, example), path)
        else:
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"],
                              output_names=["output"], dynamic_axes={"input": {0: "b"}, "output": {0: "b"}})
    return path


def run_saved(path: Path, x: np.ndarray) -> np.ndarray:
    """The outputs of the model file `path` (as save_model writes them) on `x`."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        return ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    from relu_doctor.loading import load_model

    obj = load_model(path, trust_pickle=True).obj
    module = obj.module() if isinstance(obj, torch.export.ExportedProgram) else obj
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def save_all_formats(case: Case, folder: Path | str) -> dict[str, Path]:
    """Write `case` in each of its formats under `folder`; return format -> path.

    File names are ``<case>.<format>.<ext>``.  The example input is a batch of
    4 from sample_data; the .pt2 and .onnx files have a dynamic batch axis.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = case.build()
    example = torch.from_numpy(sample_data(case, n=4, seed=1))
    paths: dict[str, Path] = {}

    def path(fmt: str) -> Path:
        p = folder / f"{case.name}.{fmt}.{FORMAT_EXTENSIONS[fmt]}"
        paths[fmt] = p
        return p

    with warnings.catch_warnings():
        # torch.jit.* and the TorchScript-based ONNX exporter warn that they
        # are deprecated; writing those formats is the point here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        _save(case, model, example, path)
    return paths


def _save(
    case: Case,
    model: nn.Module,
    example: torch.Tensor,
    path: Callable[[str], Path],
) -> None:
    """Write each format of case.formats, asking `path(fmt)` where to put it."""
    # Detached copies: safetensors refuses tensors sharing storage / non-contiguous.
    state_dict = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}

    if "module" in case.formats:
        torch.save(model, path("module"))
    if "state_dict" in case.formats:
        torch.save(model.state_dict(), path("state_dict"))
    if "checkpoint" in case.formats:
        torch.save({"epoch": 3, "state_dict": model.state_dict()}, path("checkpoint"))
    if "safetensors" in case.formats:
        from safetensors.torch import save_file

        save_file(state_dict, str(path("safetensors")))
    if "script" in case.formats:
        torch.jit.script(model).save(str(path("script")))
    if "trace" in case.formats:
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        traced.save(str(path("trace")))
    if "pt2" in case.formats:
        torch.export.save(_export_pt2(model, example), path("pt2"))
    if "onnx" in case.formats:
        torch.onnx.export(
            model,
            (example,),
            str(path("onnx")),
            dynamo=False,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=ONNX_OPSET,
        )


# --------------------------------------------------------------------------
# Capture cases (issue 14): ops and layouts that trip activation capture.
# Not in CASES (every format of every test module): tests/test_capture_cases.py runs
# them through the module, TorchScript, .pt2 and ONNX against explicit math.
# --------------------------------------------------------------------------


class LinearMapsNet(nn.Module):
    """Linear maps over the last axis written as einsum, tensordot, bmm and matmul, with
    `.to(dtype)` (a None-returning assert in .pt2) and `x.view(x.size(0), -1)` (aten::size
    in a trace): every relu's neurons are the last axis."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(10, 12) / 4)
        self.b1 = nn.Parameter(torch.rand(10) * 0.3 + 0.3)
        self.w2 = nn.Parameter(torch.randn(10, 9) / 4)
        self.b2 = nn.Parameter(torch.rand(9) * 0.3 + 0.3)
        self.w3 = nn.Parameter(torch.randn(9, 7) / 4)
        self.b3 = nn.Parameter(torch.rand(7) * 0.3 + 0.3)
        self.head = nn.Linear(5 * 7, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        h = F.relu(torch.einsum("btd,fd->btf", x, self.w1) + self.b1)  # (B, T, 10)
        h = F.relu(torch.tensordot(h, self.w2, dims=([2], [0])) + self.b2)  # (B, T, 9)
        w3 = self.w3.unsqueeze(0).expand(h.shape[0], 9, 7)
        h = F.relu(torch.bmm(h, w3) + self.b3)  # (B, T, 7)
        return F.relu(self.head(h.view(h.size(0), -1)))


class ChannelsLastNet(nn.Module):
    """conv -> BN -> permute(0, 2, 3, 1) -> relu (ConvNeXt-style channels last), and
    conv -> BN -> flatten(2).transpose(1, 2) -> relu (ViT-style patch tokens)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(3, 8)
        self.conv2, self.bn2 = _conv_bn(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)).permute(0, 2, 3, 1))  # (B, H, W, 8)
        h = h.permute(0, 3, 1, 2)
        t = F.relu(self.bn2(self.conv2(h)).flatten(2).transpose(1, 2))  # (B, H*W, 6)
        return t.mean(dim=1)


class ReluRNN(nn.Module):
    """A two-layer relu RNN (a fused aten.rnn_relu kernel: no relu call surfaces)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(6, 10, num_layers=2, nonlinearity="relu", batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


class EncoderLayerNet(nn.Module):
    """nn.TransformerEncoderLayer (relu feed-forward): in eval its fast path is one fused
    kernel (aten._transformer_encoder_layer_fwd) whose relu never surfaces."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(12, 2, 24, dropout=0.0, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


LINEAR_MAPS_DEAD = ((1, 6), (3,), (0, 5), (2,))
CHANNELS_LAST_DEAD = ((2, 5), (1,))
RNN_DEAD = ((3, 7), (0, 4, 9))
ENCODER_DEAD = (2, 11, 20)


def _plant_rows(weight: torch.Tensor, bias: torch.Tensor, dead: Sequence[int], rows_first: bool = True) -> None:
    """Zero the weights of `dead` output features and give them bias -1 (never > 0)."""
    with torch.no_grad():
        for i in dead:
            if rows_first:
                weight[i].zero_()
            else:
                weight[..., i].zero_()
            bias[i] = DEAD_BIAS


def build_linear_maps() -> nn.Module:
    torch.manual_seed(10)
    model = LinearMapsNet()
    with torch.no_grad():  # zero-sum rows: live features fire about half the time after a relu
        model.w2.sub_(model.w2.mean(dim=0, keepdim=True))
        model.w3.sub_(model.w3.mean(dim=0, keepdim=True))
    _plant_rows(model.w1, model.b1, LINEAR_MAPS_DEAD[0])
    _plant_rows(model.w2, model.b2, LINEAR_MAPS_DEAD[1], rows_first=False)
    _plant_rows(model.w3, model.b3, LINEAR_MAPS_DEAD[2], rows_first=False)
    _plant_linear(model.head, LINEAR_MAPS_DEAD[3])
    return model.eval()


def build_channels_last() -> nn.Module:
    torch.manual_seed(11)
    model = ChannelsLastNet()
    _plant_bn(model.bn1, CHANNELS_LAST_DEAD[0])
    _plant_bn(model.bn2, CHANNELS_LAST_DEAD[1])
    return model.eval()


def build_relu_rnn() -> nn.Module:
    torch.manual_seed(12)
    model = ReluRNN()
    rnn = model.rnn
    with torch.no_grad():
        for layer, dead in enumerate(RNN_DEAD):
            w_ih, w_hh = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}")
            w_hh.mul_(0.3)  # a stable recurrence
            b_ih.copy_(torch.rand(10) * 0.3 + 0.3)
            b_hh.zero_()
            for i in dead:
                w_ih[i].zero_()
                w_hh[i].zero_()
                b_ih[i] = DEAD_BIAS
    return model.eval()


def build_encoder_layer() -> nn.Module:
    torch.manual_seed(13)
    model = EncoderLayerNet()
    linear1 = model.layer.linear1
    with torch.no_grad():
        linear1.bias.copy_(torch.rand(24) * 0.3 + 0.3)
    _plant_rows(linear1.weight, linear1.bias, ENCODER_DEAD)
    return model.eval()


CAPTURE_CASES: list[Case] = [
    Case(
        name="linear_maps",
        factory=_factory("linear_maps"),
        input_shape=(5, 12),
        sites=(
            ExpectedSite("/relu", "relu", 10, 2, LINEAR_MAPS_DEAD[0]),  # einsum
            ExpectedSite("/relu#2", "relu", 9, 2, LINEAR_MAPS_DEAD[1]),  # tensordot
            ExpectedSite("/relu#3", "relu", 7, 2, LINEAR_MAPS_DEAD[2]),  # bmm
            ExpectedSite("/relu#4", "relu", 6, 1, LINEAR_MAPS_DEAD[3]),  # after view(size(0), -1)
        ),
    ),
    Case(
        name="channels_last",
        factory=_factory("channels_last"),
        input_shape=(3, 6, 6),
        sites=(
            ExpectedSite("/relu", "relu", 8, 3, CHANNELS_LAST_DEAD[0]),
            ExpectedSite("/relu#2", "relu", 6, 2, CHANNELS_LAST_DEAD[1]),
        ),
    ),
    Case(
        name="relu_rnn",
        factory=_factory("relu_rnn"),
        input_shape=(7, 6),
        sites=(
            ExpectedSite("rnn/relu", "relu", 10, 2, RNN_DEAD[0]),
            ExpectedSite("rnn/relu#2", "relu", 10, 2, RNN_DEAD[1]),
        ),
    ),
    Case(
        name="encoder_layer",
        factory=_factory("encoder_layer"),
        input_shape=(5, 12),
        sites=(ExpectedSite("layer/relu", "relu", 24, 2, ENCODER_DEAD),),
    ),
]
_BY_NAME.update({c.name: c for c in CAPTURE_CASES})
