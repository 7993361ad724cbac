"""Merge partial scans of one model into the report of the whole sample (SPEC 11).

Every statistic is computed from per-site counters (sums, counts, min/max), so adding
the counters of disjoint sample shards gives exactly the counters of their union; the
metrics, summary and gates are then recomputed from those, never averaged.
Integer counters come out bit-identical; float sums (sum |y|, total) can differ from a
single scan in the last bits, because the shards add the same batch sums in a different
order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .errors import UserError
from .gates import regate
from .report import Report, Site
from .stats import small_sample_warning

# Settings whose difference would make the sum meaningless (sites counted differently).
_SAME_SETTINGS = ("tau", "neuron_axis", "include_smooth", "select", "ignore")
# The warning api.scan adds for small samples; recomputed for the merged sample size.
_FLOOR_WARNING = re.compile(r"^\d+ samples: a neuron firing on fewer than ")


def merge_reports(reports: Sequence[Report], labels: Sequence[str] | None = None) -> Report:
    """The report of all the reports' samples together; `labels` name them in errors (file paths)."""
    if not reports:
        raise UserError("nothing to merge", "Pass the JSON reports of the partial scans.")
    labels = list(labels) if labels is not None else [f"report {i + 1}" for i in range(len(reports))]
    first, label0 = reports[0], labels[0]
    for r, label in zip(reports[1:], labels[1:], strict=True):
        _check_compatible(first, label0, r, label)
    _check_shards(reports, labels)
    sites = [
        Site(s.index, s.name, s.kind, s.op, s.params, s.shape, s.axis, s.counters, s.tau) for s in first.sites
    ]
    for r in reports[1:]:
        for i, s in enumerate(r.sites):
            sites[i].counters = sites[i].counters.merge(s.counters)
    samples = sum(int(r.sample.get("samples", 0)) for r in reports)
    merged = Report(
        model=dict(first.model), sample=_merged_sample(reports, labels, samples), settings=dict(first.settings),
        sites=sites, warnings=_merged_warnings(reports, labels, samples),
    )
    merged.gates = regate(sites, first.settings.get("select", ()), first.settings.get("ignore", ()),
                          first.gates.checked)
    return merged


def _check_compatible(a: Report, la: str, b: Report, lb: str) -> None:
    """Refuse what cannot be summed; one line saying which reports differ and how."""
    sha_a, sha_b = a.model.get("sha256"), b.model.get("sha256")
    if sha_a != sha_b:
        raise UserError(f"{la} and {lb} are scans of different models (sha256 {str(sha_a)[:12]} vs "
                        f"{str(sha_b)[:12]})", "Merge only partial scans of the same model file.")
    for key in _SAME_SETTINGS:
        if a.settings.get(key) != b.settings.get(key):
            raise UserError(f"{la} and {lb} were scanned with different {key} ({a.settings.get(key)!r} vs "
                            f"{b.settings.get(key)!r})", "Scan every shard with the same options.")
    if a.gates.checked != b.gates.checked:
        raise UserError(f"{la} and {lb} were scanned with different gates ({_gates(a)} vs {_gates(b)})",
                        "Scan every shard with the same --fail-* options.")
    if a.sample.get("inputs") != b.sample.get("inputs"):
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
        if "shard" in r.sample:
            i, _, n = str(r.sample["shard"]).partition("/")
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


def _gates(r: Report) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in r.gates.checked.items()) or "none"


def _common(reports: Sequence[Report], key: str) -> Any:
    """The sample field shared by every report, or None when they differ."""
    values = [r.sample.get(key) for r in reports]
    return values[0] if all(v == values[0] for v in values) else None


def _merged_sample(reports: Sequence[Report], labels: Sequence[str], samples: int) -> dict[str, Any]:
    sample = dict(reports[0].sample)
    sample.update(samples=samples, batch_size=_common(reports, "batch_size"), seed=_common(reports, "seed"))
    source = _common(reports, "source")
    sample["source"] = source if source is not None else "merged"
    # Provenance of the parts; a key added to v1 (allowed), absent from single scans.
    sample["merged_from"] = [
        {"report": label, "source": r.sample.get("source"), "samples": r.sample.get("samples"),
         **({"shard": r.sample["shard"]} if "shard" in r.sample else {})}
        for r, label in zip(reports, labels, strict=True)
    ]
    # A complete set of shards is the whole sample: no shard left to name.
    shards = _shards(reports)
    sample.pop("shard", None)
    if shards and sorted(shards) == [(i, shards[0][1]) for i in range(shards[0][1])]:
        sample.pop("of_samples", None)
    return sample


def _merged_warnings(reports: Sequence[Report], labels: Sequence[str], samples: int) -> list[str]:
    """Every part's warnings once, in order, except the sample-size one, which is redone for the total."""
    seen: dict[str, None] = {}
    for r in reports:
        for w in r.warnings:
            if not _FLOOR_WARNING.match(w):
                seen.setdefault(w, None)
    out = list(seen)
    if reports[0].model.get("sha256") is None:
        out.append("the reports carry no model sha256 (in-memory models): cannot check they are of the same model")
    shards = _shards(reports)
    if shards and len(shards) < shards[0][1]:
        missing = sorted(set(range(shards[0][1])) - {i for i, _ in shards})
        out.append(f"shards {', '.join(f'{i}/{shards[0][1]}' for i in missing)} are missing: the merged report "
                   f"covers {samples} of {reports[0].sample.get('of_samples', '?')} samples")
    for i, j in _same_sample_pairs(reports):
        out.append(f"{labels[i]} and {labels[j]} have identical counters: probably the same sample scanned "
                   "twice, which the merge counts twice")
    floor = small_sample_warning(samples)
    if floor:
        out.append(floor)
    return out


def _same_sample_pairs(reports: Sequence[Report]) -> list[tuple[int, int]]:
    """Pairs of parts whose counters are equal everywhere: almost surely one sample scanned twice."""
    def key(r: Report) -> tuple[Any, ...]:
        return tuple((s.counters.rows, s.counters.fires.tobytes(), s.counters.abs_sum.tobytes()) for s in r.sites)

    keys = [key(r) for r in reports]
    return [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys)) if keys[i] == keys[j] and keys[i]]
