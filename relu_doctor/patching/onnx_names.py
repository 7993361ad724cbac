"""Site names across a conversion to ONNX: an eager model patched `--to onnx` names its
sites as the scan of the eager model did, so `diff` of before/after matches them.

An ONNX scan names a site by its node (`/layer1/layer1.0/relu/Relu`); the exporter
invents those names, and the patch turns a Relu into a PRelu (`/layer1/layer1.0/PRelu`).
The exported graph holds the same sites in the same order as the report (verification
checks that), so the site nodes are renamed to the report's names, one by one.
"""

from __future__ import annotations

import onnx


def keep_site_names(model: onnx.ModelProto, names: list[str], include_smooth: bool = False) -> list[str]:
    """Rename the site nodes of `model`'s main graph to `names` (the report's, in order), in
    place; return warnings where that cannot be done."""
    from ..backends.onnx_graph import find_sites

    graph = model.graph
    _unique_node_names(graph)
    sites = find_sites(model, include_smooth).sites
    if len(sites) != len(names):
        return [f"the ONNX export has {len(sites)} activation sites, the report {len(names)}: "
                "its site names are the exporter's, so diff with the report will not match them"]
    nodes = {n.name: n for n in graph.node}
    taken = set(nodes)
    notes = []
    for site, name in zip(sites, names):
        node = nodes.get(site.name) if not site.scope else None
        if node is None or site.name == name:
            continue
        if name in taken:  # another node already has that name
            notes.append(f"site {site.name} keeps the exporter's name: {name} names another node")
            continue
        taken.discard(node.name)
        node.name = name
        taken.add(name)
    return notes


def _unique_node_names(graph: onnx.GraphProto) -> None:
    """Every main-graph node named, once: then a site's name is its node's name."""
    seen: set[str] = set()
    names = {n.name for n in graph.node}
    for index, node in enumerate(graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        base = node.name or f"{node.op_type}_{index}"
        candidate, k = base, 1
        while candidate in seen or (candidate != node.name and candidate in names):
            k += 1
            candidate = f"{base}_{k}"
        node.name = candidate
        seen.add(candidate)
