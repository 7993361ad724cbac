"""Merge partial scans of one model into the report of the whole sample (SPEC 11).

Every statistic is computed from per-site counters (sums, counts, min/max), so adding
the counters of disjoint sample shards gives exactly the counters of their union; the
metrics, summary and gates are then recomputed from those, never averaged.
Integer counters come out bit-identical; float sums (sum |y|, total) can differ from a
single scan in the last bits, because the shards add the same batch sums in a different
order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from . import notices as codes
from .errors import UserError
from .gates import regate
from .notices import Notice, code_of
from .option_values import flag
from .report import ModelInfo, Report, SampleInfo, Settings, Site
from .stats import small_sample_warning

# Settings whose difference would make the sum meaningless (sites counted differently).
_SAME_SETTINGS = ("tau", "neuron_axis", "include_smooth", "select", "ignore")


def merge_reports(reports: Sequence[Report], labels: Sequence[str] | None = None,
                  gates: dict[str, float] | None = None) -> Report:
    """The report of all the reports' samples together; `labels` name them in errors (file paths).

    The whole is judged by `gates` (gate -> threshold, merge's --fail-* flags) when given,
    else by the gates the parts recorded (the strictest of each, when they differ).
    """
    if not reports:
        raise UserError("nothing to merge", "Pass the JSON reports of the partial scans.")
    labels = list(labels) if labels is not None else [f"report {i + 1}" for i in range(len(reports))]
    first, label0 = reports[0], labels[0]
    for r, label in zip(reports[1:], labels[1:], strict=True):
        _check_compatible(first, label0, r, label)
    _check_shards(reports, labels)
    sites = []
    for i, s in enumerate(first.sites):
        counters = s.counters
        for r in reports[1:]:
            counters = counters.merge(r.sites[i].counters)
        merged_site = s.with_counters(counters)
        if any(_proof_of(r.sites[i]) != _proof_of(s) for r in reports[1:]):
            merged_site.proof = None  # parts proved under different input ranges: no single claim
        sites.append(merged_site)
    samples = sum(r.sample.samples for r in reports)
    merged = Report(
        model=ModelInfo.from_dict(first.model.to_dict()), sample=_merged_sample(reports, labels, samples),
        settings=Settings.from_dict(first.settings.to_dict()), sites=sites,
        warnings=_merged_warnings(reports, labels, samples),
    )
    checked = gates if gates is not None else _recorded_gates(reports, merged.warnings)
    merged.gates = regate(sites, first.settings.select, first.settings.ignore, checked)
    return merged


def _proof_of(s: Site) -> Any:
    return None if s.proof is None else (list(s.proof.indices), list(s.proof.rules), list(s.proof.saturated))


def _check_compatible(a: Report, la: str, b: Report, lb: str) -> None:
    """Refuse what cannot be summed; one line saying which reports differ and how."""
    sha_a, sha_b = a.model.sha256, b.model.sha256
    if sha_a != sha_b:
        raise UserError(f"{la} and {lb} are scans of different models (sha256 {str(sha_a)[:12]} vs "
                        f"{str(sha_b)[:12]})", "Merge only partial scans of the same model file.")
    for key in _SAME_SETTINGS:
        va, vb = getattr(a.settings, key), getattr(b.settings, key)
        if va != vb:
            raise UserError(f"{la} and {lb} were scanned with different {key} ({va!r} vs {vb!r})",
                            "Scan every shard with the same options.")
    if a.sample.inputs != b.sample.inputs:
        raise UserError(f"{la} and {lb} have different model inputs (shapes or dtypes)",
                        "Merge only scans of the same inputs.")
    if len(a.sites) != len(b.sites):
        raise UserError(f"{la} has {len(a.sites)} sites and {lb} has {len(b.sites)}",
                        "Merge only partial scans of the same model with the same options.")
    for sa, sb in zip(a.sites, b.sites, strict=True):
        if _identity(sa) != _identity(sb):
            raise UserError(f"site {sa.index} differs between {la} and {lb}: {_describe(sa)} vs {_describe(sb)}",
                            "Merge only partial scans of the same model with the same options.")


def _shards(reports: Sequence[Report]) -> list[tuple[int, int]]:
    """(i, n) of each part scanned with --shard i/n."""
    out = []
    for r in reports:
        if r.sample.shard is not None:
            i, _, n = r.sample.shard.partition("/")
            out.append((int(i), int(n)))
    return out


def _check_shards(reports: Sequence[Report], labels: Sequence[str]) -> None:
    """A shard given twice would count its inputs twice; shards of different splits overlap."""
    seen: dict[tuple[int, int], str] = {}
    for r, label in zip(reports, labels, strict=True):
        for key in _shards([r]):
            if key in seen:
                raise UserError(f"{seen[key]} and {label} are both shard {key[0]}/{key[1]}",
                                "Pass each shard once: merge counts every input it is given.")
            seen[key] = label
    if len({n for _, n in seen}) > 1:
        splits = ", ".join(f"{i}/{n}" for i, n in seen)
        raise UserError(f"the reports come from different splits ({splits})",
                        "Merge the shards of one split (--shard I/N with the same N).")


def _identity(s: Site) -> tuple[Any, ...]:
    return (s.name, s.kind, s.op, s.params, list(s.shape), s.axis, s.counters.neurons, s.counters.min is None)


def _describe(s: Site) -> str:
    return f"{s.name} ({s.kind}, {s.neurons} neurons, axis {s.axis}, shape {list(s.shape)})"


def _recorded_gates(reports: Sequence[Report], warnings: list[str]) -> dict[str, float]:
    """The gates the parts recorded; where they differ, the strictest threshold of each (and a warning)."""
    checked: dict[str, float] = {}
    for r in reports:
        for gate, threshold in r.gates.checked.items():
            checked[gate] = min(threshold, checked.get(gate, threshold))
    if any(r.gates.checked != reports[0].gates.checked for r in reports):
        chosen = ", ".join(f"{flag(k)} {v:g}" for k, v in checked.items())
        warnings.append(f"the parts recorded different gates; the whole is judged by the strictest of each "
                        f"({chosen}): pass merge's --fail-* options to choose")
    return checked


def _common(reports: Sequence[Report], key: str) -> Any:
    """The sample field shared by every report, or None when they differ."""
    values = [getattr(r.sample, key) for r in reports]
    return values[0] if all(v == values[0] for v in values) else None


def _merged_sample(reports: Sequence[Report], labels: Sequence[str], samples: int) -> SampleInfo:
    source = _common(reports, "source")
    shards = _shards(reports)
    complete = bool(shards) and sorted(shards) == [(i, shards[0][1]) for i in range(shards[0][1])]
    return replace(
        SampleInfo.from_dict(reports[0].sample.to_dict()),
        samples=samples, batch_size=_common(reports, "batch_size"), seed=_common(reports, "seed"),
        source=source if source is not None else "merged",
        # Provenance of the parts; a key added to v1 (allowed), absent from single scans.
        merged_from=[
            {"report": label, "source": r.sample.source, "samples": r.sample.samples,
             **({"shard": r.sample.shard} if r.sample.shard is not None else {})}
            for r, label in zip(reports, labels, strict=True)
        ],
        shard=None,
        # A complete set of shards is the whole sample: no shard left to name.
        of_samples=None if complete else reports[0].sample.of_samples,
    )


def _merged_warnings(reports: Sequence[Report], labels: Sequence[str], samples: int) -> list[str]:
    """Every part's warnings once, in order, except the sample-size one, which is redone for the total."""
    seen: dict[str, Notice] = {}
    for r in reports:
        for w in r.warnings:
            if code_of(w) != codes.SMALL_SAMPLE:
                seen.setdefault(str(w), Notice(w, code_of(w)))
    out: list[str] = list(seen.values())
    if reports[0].model.sha256 is None:
        out.append(Notice("the reports carry no model sha256 (in-memory models): cannot check they are of the "
                          "same model", codes.NO_SHA256))
    shards = _shards(reports)
    if shards and len(shards) < shards[0][1]:
        missing = sorted(set(range(shards[0][1])) - {i for i, _ in shards})
        whole = reports[0].sample.of_samples
        out.append(Notice(f"shards {', '.join(f'{i}/{shards[0][1]}' for i in missing)} are missing: the merged "
                          f"report covers {samples} of {whole if whole is not None else '?'} samples",
                          codes.MISSING_SHARDS))
    measured = [any(s.counters.has_extremes for s in r.sites) for r in reports]
    if any(measured) and not all(measured):
        out.append(Notice(f"{', '.join(lb for lb, m in zip(labels, measured) if not m)} kept no per-neuron max/min "
                          "(scanned without --neurons / neuron_extremes): the merged report has none either",
                          codes.EXTREMES_NOT_MERGED))
    for i, j in _same_sample_pairs(reports):
        out.append(Notice(f"{labels[i]} and {labels[j]} have identical counters: probably the same sample scanned "
                          "twice, which the merge counts twice", codes.DUPLICATE_SAMPLE))
    floor = small_sample_warning(samples)
    if floor:
        out.append(Notice(floor, codes.SMALL_SAMPLE))
    return out


def _same_sample_pairs(reports: Sequence[Report]) -> list[tuple[int, int]]:
    """Pairs of parts whose counters are equal everywhere: almost surely one sample scanned twice."""
    def key(r: Report) -> tuple[Any, ...]:
        return tuple((s.counters.rows, s.counters.fires.tobytes(), s.counters.abs_sum.tobytes()) for s in r.sites)

    keys = [key(r) for r in reports]
    return [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys)) if keys[i] == keys[j] and keys[i]]
