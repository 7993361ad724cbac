"""Site names that survive a patch: a patched torch model carries the names its sites had
in the report it was patched from, so `diff` of before/after lines up (issue 15).

Patching changes what names a site: a ReLU module becomes a leak module, a functional
`relu` becomes a `prelu` call, so the naming rule (backends/torch_naming.py) gives new
names. The patch writes the pairs (name now, name in the report), in site order, into
the model: an extra file of a TorchScript or .pt2 archive, an attribute of a pickled
module (ONNX renames its nodes instead: patching/onnx_names.py). A scan applies them when
the model still has every recorded site; otherwise it says so and keeps its own names.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

EXTRA_FILE = "relu_doctor_site_names.json"  # in an archive's extra/ folder
ATTRIBUTE = "relu_doctor_site_names"  # on a pickled nn.Module
_MAX_BYTES = 16 * 2**20

Pairs = list[tuple[str, str]]


def pairs_for(now: list[str], report: list[str]) -> Pairs | None:
    """What to record: None when nothing is renamed (or the lists do not line up)."""
    if len(now) != len(report) or now == report:
        return None
    return list(zip(now, report))


def to_json(pairs: Pairs) -> str:
    return json.dumps({"sites": [list(p) for p in pairs]})


def read_archive(path: Path) -> Pairs | None:
    """The pairs in a TorchScript / .pt2 archive's extra/ folder, or None."""
    try:
        with zipfile.ZipFile(path) as z:
            member = next((i for i in z.infolist() if i.filename.endswith(f"/extra/{EXTRA_FILE}")
                           and i.filename.count("/") == 2), None)
            if member is None or member.file_size > _MAX_BYTES:
                return None
            return _parse(z.read(member).decode("utf-8"))
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, ValueError):
        return None


def of_object(obj: Any) -> Pairs | None:
    value = getattr(obj, ATTRIBUTE, None) if not hasattr(obj, "_c") else None  # not a ScriptModule
    return _parse(value) if isinstance(value, str) else None


def _parse(text: str) -> Pairs | None:
    try:
        sites = json.loads(text).get("sites")
    except (ValueError, AttributeError):
        return None
    if not isinstance(sites, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in sites):
        return None
    return [(p[0], p[1]) for p in sites]


def apply(sites: list[Any], pairs: Pairs | None) -> list[str]:
    """Give `sites` (objects with a .name, in order) their recorded names; warnings."""
    if not pairs:
        return []
    # By name, not position: a scan with --include-smooth lists more sites, named apart
    mapping = dict(pairs)
    current = [s.name for s in sites]
    renamed = [mapping.get(n, n) for n in current]
    if not set(mapping) <= set(current) or len(set(renamed)) != len(renamed):
        return ["the model records the site names of the report it was patched from, but its sites are not "
                "the ones recorded: names are the model's own"]
    for site, name in zip(sites, renamed):
        site.name = name
    return []
