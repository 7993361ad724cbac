"""`patch --mode revive`: dead neurons leak (as in channel mode) and the weights that read
them are zeroed, so the model computes what it computed before while gradients reach
those neurons again (ReDo, Sokar et al. 2023: reset the outgoing weights to zero).

Which weights read a site is found in a torch.export graph of the model
(analysis/consumers.py) or in the ONNX graph (revive_onnx.py). A site whose neurons
also reach a residual add, a concat or the output is left alone, with the reason: no
weight can cancel what they add there.

What "the same function" covers: a neuron that never fires contributes w * 0 before
and 0 * leak after, so outputs match bit for bit (up to the sign of an exact zero) on
every input where the revived neurons do not fire: on every input for provably dead
neurons (`scan --prove`), on the sample for neurons dead on the sample.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from ..errors import UserError
from .plan import LeftAlone, PatchPlan


def revive_torch(obj: Any, plan: PatchPlan, example: Sequence[torch.Tensor] | None,
                 include_smooth: bool = False) -> tuple[Any, PatchPlan, list[str]]:
    """The revived copy of an nn.Module or ExportedProgram, the plan as carried out, and warnings."""
    from ..analysis.consumers import find_consumers
    from ..analysis.fx_graphs import export_graph
    from .torch import patch_torch
    from .torch_export import graph_sites

    gm = export_graph(obj, example, "--mode revive", "Use --mode channel.")
    sites = dict(graph_sites(gm.graph, include_smooth))
    if list(sites) != plan.site_names:
        raise UserError("the report's sites are not this model's activation calls (as torch.export sees them)",
                        "Patch with a report of this model (scan it again).")
    kept, cuts = [], []
    zeroed: dict[str, list[str]] = {}
    left = list(plan.left_alone)
    for p in plan.sites:
        found = find_consumers(gm, sites[p.name], p.axis)
        if found.reason is not None:
            left.append(LeftAlone(p.name, len(p.dead), found.reason))
            continue
        kept.append(p)
        cuts += [(cut, list(p.dead)) for cut in found.cuts]
        zeroed[p.name] = [cut.param for cut in found.cuts]
    done = replace(plan, sites=kept, left_alone=left, zeroed=zeroed)
    if not kept:
        return copy.deepcopy(obj), done, []  # a new model, as every rewrite returns
    patched, notes = patch_torch(obj, done, example, include_smooth)
    params = patched.state_dict if isinstance(patched, torch.export.ExportedProgram) else dict(
        patched.named_parameters())
    for cut, neurons in cuts:
        if cut.param not in params:
            raise RuntimeError(f"revive: the patched model has no parameter {cut.param}")
        cut.zero(params[cut.param], neurons)
    return patched, done, notes
