"""The report: typed sites, model, sample, settings, summary and gates, and JSON schema v1.

No Rich here (`__rich__` imports render/ when a console asks for it). Reading a report
from a file goes through validate.py first (`Report.load`): `from_dict` trusts its input.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from . import __version__, notices
from .kinds import KINDS
from .kinds import upper_bound as kind_upper_bound
from .notices import Notice, code_of
from .stats import (
    DEFAULT_TAU,
    ModelMetrics,
    SiteCounters,
    SiteMetrics,
    model_metrics,
    site_metrics,
    small_sample_warning,
)

SCHEMA = "relu-doctor/report/v1"


class _Part(Mapping[str, Any]):
    """A typed part of the report (model, sample, settings). Keys a newer v1 writer added
    are kept in `extra` and written back. It also reads as a (read-only) mapping of its
    JSON, for code written when the parts were dicts; new code reads attributes."""

    _OPTIONAL: ClassVar[frozenset[str]] = frozenset()  # written only when not None
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}  # type: ignore[arg-type]
        out = {k: v for k, v in out.items() if not (k in self._OPTIONAL and v is None)}
        return {**out, **self.extra}

    @classmethod
    def _split(cls, d: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        names = {f.name for f in fields(cls) if f.name != "extra"}  # type: ignore[arg-type]
        return {k: v for k, v in d.items() if k in names}, {k: v for k, v in d.items() if k not in names}

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


@dataclass
class ModelInfo(_Part):
    path: str | None = None  # None for an in-memory model
    format: str = "module"
    sha256: str | None = None  # of the file; None in memory
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How a person names the model: `m.onnx (onnx)`, or `in-memory module`."""
        return f"{self.path} ({self.format})" if self.path else f"in-memory {self.format}"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelInfo:
        known, extra = cls._split(d)
        return cls(**known, extra=extra)


@dataclass
class SampleInfo(_Part):
    source: str  # "synthetic", "array", a data path, "training", or "merged"
    samples: int
    batch_size: int | None = None  # None when merged parts used different sizes
    seed: int | None = None  # synthetic data only
    inputs: list[dict[str, Any]] = field(default_factory=list)  # name, per-sample shape, dtype
    shard: str | None = None  # "i/n" for a scan of one shard
    of_samples: int | None = None  # the whole sample a shard is part of
    merged_from: list[dict[str, Any]] | None = None  # the parts of a merged report
    extra: dict[str, Any] = field(default_factory=dict)

    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"shard", "of_samples", "merged_from"})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SampleInfo:
        known, extra = cls._split(d)
        return cls(**known, extra=extra)


@dataclass
class Settings(_Part):
    tau: float = DEFAULT_TAU
    neuron_axis: str = "auto"
    include_smooth: bool = False
    select: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Settings:
        known, extra = cls._split(d)
        return cls(**known, extra=extra)


