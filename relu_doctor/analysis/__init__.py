"""Analyses: timelines of a training run (timeline.py), and data-free proofs of which neurons
are dead on every input (structural rules, interval bounds).

`prove_report(loaded, report, input_range)` attaches a SiteProof to every site of a
scan's report that the prover reached; see proof.py for the rules and what a proof
assumes.
"""

from __future__ import annotations

from typing import Any

from .proof import RULES, ProofResult, SiteProof

__all__ = ["RULES", "ProofResult", "SiteProof", "prove", "prove_report"]


def prove(obj: Any, fmt: str, report: Any, input_range: tuple[float, float] | None) -> ProofResult:
    """Proofs for the sites of `report` (a scan of `obj`, a loaded model object of format `fmt`)."""
    inputs = report.sample.get("inputs", [])
    include_smooth = bool(report.settings.get("include_smooth", False))
    if fmt == "onnx":
        from .prove_onnx import prove_onnx

        return prove_onnx(obj, inputs, report.sites, input_range, include_smooth)
    from .prove_torch import prove_torch

    return prove_torch(obj, inputs, report.sites, input_range, include_smooth)


def prove_report(obj: Any, fmt: str, report: Any, input_range: tuple[float, float] | None) -> ProofResult:
    """Run `prove` and store its answer in the report: per-site proofs, settings, warnings."""
    result = prove(obj, fmt, report, input_range)
    for site in report.sites:
        site.proof = result.sites.get(site.name, SiteProof())
    from .. import notices

    report.settings.extra["prove"] = {"input_range": list(input_range) if input_range is not None else None,
                                      "analysed": result.graph}
    report.warnings.extend(notices.notices([f"prove: {w}" for w in result.warnings], notices.OTHER))
    return result
