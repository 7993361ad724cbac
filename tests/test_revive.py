"""revive(): ReDo keeps the outputs bit for bit, the neurons fire again, only the touched optimizer state resets."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import relu_doctor as rd
from relu_doctor.analysis.consumers import find_consumers
from relu_doctor.analysis.fx_graphs import trace, traced_sites
from relu_doctor.analysis.producers import find_producer
from relu_doctor.patching.torch_export import graph_sites

DEAD_1, DEAD_2 = [1, 4, 9], [0, 7]


def planted_mlp() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.0), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    with torch.no_grad():  # dead on every input: a zero row and a negative bias
        m[0].weight[DEAD_1] = 0
        m[0].bias[DEAD_1] = -1
        m[3].weight[DEAD_2] = 0
        m[3].bias[DEAD_2] = -1
    return m


class PlantedCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(6 * 4, 2)
        with torch.no_grad():  # BN weight 0, bias -1: the channel is -1 everywhere
            self.bn1.weight[[2, 5]] = 0
            self.bn1.bias[[2, 5]] = -1
            self.conv2.weight[3] = 0
            self.conv2.bias[3] = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.conv2(h))
        return self.head(torch.flatten(self.pool(h), 1))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 5)
        self.relu = nn.ReLU()
        with torch.no_grad():
            self.a.bias.fill_(2.0)  # live neurons fire on most inputs
            self.a.weight[0] = 0
            self.a.bias[0] = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.relu(self.a(x)) + x)


def _adam_steps(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        loss = model(x).square().mean() + (model(x) - 1).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("build,shape,dead", [
    (planted_mlp, (6,), {"1": DEAD_1, "4": DEAD_2}),
    (PlantedCNN, (3, 5, 5), {"/relu": [2, 5], "/relu#2": [3]}),
], ids=["mlp", "cnn"])
def test_redo_keeps_outputs_resets_touched_state_and_neurons_fire_again(build, shape, dead) -> None:
    model = build()
    x = torch.randn(64, *shape)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _adam_steps(model, opt, x, 3)  # the optimizer has moments everywhere
    model.eval()
    report = rd.scan(model, x.numpy())
    assert {s.name: s.dead_indices for s in report.sites} == dead  # planted, still dead
    fresh = torch.randn(32, *shape)
    with torch.no_grad():
        before = model(fresh)
    state_before = copy.deepcopy(opt.state_dict())
    result = rd.revive(model, report, optimizer=opt)
    assert not result.refused and {r.site: r.neurons for r in result.revived} == dead
    with torch.no_grad():
        after = model(fresh)
    assert torch.equal(before, after)  # bit-identical right after the revival
    # Optimizer state: zero exactly on the touched rows / columns, untouched elsewhere.
    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    touched = {}  # param name -> (dim, indices)
    for r in result.revived:
        producer = r.producer
        touched[f"{producer}.weight"] = (0, r.neurons)
        touched[f"{producer}.bias"] = (0, r.neurons)
        if r.norm:
            touched[f"{r.norm}.weight"] = (0, r.neurons)
            touched[f"{r.norm}.bias"] = (0, r.neurons)
        for c in r.consumers:
            block = params[f"{c}.weight"].shape[1] // len(report.site(r.site).counters.fires)
            touched[f"{c}.weight"] = (1, [n * block + j for n in r.neurons for j in range(block)])
    assert sorted(result.optimizer_state_reset) == sorted(touched)
    for i, name in enumerate(names):
        old, new = state_before["state"][i], opt.state_dict()["state"][i]
        assert torch.equal(old["step"], new["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            if name not in touched:
                assert torch.equal(old[key], new[key]), name
                continue
            dim, idx = touched[name]
            mask = torch.zeros(new[key].shape[dim], dtype=torch.bool)
            mask[idx] = True
            moved_new, moved_old = new[key].movedim(dim, 0), old[key].movedim(dim, 0)
            assert (moved_new[mask] == 0).all(), name
            assert torch.equal(moved_new[~mask], moved_old[~mask]), name
    # A few training steps later the revived neurons fire on the data.
    model.train()
    _adam_steps(model, opt, x, 3)
    model.eval()
    later = rd.scan(model, x.numpy())
    for name, neurons in dead.items():
        assert not set(neurons) & set(later.site(name).dead_indices), name


def test_a_neuron_feeding_a_residual_add_is_refused_with_the_reason() -> None:
    model = Residual()
    x = torch.randn(16, 5)
    report = rd.scan(model, x.numpy())
    assert report.site("relu").dead_indices == [0]
    weights = copy.deepcopy(model.state_dict())
    result = rd.revive(model, report)
    assert not result.revived and "add" in result.refused["relu"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_neighbours_of_sites() -> None:
    gm = trace(PlantedCNN())
    assert not isinstance(gm, str)
    nodes = traced_sites(gm)
    producer = find_producer(gm, nodes["/relu"], 1, 4)
    assert not isinstance(producer, str) and (producer.module, producer.norm_module) == ("conv1", "bn1")
    assert [c.module for c in find_consumers(gm, nodes["/relu"], 1, 4).cuts] == ["conv2"]
    # flattened on the way: symbolic_trace knows no shapes, block 0 = the consumer's width / neurons
    assert [(c.module, c.block) for c in find_consumers(gm, nodes["/relu#2"], 1, 4).cuts] == [("head", 0)]
    assert "nope" not in nodes


def test_neighbours_agree_on_an_export_graph() -> None:
    model = PlantedCNN().eval()
    gm = torch.export.export(model, (torch.randn(2, 3, 5, 5),), strict=False).module()
    nodes = dict(graph_sites(gm.graph))
    producer = find_producer(gm, nodes["/relu"], 1)
    assert not isinstance(producer, str) and (producer.module, producer.norm_module) == ("conv1", "bn1")
    assert [c.module for c in find_consumers(gm, nodes["/relu"], 1).cuts] == ["conv2"]
    assert [(c.module, c.block) for c in find_consumers(gm, nodes["/relu#2"], 1).cuts] == [("head", 4)]


class SharedProducer(nn.Module):
    """One Linear called twice: re-initialising its row for one site would wake the other."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.head = nn.Linear(5, 5)
        with torch.no_grad():
            self.a.weight[0] = 0
            self.a.bias[0] = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.a(x))) + torch.relu(self.a(x))


