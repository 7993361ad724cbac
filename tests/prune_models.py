"""Models with 30% of their hidden channels planted dead, for `relu-doctor prune` tests and benchmarks.

Planted dead: a BatchNorm channel with weight 0 and bias -1 (conv models) or a Linear
row of zeros with bias -1 (MLP): dead on every input, so provably dead. ResNetStyle's
residual blocks have a prunable middle activation (conv1 -> bn1 -> relu -> conv2) and a
stem / block output tied to the residual adds (a dependency group prune leaves alone);
both get planted dead channels.
"""

from __future__ import annotations

import torch
from torch import nn

DEAD_FRACTION = 0.3


def _dead(n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[: round(n * DEAD_FRACTION)].tolist())


def _plant_bn(bn: nn.BatchNorm2d, dead: list[int]) -> None:
    with torch.no_grad():
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.8, 1.2)
        bn.weight.uniform_(0.5, 1.0)
        bn.bias.uniform_(0.0, 0.2)
        bn.weight[dead] = 0.0
        bn.bias[dead] = -1.0


class Block(nn.Module):
    def __init__(self, width: int, mid: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, mid, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + x)


class ResNetStyle(nn.Module):
    def __init__(self, width: int = 32, mid: int = 64, blocks: int = 3, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.layers = nn.Sequential(*(Block(width, mid) for _ in range(blocks)))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = self.layers(x)
        return self.head(x.mean(dim=(2, 3)))


class WideMLP(nn.Module):
    def __init__(self, sizes: tuple[int, ...] = (64, 256, 256, 10)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_resnet_style(width: int = 32, mid: int = 64, blocks: int = 3) -> nn.Module:
    torch.manual_seed(0)
    model = ResNetStyle(width, mid, blocks)
    _plant_bn(model.bn, _dead(width, 1))
    for i, block in enumerate(model.layers):
        _plant_bn(block.bn1, _dead(mid, 10 + i))
        _plant_bn(block.bn2, [])
        with torch.no_grad():
            block.bn2.weight.mul_(0.2)  # small residual branches keep the block outputs alive
    return model.eval()


def build_wide_mlp(sizes: tuple[int, ...] = (64, 256, 256, 10)) -> nn.Module:
    torch.manual_seed(0)
    model = WideMLP(sizes)
    linears = [m for m in model.net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, linear in enumerate(linears[:-1]):
            linear.bias.uniform_(0.1, 0.3)
            dead = _dead(linear.out_features, 20 + i)
            linear.weight[dead] = 0.0
            linear.bias[dead] = -1.0
    return model.eval()


def planted_mid_dead(model: ResNetStyle) -> list[list[int]]:
    return [[i for i in range(b.bn1.num_features) if b.bn1.weight[i] == 0] for b in model.layers]
