"""Checks of the test-model catalogue itself, against a naive reference.

The reference here deliberately does not use relu_doctor: it watches an eager
forward with plain module hooks (for activation modules) and a
TorchFunctionMode (for functional calls), names the sites by the contract in
tests/models.py, and reads dead / saturated neurons straight off the recorded
outputs.  If these tests pass, the catalogue's expected answers are right and
every saved format reproduces the eager model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from tests.models import (
    ALL_FORMATS,
    CASES,
    FORMAT_EXTENSIONS,
    Case,
    ExpectedSite,
    case,
    sample_data,
)

CASE_IDS = [c.name for c in CASES]
KINDS = {"relu", "relu6", "leaky_relu", "prelu", "rrelu"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Run these tiny models on one intra-op thread.

    With several threads, every small op pays the thread pool's hand-off; on a
    busy 2-core machine that made a forward ~100x slower (~100 ms vs ~1 ms).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------
# Naive reference: record every ReLU-family call of an eager forward
# --------------------------------------------------------------------------


def _module_kind(module: nn.Module) -> str | None:
    """Kind of an activation module, or None if it is not one (ReLU6 before Hardtanh)."""
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.ReLU6):
        return "relu6"
    if isinstance(module, nn.Hardtanh):
        return "relu6" if (module.min_val, module.max_val) == (0.0, 6.0) else None
    if isinstance(module, nn.LeakyReLU):
        return "leaky_relu"
    if isinstance(module, nn.PReLU):
        return "prelu"
    if isinstance(module, nn.RReLU):
        return "rrelu"
    return None


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    """Positional-or-keyword argument `name` at `index`, None when absent."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


_RELU_FUNCS: set[Callable[..., Any]] = {
    F.relu,
    torch.relu,
    torch.Tensor.relu,
    torch.relu_,
    torch.Tensor.relu_,
}
_ADD_FUNCS: set[Callable[..., Any]] = {torch.add, torch.Tensor.add, torch.Tensor.__add__}
_CLAMP_FUNCS: set[Callable[..., Any]] = {
    torch.clamp,
    torch.Tensor.clamp,
    torch.clamp_,
    torch.Tensor.clamp_,
}