class ClampThenRelu(nn.Module):
    """clamp(min=0) is a ReLU site the trace does not name: the report's "/relu" is the clamp."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 5)
        self.b = nn.Linear(5, 5)
        self.head = nn.Linear(5, 2)
        with torch.no_grad():
            self.a.weight[1] = 0
            self.a.bias[1] = -1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.b(torch.clamp(self.a(x), min=0))))


@pytest.mark.parametrize("build,planted,reason", [(SharedProducer, [0], "more than once"),
                                                 (ClampThenRelu, [1], "count its calls")])
def test_sites_the_trace_cannot_pin_down_are_refused_and_the_model_is_unchanged(build, planted, reason) -> None:
    model = build()
    report = rd.scan(model, torch.randn(64, 5).numpy())
    assert report.sites[0].name == "/relu" and set(planted) <= set(report.sites[0].dead_indices)
    weights = copy.deepcopy(model.state_dict())
    result = rd.revive(model, report)
    assert not result.revived and reason in result.refused["/relu"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_leak_switches_only_the_dead_neurons() -> None:
    model = planted_mlp().eval()
    x = torch.randn(64, 6)
    report = rd.scan(model, x.numpy())
    hidden = nn.Sequential(*list(model)[:2])
    with torch.no_grad():
        before = hidden(x)
    result = rd.revive(model, report, method="leak", slope=0.1)
    assert {r.site: r.neurons for r in result.revived} == {"1": DEAD_1, "4": DEAD_2}
    with torch.no_grad():
        pre, after = model[0](x), model[1](model[0](x))
    live = [i for i in range(16) if i not in DEAD_1]
    assert torch.equal(after[:, live], before[:, live])
    assert torch.equal(after[:, DEAD_1], 0.1 * pre[:, DEAD_1])  # dead neurons pass gradient again


def test_bad_arguments() -> None:
    model = planted_mlp()
    report = rd.scan(model, torch.randn(8, 6).numpy())
    with pytest.raises(rd.UserError):
        rd.revive(model, report, method="magic")
    with pytest.raises(rd.UserError):
        rd.revive(model, report, target="sleepy")


def test_dormant_target_takes_the_nearly_silent_neurons_too() -> None:
    model = planted_mlp().eval()
    with torch.no_grad():  # neuron 2 fires, but a thousand times weaker than the others: dormant, not dead
        model[0].weight[2] *= 1e-3
        model[0].bias[2] = abs(float(model[0].bias[2])) * 1e-3
    x = torch.randn(64, 6)
    report = rd.scan(model, x.numpy())
    assert 2 not in report.site("1").dead_indices
    dead_only = rd.revive(copy.deepcopy(model), report)
    dormant = rd.revive(model, report, target="dormant", select=["1"])
    assert {r.site: r.neurons for r in dead_only.revived}["1"] == DEAD_1
    assert {r.site: r.neurons for r in dormant.revived} == {"1": sorted([*DEAD_1, 2])}


class MaxPooled(nn.Module):
    """A relu read through a max pool (1d, 2d, 3d; adaptive or not): aten returns values and
    indices, and the values keep channel c on channel c."""

    def __init__(self, pool: nn.Module, dims: int) -> None:
        super().__init__()
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
        self.conv, self.pool, self.dims = conv(3, 4, 1), pool, dims
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


@pytest.mark.parametrize(("pool", "dims"), [
    (nn.AdaptiveMaxPool1d(1), 1), (nn.AdaptiveMaxPool2d(1), 2), (nn.AdaptiveMaxPool3d(1), 3),
    (nn.MaxPool1d(4, return_indices=False), 1), (nn.MaxPool3d(4), 3),
])
def test_max_pools_of_every_rank_pass_the_neurons_to_the_consumer_on_an_export_graph(pool: nn.Module,
                                                                                   dims: int) -> None:
    model = MaxPooled(pool, dims).eval()
    gm = torch.export.export(model, (torch.randn(2, 3, *[4] * dims),), strict=False).module()
    (node,) = dict(graph_sites(gm.graph)).values()
    assert [c.module for c in find_consumers(gm, node, 1).cuts] == ["head"]


def test_max_pool_indices_that_are_used_still_stop_the_walk() -> None:
    class UsesIndices(MaxPooled):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            values, indices = F.adaptive_max_pool2d(torch.relu(self.conv(x)), 1, return_indices=True)
            return self.head(torch.flatten(values, 1)) + indices.sum()

    model = UsesIndices(nn.Identity(), 2).eval()
    gm = torch.export.export(model, (torch.randn(2, 3, 4, 4),), strict=False).module()
    (node,) = dict(graph_sites(gm.graph)).values()
    found = find_consumers(gm, node, 1)
    assert not found.cuts and "indexing" in found.reason
