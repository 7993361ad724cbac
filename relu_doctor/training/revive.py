"""`revive()`: bring dead (or dormant) ReLU neurons back without changing what the model computes.

method="redo" (Sokar et al., ICML 2023, "The Dormant Neuron Phenomenon in Deep RL"):
re-initialise the neuron's incoming weights (its row of the producing Linear/Conv, with the
layer's own initialiser; a BatchNorm in between gets weight 1, bias 0 and fresh statistics
for that channel), set its outgoing weights in every consuming layer to zero, and zero
the optimizer state (Adam's moments, SGD's momentum) of exactly those rows and columns.
A dead neuron's output was 0 and its outgoing weights are now 0, so the model's outputs
are unchanged at that moment; the re-initialised neuron fires again and its outgoing
weights learn from there.

method="leak": the neuron's activation leaks instead (patching's per-channel PReLU, slope
for the chosen neurons, -0.0 for the others, so live neurons compute what they did), done in
place on activation modules called once; other sites are refused.

The model is changed in place (the optimizer keeps its parameters); the result says what
changed and why any site was left alone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..gates import selected
from ..patching.plan import CHANNEL, check_options
from ..report import Report, Site
from ..stats import dormant_mask

if TYPE_CHECKING:
    from ..analysis.consumers import WeightCut
    from ..analysis.producers import Producer

METHODS = ("redo", "leak")
TARGETS = ("dead", "dormant")
Touched = list[tuple[torch.Tensor, int, list[int]]]  # (parameter, dim, indices) whose optimizer state resets


@dataclass
class RevivedSite:
    site: str
    neurons: list[int]
    method: str
    producer: str | None = None
    norm: str | None = None
    consumers: list[str] = field(default_factory=list)


@dataclass
class ReviveResult:
    revived: list[RevivedSite] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # site -> why it was left alone
    optimizer_state_reset: list[str] = field(default_factory=list)  # parameter names whose rows/columns were zeroed

    @property
    def neurons(self) -> int:
        return sum(len(r.neurons) for r in self.revived)


def revive(model: nn.Module, report: Report, optimizer: torch.optim.Optimizer | None = None, method: str = "redo",
           *, target: str = "dead", select: Sequence[str] = (), ignore: Sequence[str] = (), slope: float = 0.01,
           tau: float | None = None) -> ReviveResult:
    """Revive the dead (target="dormant": dormant) neurons `report` found in `model`, in place."""
    from ..api import check_tau
    from ..backends.torch_live import unwrap

    if method not in METHODS:
        raise UserError(f"revive method must be one of {', '.join(METHODS)} (got {method!r})")
    if target not in TARGETS:
        raise UserError(f"revive target must be one of {', '.join(TARGETS)} (got {target!r})")
    if not isinstance(model, nn.Module):
        raise UserError(f"revive() needs the nn.Module being trained (got {type(model).__name__})")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise UserError(f"optimizer must be the torch.optim.Optimizer training the model (got {optimizer!r})")
    check_options(slope, CHANNEL, 0.0)  # the leak's slope, as patch's
    report = Report.of(report)
    model = unwrap(model)
    tau = float(report.settings.tau) if tau is None else check_tau(tau)
    chosen = {s.name: idx for s in selected(report.sites, select, ignore) if s.grad_blocked
              for idx in [_targets(s, target, tau)] if idx}
    result = ReviveResult()
    if not chosen:
        return result
    if method == "leak":
        _leak(model, report, chosen, slope, result)
        return result
    modules = dict(model.named_modules())
    touched: Touched = []
    for name, around in _neighbours(model, report, list(chosen)).items():
        if isinstance(around, str):
            result.refused[name] = around
            continue
        site = report.site(name)
        producer, cuts = around
        problem = _redo_site(modules, producer, cuts, site, chosen[name], touched)
        if problem:
            result.refused[name] = problem
            continue
        result.revived.append(RevivedSite(name, chosen[name], "redo", producer.module, producer.norm_module,
                                          [c.module for c in cuts]))
    if optimizer is not None:
        result.optimizer_state_reset = _reset_optimizer(model, optimizer, touched)
    return result


def _targets(site: Site, target: str, tau: float) -> list[int]:
    if target == "dead":
        return list(site.dead_indices)
    return np.flatnonzero(dormant_mask(site.counters, tau)).tolist() if site.counters.rows else []


Around = tuple["Producer", list["WeightCut"]]  # a site's producer and the weights reading it


def _neighbours(model: nn.Module, report: Report, names: list[str]) -> dict[str, Around | str]:
    """Per site, its producer and the weights reading it, in a symbolic_trace graph of the live
    model (revive() has no example input to export it with), or why it cannot be revived."""
    from ..analysis.consumers import find_consumers
    from ..analysis.fx_graphs import same_count, trace, traced_sites
    from ..analysis.producers import find_producer

    gm = trace(model)
    if isinstance(gm, str):
        return dict.fromkeys(names, gm)
    nodes = traced_sites(gm)
    reported = [s.name for s in report.sites]
    out: dict[str, Around | str] = {}
    for name in names:
        node = nodes.get(name)
        if not same_count(name, list(nodes), reported):  # "#n" would point at another call
            out[name] = ("torch.fx's trace and the report count its calls differently (a call the trace does not "
                         "name, such as clamp(min=0), or control flow)")
            continue
        if node is None:
            out[name] = "its call is not in the traced graph (control flow?)"
            continue
        rank = len(report.site(name).shape) + 1
        producer = find_producer(gm, node, report.site(name).axis, rank)
        found = find_consumers(gm, node, report.site(name).axis, rank)
        if isinstance(producer, str) or found.reason is not None:
            out[name] = producer if isinstance(producer, str) else str(found.reason)
        elif any(c.groups != 1 for c in found.cuts):
            out[name] = "a grouped convolution reads it (revive zeroes whole input columns)"
        else:
            out[name] = (producer, found.cuts)
    return out


def _redo_site(modules: dict[str, nn.Module], producer_at: Producer, cuts: list[WeightCut], site: Site,
               neurons: list[int], touched: Touched) -> str | None:
    producer = modules[producer_at.module]
    weight: torch.Tensor = producer.weight  # type: ignore[assignment]
    if weight.shape[0] != site.neurons:
        return (f"its {site.neurons} neurons are not the {weight.shape[0]} outputs of {producer_at.module} "
                "(a different neuron axis?)")
    plans: list[tuple[torch.Tensor, list[int]]] = []
    for c in cuts:
        consumer_weight: torch.Tensor = modules[c.module].weight  # type: ignore[assignment]
        width = consumer_weight.shape[1]
        block = c.block or width // site.neurons  # 0: flattened, the width says how many features per neuron
        if width != block * site.neurons:
            return f"the inputs of {c.module} ({width}) do not line up with its {site.neurons} neurons"
        cols = [n * block + j for n in neurons for j in range(block)]
        plans.append((consumer_weight, cols))
    fresh = copy.deepcopy(producer)
    fresh.reset_parameters()  # type: ignore[operator]  # the layer's own initialiser (Linear / Conv)
    rows = torch.tensor(neurons, device=weight.device)
    with torch.no_grad():
        for pname in ("weight", "bias"):
            p = getattr(producer, pname, None)
            if p is not None:
                p[rows] = getattr(fresh, pname)[rows].to(p.dtype)
                touched.append((p, 0, neurons))
        if producer_at.norm_module:
            _reset_norm(modules[producer_at.norm_module], rows, neurons, touched)
        for w, cols in plans:
            w[:, torch.tensor(cols, device=w.device)] = 0
            touched.append((w, 1, cols))
    return None


def _reset_norm(norm: nn.Module, rows: torch.Tensor, neurons: list[int], touched: Touched) -> None:
    """The channel as a fresh BatchNorm has it: weight 1, bias 0, mean 0, variance 1."""
    for pname, value in (("weight", 1.0), ("bias", 0.0)):
        p = getattr(norm, pname, None)
        if p is not None:
            p[rows] = value
            touched.append((p, 0, neurons))
    for bname, value in (("running_mean", 0.0), ("running_var", 1.0)):
        b = getattr(norm, bname, None)
        if b is not None:
            b[rows] = value


def _reset_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, touched: Touched) -> list[str]:
    """Zero the per-element state (moments, momentum) of the touched slices; nothing else."""
    names = {id(p): n for n, p in model.named_parameters()}
    reset = []
    for p, dim, indices in touched:
        state = optimizer.state.get(p)
        if not state:
            continue
        index = torch.tensor(indices, device=p.device)
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                value.index_fill_(dim, index.to(value.device), 0)
        name = names.get(id(p), "?")
        if name not in reset:
            reset.append(name)
    return reset


def _leak(model: nn.Module, report: Report, chosen: dict[str, list[int]], slope: float, result: ReviveResult) -> None:
    from ..patching.plan import CHANNEL, SitePatch
    from ..patching.torch_graph import leak_module

    modules = dict(model.named_modules())
    names = {s.name for s in report.sites}
    for name, neurons in chosen.items():
        module = modules.get(name) if "/" not in name and "#" not in name else None
        if module is None or type(module).__name__ not in ("ReLU", "ReLU6") or f"{name}#2" in names:
            result.refused[name] = ("leak works in place on an activation module called once; this site is a "
                                    "functional or repeated call (relu_doctor.patch returns a patched copy)")
            continue
        site = report.site(name)
        patch = SitePatch(index=site.index, name=name, kind=site.kind, op=site.op, axis=site.axis,
                          rank=len(site.shape) + 1, neurons=site.neurons, dead=tuple(neurons),
                          upper=site.upper_bound, mode=CHANNEL, slope=slope)
        device = next((t.device for t in model.parameters()), torch.device("cpu"))
        dtype = next((t.dtype for t in model.parameters() if t.is_floating_point()), torch.float32)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, leak_module(patch, dtype, device))
        result.revived.append(RevivedSite(name, neurons, "leak"))
