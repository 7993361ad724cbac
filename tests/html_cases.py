"""Reports, diffs and timelines for the HTML tests, built from counters with known answers.

Names are hostile on purpose (markup, quotes, mathtext, Mermaid syntax): no name may
change the page's structure.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from relu_doctor.report import Report, Site
from relu_doctor.stats import SiteCounters

HOSTILE = ['<script>alert("x")</script>', "</text><svg onload=alert(1)>", "$\\frac{a}{b}$", "a&amp;b'\"",
           "<img src=http://example.com/x.png>"]
ROWS = 400


def site_name(i: int) -> str:
    return HOSTILE[i] if i < len(HOSTILE) else f"stage{i // 10}.block{i % 10}.relu"


def big_report(sites: int, neurons: int, seed: int = 0, leaky_every: int = 7) -> Report:
    """`sites` sites of `neurons` neurons; site i has i % 11 dead neurons planted (fires = 0)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(sites):
        fires = rng.integers(ROWS // 50, ROWS + 1, neurons)  # none rarely active by chance
        fires[: i % 11] = 0
        fires[i % 11: i % 11 + 2] = 1  # rarely active
        kind = "leaky_relu" if i % leaky_every == leaky_every - 1 else "relu"
        counters = SiteCounters(neurons, rows=ROWS, samples=40, fires=fires, sample_fires=np.minimum(fires, 40),
                                abs_sum=fires * 0.3, total=float(fires.sum()) * 0.3, max=3.0)
        out.append(Site(i, site_name(i), kind, "nn.ReLU", {"negative_slope": 0.01} if kind != "relu" else {},
                        [neurons], 1, counters))
    return Report(model={"path": "<b>model</b>.onnx", "format": "onnx", "sha256": "ab" * 32},
                  sample={"source": "batch.npy", "samples": 40, "batch_size": 8, "seed": None, "inputs": []},
                  settings={"tau": 0.025, "neuron_axis": "auto", "include_smooth": False}, sites=out)


def timeline(sites: int, points: int, neurons: int = 64, fail_new_dead: float | None = None) -> dict[str, Any]:
    """Site i loses a neuron every (i % 5 + 1) points, from point 1 on (Timeline.to_dict()'s shape)."""
    steps = [100 * p for p in range(points)]
    out_sites, dead_at = [], np.zeros((points, sites))
    for i in range(sites):
        every = i % 5 + 1
        died = {str(n): steps[1 + n * every] for n in range(neurons) if 1 + n * every < points}
        ratios = [sum(1 for s in died.values() if s <= step) / neurons for step in steps]
        dead_at[:, i] = [r * neurons for r in ratios]
        out_sites.append({"name": site_name(i), "kind": "relu" if i % 7 else "leaky_relu", "grad_blocked": i % 7 != 0,
                          "neurons": neurons, "dead_ratio": ratios, "dead": [round(r * neurons) for r in ratios],
                          "died_at": died, "revived": {}})
    total = sites * neurons
    pts = [{"step": s, "label": f"steps {s}-{s + 9}",
            "summary": {"sites": sites, "neurons": total, "dead": int(dead_at[p].sum()),
                        "dead_ratio": float(dead_at[p].sum() / total)}} for p, s in enumerate(steps)]
    violations = [] if fail_new_dead is None else [
        {"site": s["name"], "new_dead": s["dead"][-1] - s["dead"][0], "neurons": neurons,
         "threshold_pp": fail_new_dead, "points": 100 * (s["dead"][-1] - s["dead"][0]) / neurons}
        for s in out_sites if s["grad_blocked"] and 100 * (s["dead"][-1] - s["dead"][0]) / neurons > fail_new_dead]
    gates = {"passed": not violations, "checked": {} if fail_new_dead is None else {"fail_new_dead": fail_new_dead},
             "violations": violations}
    return {"schema": "relu-doctor/timeline/v1", "source": "history", "points": pts, "sites": out_sites,
            "gates": gates, "warnings": []}