@dataclass
class Site:
    """One application of an activation, with its counters and the metrics derived from them."""

    index: int
    name: str
    kind: str
    op: str
    params: dict[str, float]
    shape: list[int]  # per-sample output shape
    axis: int  # neuron axis in the batched output: shape[axis - 1] neurons (see sample_axis)
    counters: SiteCounters
    tau: float = DEFAULT_TAU
    proof: Any = None  # analysis.proof.SiteProof from `scan --prove`, else None

    @property
    def grad_blocked(self) -> bool:
        return KINDS[self.kind].grad_blocked

    @property
    def upper_bound(self) -> float | None:
        return kind_upper_bound(self.kind, self.params)

    @property
    def sample_axis(self) -> int | None:
        """The neuron axis in the per-sample `shape` (axis - 1); None when the batch axis is
        the only one (a rank-1 output: every entry of a sample is one neuron's)."""
        return self.axis - 1 if self.axis >= 1 else None

    @cached_property
    def metrics(self) -> SiteMetrics:
        """dead, dead_ratio, sparsity, ... computed once from the counters (never stored in them)."""
        return site_metrics(self.counters, self.upper_bound, self.tau)

    # The metrics, read as attributes of the site (SPEC 9: report.sites[0].dead_ratio).
    @property
    def neurons(self) -> int:
        return self.metrics.neurons

    @property
    def dead(self) -> int:
        return self.metrics.dead

    @property
    def dead_ratio(self) -> float:
        return self.metrics.dead_ratio

    @property
    def dead_indices(self) -> list[int]:
        return self.metrics.dead_indices

    @property
    def always_on(self) -> int:
        return self.metrics.always_on

    @property
    def saturated(self) -> int:
        return self.metrics.saturated

    @property
    def dormant(self) -> int:
        return self.metrics.dormant

    @property
    def rarely_active(self) -> int:
        return self.metrics.rarely_active

    @property
    def sparsity(self) -> float:
        return self.metrics.sparsity

    @property
    def nonfinite(self) -> int:
        return self.metrics.nonfinite

    @property
    def mean(self) -> float:
        return self.metrics.mean

    @property
    def max(self) -> float | None:
        return self.metrics.max

    def __repr__(self) -> str:
        return (f"Site({self.index}, {self.name!r}, {self.kind}, neurons={self.neurons}, dead={self.dead}, "
                f"dead_ratio={self.dead_ratio:.3f}, sparsity={self.sparsity:.3f}, dormant={self.dormant})")

    def with_counters(self, counters: SiteCounters) -> Site:
        """The same site with other counters (its metrics recomputed; a proof, which is about
        the model and not the sample, is kept)."""
        return Site(self.index, self.name, self.kind, self.op, dict(self.params), list(self.shape), self.axis,
                    counters, self.tau, self.proof)

    def to_dict(self, with_counters: bool = True) -> dict[str, Any]:
        m = asdict(self.metrics)
        d: dict[str, Any] = {
            "index": self.index, "name": self.name, "kind": self.kind, "op": self.op,
            "params": dict(self.params), "shape": list(self.shape), "axis": self.axis,
            "neurons": m.pop("neurons"), "grad_blocked": self.grad_blocked, **m,
            "sample_axis": self.sample_axis,  # added to v1 (last: CSV columns keep their places)
        }
        if self.proof is not None:  # keys added to v1 by `scan --prove` (SPEC 14)
            d.update(provably_dead=self.proof.count, provably_dead_indices=list(self.proof.indices),
                     proof=list(self.proof.rules))
            if self.upper_bound is not None:  # relu6 / clip: stuck at the bound on every input
                d.update(provably_saturated=len(self.proof.saturated),
                         provably_saturated_indices=list(self.proof.saturated))
        if with_counters:
            d["counters"] = self.counters.to_dict()
        return d

    @property
    def provably_dead_ratio(self) -> float:
        return self.proof.count / self.neurons if self.proof is not None and self.neurons else 0.0

    @classmethod
    def from_dict(cls, d: dict[str, Any], tau: float) -> Site:
        proof = None
        if "provably_dead_indices" in d:
            from .analysis.proof import SiteProof

            proof = SiteProof([int(i) for i in d["provably_dead_indices"]], [str(r) for r in d.get("proof", [])],
                              [int(i) for i in d.get("provably_saturated_indices", [])])
        return cls(
            index=d["index"], name=d["name"], kind=d["kind"], op=d["op"], params=dict(d.get("params", {})),
            shape=list(d["shape"]), axis=d["axis"], counters=SiteCounters.from_dict(d["counters"]), tau=tau,
            proof=proof,
        )


Summary = ModelMetrics  # the JSON `summary`
_PARTS: dict[str, Any] = {"model": ModelInfo, "sample": SampleInfo, "settings": Settings}


def summarize(sites: list[Site], samples: int) -> ModelMetrics:
    """The per-model metrics of these sites (stats.model_metrics does the arithmetic)."""
    return model_metrics(((s.counters, s.metrics, s.grad_blocked) for s in sites), samples)


@dataclass
class Violation:
    gate: str  # "fail_dead_ratio" | "fail_total_dead_ratio" | ...
    threshold: float
    value: float
    site: str | None = None  # None for model-wide gates

    def describe(self) -> str:
        where = f"site {self.site}" if self.site else "model"
        what = "provably dead ratio" if self.gate == "fail_provably_dead" else "dead ratio"
        return f"{where}: {what} {self.value:.1%} > {self.threshold:.1%} ({self.gate.replace('_', '-')})"


