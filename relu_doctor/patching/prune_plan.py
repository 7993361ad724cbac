"""What `relu-doctor prune` removes: per site, the dead neurons whose whole channel can go.

A dead ReLU neuron outputs exactly 0 on the inputs it is dead on, so its channel can be
removed from the layer that makes it (the output channel of the Conv / Linear and its
bias, the BatchNorm channel between them) and from every layer that reads it (their
input channel), and the model computes the same thing. The channel can go only when the
graph says so: the activation's input comes straight from Conv/Linear (-> BatchNorm),
read by nothing else, and its output reaches only Conv / Linear layers through ops that
keep channels apart. A residual add or a concat ties channels across layers (a
dependency group): those sites are left alone, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .plan import LeftAlone

PROVABLY_DEAD, SAMPLE_DEAD = "provably dead", "dead on the sample"


@dataclass
class PruneGroup:
    """One site's prunable neurons and the weights that change with them (format-specific names)."""

    site: str
    neurons: list[int]  # indices along the site's neuron axis
    total: int  # neurons of the site before pruning
    producer: str  # weight of the Conv / Linear making the channels
    producer_bias: str | None
    batch_norm: list[str] = field(default_factory=list)  # its per-channel tensors (scale, shift, mean, var)
    consumers: list[tuple[str, str, int, int]] = field(default_factory=list)  # (weight, kind, block, groups)


@dataclass
class PrunePlan:
    source: str  # PROVABLY_DEAD or SAMPLE_DEAD
    groups: list[PruneGroup] = field(default_factory=list)
    left_alone: list[LeftAlone] = field(default_factory=list)

    @property
    def neurons(self) -> int:
        return sum(len(g.neurons) for g in self.groups)
