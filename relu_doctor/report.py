"""The report: sites, summary and gates as plain data, and JSON schema v1. No Rich here."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from . import __version__
from .kinds import KINDS
from .kinds import upper_bound as kind_upper_bound
from .stats import DEFAULT_TAU, SiteCounters, SiteMetrics, detection_floor, site_metrics

SCHEMA = "relu-doctor/report/v1"


@dataclass
class Site:
    """One application of an activation, with its counters and the metrics derived from them."""

    index: int
    name: str
    kind: str
    op: str
    params: dict[str, float]
    shape: list[int]  # per-sample output shape
    axis: int  # neuron axis in the full (batched) output
    counters: SiteCounters
    tau: float = DEFAULT_TAU

    @property
    def grad_blocked(self) -> bool:
        return KINDS[self.kind].grad_blocked

    @property
    def upper_bound(self) -> float | None:
        return kind_upper_bound(self.kind, self.params)

    @cached_property
    def metrics(self) -> SiteMetrics:
        """dead, dead_ratio, sparsity, ... computed once from the counters (never stored in them)."""
        return site_metrics(self.counters, self.upper_bound, self.tau)

    def __getattr__(self, name: str) -> Any:
        # site.dead, site.sparsity, ...: the metrics read as attributes of the site
        if name in _METRIC_NAMES:
            return getattr(self.metrics, name)
        raise AttributeError(name)

    def to_dict(self, with_counters: bool = True) -> dict[str, Any]:
        m = asdict(self.metrics)
        d: dict[str, Any] = {
            "index": self.index, "name": self.name, "kind": self.kind, "op": self.op,
            "params": dict(self.params), "shape": list(self.shape), "axis": self.axis,
            "neurons": m.pop("neurons"), "grad_blocked": self.grad_blocked, **m,
        }
        if with_counters:
            d["counters"] = self.counters.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], tau: float) -> Site:
        return cls(
            index=d["index"], name=d["name"], kind=d["kind"], op=d["op"], params=d.get("params", {}),
            shape=d["shape"], axis=d["axis"], counters=SiteCounters.from_dict(d["counters"]), tau=tau,
        )


_METRIC_NAMES = frozenset(
    {"neurons", "dead", "dead_ratio", "dead_indices", "always_on", "saturated", "dormant",
     "rarely_active", "sparsity", "nonfinite", "mean", "max"}
)


@dataclass
class Summary:
    sites: int
    neurons: int
    dead: int  # dead neurons of grad-blocked sites: the "dying ReLUs"
    dead_ratio: float  # dead / neurons of grad-blocked sites
    sparsity: float  # entry-weighted over all sites
    dormant: int
    detection_floor: float
    grad_blocked_neurons: int
    dead_all: int  # dead neurons of every kind, leaky ones included

    @classmethod
    def of(cls, sites: list[Site], samples: int) -> Summary:
        metrics = [(s, s.metrics) for s in sites]
        blocked = [(s, m) for s, m in metrics if s.grad_blocked]
        gb_neurons = sum(m.neurons for _, m in blocked)
        dead = sum(m.dead for _, m in blocked)
        entries = sum(s.counters.rows * s.counters.neurons for s in sites)
        fires = sum(int(s.counters.fires.sum()) for s in sites)
        return cls(
            sites=len(sites),
            neurons=sum(m.neurons for _, m in metrics),
            dead=dead,
            dead_ratio=dead / gb_neurons if gb_neurons else 0.0,
            sparsity=1.0 - fires / entries if entries else 0.0,
            dormant=sum(m.dormant for _, m in metrics),
            detection_floor=detection_floor(samples),
            grad_blocked_neurons=gb_neurons,
            dead_all=sum(m.dead for _, m in metrics),
        )


@dataclass
class Violation:
    gate: str  # "fail_dead_ratio" | "fail_total_dead_ratio" | ...
    threshold: float
    value: float
    site: str | None = None  # None for model-wide gates

    def describe(self) -> str:
        where = f"site {self.site}" if self.site else "model"
        return f"{where}: dead ratio {self.value:.1%} > {self.threshold:.1%} ({self.gate.replace('_', '-')})"


@dataclass
class Gates:
    passed: bool = True
    violations: list[Violation] = field(default_factory=list)
    checked: dict[str, float] = field(default_factory=dict)  # gate -> threshold


@dataclass
class Report:
    model: dict[str, Any]  # path, format, sha256
    sample: dict[str, Any]  # source, samples, batch_size, seed, inputs
    settings: dict[str, Any]  # tau, neuron_axis, include_smooth
    sites: list[Site]
    gates: Gates = field(default_factory=Gates)
    warnings: list[str] = field(default_factory=list)

    @property
    def summary(self) -> Summary:
        return Summary.of(self.sites, int(self.sample.get("samples", 0)))

    def worst_sites(self) -> list[Site]:
        """Grad-blocked sites with dead neurons, highest dead ratio first (ties: execution order)."""
        dying = [s for s in self.sites if s.grad_blocked and s.dead]
        return sorted(dying, key=lambda s: (-s.dead_ratio, s.index))

    def site(self, name: str) -> Site:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self, with_counters: bool = True) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "tool": {"name": "relu-doctor", "version": __version__},
            "model": self.model,
            "sample": self.sample,
            "settings": self.settings,
            "summary": asdict(self.summary),
            "sites": [s.to_dict(with_counters) for s in self.sites],
            "gates": {
                "passed": self.gates.passed,
                "violations": [asdict(v) for v in self.gates.violations],
                "checked": self.gates.checked,
            },
            "warnings": list(self.warnings),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        from .render.markdown import render_markdown

        return render_markdown(self)

    def to_html(self) -> str:
        """A self-contained, offline HTML page (needs matplotlib: the `html` extra)."""
        from .render.html import render_html

        return render_html(self)

    def _repr_html_(self) -> str:  # Jupyter shows a report as its page
        from .render.html import render_html

        return render_html(self, standalone=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        if not isinstance(d, dict):
            raise ValueError(f"a JSON {type(d).__name__}, not an object")
        if d.get("schema") != SCHEMA:
            raise ValueError(f"not a relu-doctor v1 report (schema {d.get('schema')!r})")
        tau = float(d.get("settings", {}).get("tau", DEFAULT_TAU))
        gates = d.get("gates", {})
        return cls(
            model=d["model"], sample=d["sample"], settings=d["settings"],
            sites=[Site.from_dict(s, tau) for s in d["sites"]],
            gates=Gates(
                passed=gates.get("passed", True),
                violations=[Violation(**v) for v in gates.get("violations", [])],
                checked=gates.get("checked", {}),
            ),
            warnings=list(d.get("warnings", [])),
        )

    @classmethod
    def load(cls, path: str | Path) -> Report:
        from .errors import UserError

        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise UserError(f"report not found: {path}") from None
        except IsADirectoryError:
            raise UserError(f"{path} is a folder, not a report") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # not JSON, or JSON of another shape
            raise UserError(f"{path} is not a relu-doctor report: {e}", "Pass a file written by "
                            "`relu-doctor scan --format json`.") from None