@dataclass
class Gates:
    passed: bool = True
    violations: list[Violation] = field(default_factory=list)
    checked: dict[str, float] = field(default_factory=dict)  # gate -> threshold


@dataclass
class Report:
    model: ModelInfo
    sample: SampleInfo
    settings: Settings
    sites: list[Site]
    gates: Gates = field(default_factory=Gates)
    warnings: list[str] = field(default_factory=list)  # Notices (a str with a code); plain str become OTHER
    # The comparison with a baseline (compare.Diff), when scan() was given one; not in the JSON.
    diff: Any = field(default=None, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        # The parts may be given as their JSON dicts (tests, code written before the types).
        part = _PARTS.get(name)
        if part is not None and not isinstance(value, part):
            value = part.from_dict(value)
        elif name == "warnings":
            value = notices.notices(value, notices.OTHER)
        super().__setattr__(name, value)

    @property
    def summary(self) -> ModelMetrics:
        return summarize(self.sites, self.sample.samples)

    def worst_sites(self) -> list[Site]:
        """Grad-blocked sites with dead neurons, highest dead ratio first (ties: execution order)."""
        dying = [s for s in self.sites if s.grad_blocked and s.dead]
        return sorted(dying, key=lambda s: (-s.dead_ratio, s.index))

    def site(self, name: str) -> Site:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)

    def __repr__(self) -> str:
        s = self.summary
        return (f"Report({self.model.label}: {s.sites} sites, {s.dead} dead of {s.grad_blocked_neurons} "
                f"ReLU neurons ({s.dead_ratio:.1%}), {self.sample.samples} samples, "
                f"gates {'passed' if self.gates.passed else 'failed'})")

    def __rich__(self) -> Any:
        """The CLI's table and summary, for `rich.print(report)` and Rich-enabled notebooks."""
        from .render.table import report_renderable

        return report_renderable(self)

    def to_dict(self, with_counters: bool = True) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "tool": {"name": "relu-doctor", "version": __version__},
            "model": self.model.to_dict(),
            "sample": self.sample.to_dict(),
            "settings": self.settings.to_dict(),
            "summary": asdict(self.summary),
            "sites": [s.to_dict(with_counters) for s in self.sites],
            "gates": {
                "passed": self.gates.passed,
                "violations": [asdict(v) for v in self.gates.violations],
                "checked": self.gates.checked,
            },
            "warnings": [str(w) for w in self.warnings],
            "warning_codes": [code_of(w) for w in self.warnings],  # added to v1: what each warning is
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
        """The report of a dict shaped as `to_dict` writes it. Trusts its input: a dict from
        a file goes through validate.check_report first (`Report.load` does)."""
        settings = Settings.from_dict(d["settings"])
        gates = d.get("gates", {})
        sample = SampleInfo.from_dict(d["sample"])
        texts = list(d.get("warnings", []))
        codes = d.get("warning_codes") or [_legacy_code(t, sample.samples) for t in texts]
        return cls(
            model=ModelInfo.from_dict(d["model"]), sample=sample, settings=settings,
            sites=[Site.from_dict(s, settings.tau) for s in d["sites"]],
            gates=Gates(
                passed=gates.get("passed", True),
                violations=[Violation(**v) for v in gates.get("violations", [])],
                checked=dict(gates.get("checked", {})),
            ),
            warnings=[Notice(t, code) for t, code in zip(texts, codes, strict=True)],
        )

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """Read and check a JSON report: anything that is not a consistent v1 report is a UserError."""
        from .validate import load_report_dict

        return cls.from_dict(load_report_dict(path))

    @classmethod
    def of(cls, value: Any, what: str = "report") -> Report:
        """The API's report arguments: a Report, or the path of its JSON (read and checked)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, (str, Path)):
            return cls.load(value)
        from .errors import UserError

        raise UserError(f"{what} must be a Report or the path of its JSON (got {type(value).__name__})",
                        "Pass what relu_doctor.scan returned, or the file `relu-doctor scan -f json -o` wrote.")


def _legacy_code(text: str, samples: int) -> str:
    """The code of a warning in a report written before `warning_codes`: the sample-size
    warning is the exact text this sample size gives; any other is OTHER."""
    return notices.SMALL_SAMPLE if text == small_sample_warning(samples) else notices.OTHER