def _function_kind(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str | None:
    """Kind of a functional call, or None if it is not a ReLU-family call."""
    if func in _RELU_FUNCS:
        return "relu"
    if func in _CLAMP_FUNCS:
        low, high = _arg(args, kwargs, 1, "min"), _arg(args, kwargs, 2, "max")
        return "relu" if low == 0 and high is None else None
    if func is F.relu6:
        return "relu6"
    if func is F.hardtanh:
        low, high = _arg(args, kwargs, 1, "min_val"), _arg(args, kwargs, 2, "max_val")
        return "relu6" if (low, high) == (0.0, 6.0) else None
    if func is F.leaky_relu:
        return "leaky_relu"
    if func is F.prelu:
        return "prelu"
    if func is F.rrelu:
        return "rrelu"
    return None


@dataclass
class Recorded:
    """One observed site: its contract name, kind and (copied) output."""

    name: str
    kind: str
    output: torch.Tensor


class Recorder(TorchFunctionMode):
    """Records ReLU-family calls of one model, in execution order.

    Module hooks keep a stack of the module paths being run; a call of an
    activation module is recorded by its forward hook, and the functional
    calls its forward makes internally are ignored.  Other functional calls
    are recorded as ``<enclosing path>/<kind>``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.stack: list[tuple[str, nn.Module]] = []
        self.sites: list[Recorded] = []
        self.counts: Counter[str] = Counter()
        self.handles: list[Any] = []
        self.shifted: list[torch.Tensor] = []

    def _add(self, base: str, kind: str, output: torch.Tensor) -> None:
        self.counts[base] += 1
        n = self.counts[base]
        name = base if n == 1 else f"{base}#{n}"
        # Clone: an in-place op later in the forward must not change what we saw.
        self.sites.append(Recorded(name, kind, output.detach().clone()))

    def __enter__(self) -> Recorder:
        for path, module in self.model.named_modules():

            def pre(mod: nn.Module, inputs: Any, path: str = path) -> None:
                self.stack.append((path, mod))

            def post(mod: nn.Module, inputs: Any, output: Any, path: str = path) -> None:
                self.stack.pop()
                kind = _module_kind(mod)
                if kind is not None:
                    self._add(path, kind, output)

            self.handles.append(module.register_forward_pre_hook(pre))
            self.handles.append(module.register_forward_hook(post))
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for h in self.handles:
            h.remove()

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _ADD_FUNCS and len(args) == 2 and args[1] == 3.0:
            self.shifted.append(out)  # x + 3: a relu6 of it is a hand-written hard-swish (held: ids get reused)
        inside_activation = bool(self.stack) and _module_kind(self.stack[-1][1]) is not None
        kind = None if inside_activation else _function_kind(func, args, kwargs)
        if kind == "relu6" and args and any(args[0] is t for t in self.shifted):
            kind = None  # relu6(x + 3) inside x * relu6(x + 3) / 6 is the hard-swish, not a site (SPEC 3)
        if kind is not None:
            path = self.stack[-1][0] if self.stack else ""
            self._add(f"{path}/{kind}", kind, out)
        return out


def reference_sites(model: nn.Module, data: np.ndarray) -> list[Recorded]:
    """Run `model` eagerly on `data` and return its recorded sites."""
    with torch.no_grad(), Recorder(model) as rec:
        model(torch.from_numpy(data))
    return rec.sites


def never_positive(output: torch.Tensor, axis: int) -> tuple[int, ...]:
    """Indices along `axis` whose values are never > 0 anywhere in `output`."""
    per_neuron = output.movedim(axis, 0).reshape(output.shape[axis], -1)
    return tuple(int(i) for i in torch.nonzero(per_neuron.amax(dim=1) <= 0).flatten())


def always_six(output: torch.Tensor, axis: int) -> tuple[int, ...]:
    """Indices along `axis` whose values are always >= 6 (saturated ReLU6)."""
    per_neuron = output.movedim(axis, 0).reshape(output.shape[axis], -1)
    return tuple(int(i) for i in torch.nonzero(per_neuron.amin(dim=1) >= 6).flatten())


# --------------------------------------------------------------------------
# The catalogue's structure
# --------------------------------------------------------------------------


def test_catalogue_has_the_required_cases() -> None:
    required = {
        "reused_relu",
        "functional",
        "inplace",
        "relu6",
        "leaky",
        "mlp_tokens",
        "conv1d",
        "no_relu",
        "mlp",
    }
    assert required <= set(CASE_IDS)
    assert len(CASE_IDS) == len(set(CASE_IDS))
    assert case("relu6") is next(c for c in CASES if c.name == "relu6")
    with pytest.raises(KeyError):
        case("no such case")


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_expected_sites_are_well_formed(c: Case) -> None:
    names = [s.name for s in c.sites]
    assert len(names) == len(set(names)), "site names must be unique"
    assert c.factory.startswith("tests.models:build_")
    assert c.formats <= ALL_FORMATS
    for s in c.sites:
        assert s.kind in KINDS
        assert list(s.dead) == sorted(set(s.dead))
        assert list(s.saturated) == sorted(set(s.saturated))
        assert not set(s.dead) & set(s.saturated)
        assert all(0 <= i < s.neurons for i in (*s.dead, *s.saturated))
        assert s.saturated == () or s.kind == "relu6"
        assert 1 <= s.axis <= len(c.input_shape)


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_factory_is_deterministic_and_in_eval_mode(c: Case) -> None:
    a, b = c.build(), c.build()
    assert not any(m.training for m in a.modules())
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sample_data_is_seeded_standard_normal() -> None:
    c = case("mlp_tokens")
    x = sample_data(c, n=7, seed=3)
    assert x.shape == (7, 5, 12) and x.dtype == np.float32
    assert np.array_equal(x, sample_data(c, n=7, seed=3))
    assert not np.array_equal(x, sample_data(c, n=7, seed=4))
    assert sample_data(c).shape == (64, 5, 12)


# --------------------------------------------------------------------------
# The expected answers, against the naive reference
# --------------------------------------------------------------------------


def _observed(c: Case, data: np.ndarray) -> list[ExpectedSite]:
    """What the reference sees on `data`, in ExpectedSite form."""
    out = []
    expected_axes = {s.name: s.axis for s in c.sites}
    for r in reference_sites(c.build(), data):
        # The axis is the catalogue's claim; it is checked below via the shape.
        axis = expected_axes.get(r.name, 1)
        out.append(
            ExpectedSite(
                name=r.name,
                kind=r.kind,
                neurons=r.output.shape[axis],
                axis=axis,
                dead=never_positive(r.output, axis),
                saturated=always_six(r.output, axis) if r.kind == "relu6" else (),
            )
        )
    return out


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_expected_sites_match_reference(c: Case) -> None:
    assert _observed(c, sample_data(c, n=64, seed=0)) == list(c.sites)


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_only_planted_neurons_die_on_32_samples(c: Case, seed: int) -> None:
    # Live neurons must be clearly alive: no unplanted neuron may die on any
    # small standard-normal sample, whatever its seed.
    assert _observed(c, sample_data(c, n=32, seed=seed)) == list(c.sites)


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_live_neurons_are_clearly_alive(c: Case) -> None:
    # Each unplanted neuron is > 0 on at least 20 % of its values, so the odds
    # that a fresh 32-sample batch kills it by chance are negligible; and no
    # unplanted neuron ever reaches a ReLU6's 6.
    data = sample_data(c, n=256, seed=7)
    for s, r in zip(c.sites, reference_sites(c.build(), data), strict=True):
        per_neuron = r.output.movedim(s.axis, 0).reshape(s.neurons, -1)
        live = [i for i in range(s.neurons) if i not in (*s.dead, *s.saturated)]
        assert (per_neuron[live] > 0).float().mean(dim=1).min() >= 0.2, s.name
        assert (per_neuron[live] < 6).all(), s.name


@pytest.mark.parametrize("c", CASES, ids=CASE_IDS)
def test_module_sites_by_plain_forward_hooks(c: Case) -> None:
    """Second, even plainer check of module-based sites: one forward hook each."""
    model = c.build()
    modules = dict(model.named_modules())
    seen: dict[str, list[torch.Tensor]] = {}

    def hook(path: str) -> Callable[..., None]:
        def record(mod: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            seen.setdefault(path, []).append(output.detach().clone())

        return record

    handles = [
        modules[p].register_forward_hook(hook(p)) for p in modules if p and _module_kind(modules[p])
    ]
    with torch.no_grad():
        model(torch.from_numpy(sample_data(c)))
    for h in handles:
        h.remove()
    for s in c.sites:
        path, _, call = s.name.partition("#")
        if "/" in path:
            continue  # functional site: covered by the recorder test
        output = seen[path][int(call or 1) - 1]
        assert output.shape[s.axis] == s.neurons
        assert never_positive(output, s.axis) == s.dead
        if s.kind == "relu6":
            assert always_six(output, s.axis) == s.saturated
    assert sum(len(v) for v in seen.values()) == sum("/" not in s.name for s in c.sites)


def test_catalogue_models_stay_tiny() -> None:
    """Every test scans these models many times: keep them tiny by construction (parameters
    and per-sample input size), not by a wall-clock limit that fails on a busy machine."""
    for c in CASES:
        model = c.build()
        assert sum(p.numel() for p in model.parameters()) <= 20_000, c.name
        assert sample_data(c, n=1).size <= 4096, c.name


# --------------------------------------------------------------------------
# Every saved format reloads and reproduces the eager model
# --------------------------------------------------------------------------


# Module scope (not session) so the one-thread fixture above is already active.
@pytest.fixture(scope="module")
def saved(all_formats: Callable[[str], dict[str, Path]]) -> dict[str, dict[str, Path]]:
    """Every case saved once in every format: case name -> format -> path."""
    return {c.name: all_formats(c.name) for c in CASES}


def _fresh(c: Case) -> nn.Module:
    """An unplanted, randomly initialised instance of the case's class."""
    torch.manual_seed(12345)
    return type(c.build())().eval()


def _load_state(c: Case, state: dict[str, torch.Tensor]) -> nn.Module:
    model = _fresh(c)
    model.load_state_dict(state)
    return model


def _run_torch(fmt: str, c: Case, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """Load `path` as format `fmt` into something callable on a batch."""
    if fmt == "module":
        model = torch.load(path, weights_only=False)
        assert isinstance(model, type(c.build()))
        return model
    if fmt == "state_dict":
        return _load_state(c, torch.load(path, weights_only=True))
    if fmt == "checkpoint":
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["epoch"] == 3
        return _load_state(c, ckpt["state_dict"])
    if fmt == "safetensors":
        from safetensors.torch import load_file

        return _load_state(c, load_file(str(path)))
    if fmt in ("script", "trace"):
        return torch.jit.load(str(path))
    if fmt == "pt2":
        return torch.export.load(path).module()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["input"]

        def run(x: torch.Tensor) -> torch.Tensor:
            (y,) = session.run(None, {"input": x.numpy()})
            return torch.from_numpy(y)

        return run
    raise AssertionError(f"unknown format {fmt}")


def _case_formats() -> Iterator[Any]:
    for c in CASES:
        for fmt in sorted(ALL_FORMATS):
            marks = [] if fmt in c.formats else [pytest.mark.skip(reason=f"{c.name} has no {fmt}")]
            yield pytest.param(c, fmt, id=f"{c.name}-{fmt}", marks=marks)


@pytest.mark.parametrize(("c", "fmt"), list(_case_formats()))
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_saved_format_reproduces_eager(
    saved: dict[str, dict[str, Path]], c: Case, fmt: str
) -> None:
    path = saved[c.name][fmt]
    assert path.name == f"{c.name}.{fmt}.{FORMAT_EXTENSIONS[fmt]}" and path.is_file()
    run = _run_torch(fmt, c, path)
    eager = c.build()
    # Batches 32, 7 and 1: the .pt2 and .onnx files must have a dynamic batch axis.
    for n in (32, 7, 1):
        x = torch.from_numpy(sample_data(c, n=n, seed=5))
        with torch.no_grad():
            want, got = eager(x), run(x)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (c.name, fmt, n)


def test_save_all_formats_writes_exactly_the_case_formats(
    saved: dict[str, dict[str, Path]],
) -> None:
    for c in CASES:
        assert set(saved[c.name]) == set(c.formats)
