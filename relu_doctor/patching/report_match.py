"""`patch --report R.json` trusts R only as far as the model agrees with it.

A sha256 match says R was written for this file, not that R was left as written: an edited
report that calls a plain Relu `relu6` would make patch insert a Clip(6) and still report
"live neurons unchanged". So the model's own sites, found by a one-batch probe scan with
R's settings, must be R's sites: same names in the same order, and for each the same kind,
parameters, neuron count and neuron axis. The probe costs one forward pass of one batch,
whatever the format (ONNX, .pt2, eager), and sees what the full scan saw.

A site of R that did not run on the probe batch (a branch that batch did not take) cannot
be checked; it is accepted unless patch would rewrite it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import UserError
from ..report import Report, Site

_HINT = "Patch without --report (patch scans the model itself), or scan this model again."


def _identity(s: Site) -> tuple[Any, ...]:
    return (s.kind, sorted(s.params.items()), s.neurons, s.axis)


def _describe(s: Site) -> str:
    params = ", ".join(f"{k}={v:g}" for k, v in sorted(s.params.items()))
    return f"{s.kind}{f'({params})' if params else ''}, {s.neurons} neurons on axis {s.axis}"


def check_report_matches(report: Report, probe: Report, label: str, patched: Iterable[str]) -> None:
    """Refuse (UserError) when `report`'s sites are not those the model showed in `probe`.
    `patched` names the sites the patch would rewrite: each must have been seen."""
    seen = {s.name: s for s in probe.sites}
    listed = {s.name for s in report.sites}
    extra = [name for name in seen if name not in listed]
    if extra:
        raise UserError(f"{label} does not list site {extra[0]!r}, which the model runs "
                        f"({len(probe.sites)} sites ran on a probe batch, the report lists {len(report.sites)})",
                        _HINT)
    for s in report.sites:
        mine = seen.get(s.name)
        if mine is not None and _identity(mine) != _identity(s):
            raise UserError(f"{label} says site {s.name!r} is {_describe(s)}, but in the model it is "
                            f"{_describe(mine)}", _HINT)
    order = [s.name for s in report.sites if s.name in seen]
    if order != [s.name for s in probe.sites]:
        raise UserError(f"{label} lists the model's sites in another order than they run", _HINT)
    unchecked = [name for name in patched if name not in seen]
    if unchecked:
        raise UserError(f"site {unchecked[0]!r} of {label} did not run on a probe batch, so the report's "
                        "description of it cannot be checked against the model", _HINT)
