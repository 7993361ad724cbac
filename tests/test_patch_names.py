"""A patched site keeps its name in every output format of `patch --arch ... --to FORMAT`:
a before/after `diff` matches every site by name (issue 15). Through the CLI, on catalogue
models whose sites are module calls, a shared module, functional spellings and in-place
calls."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from relu_doctor.cli import app
from tests.models import case, sample_data


def _cli(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [*map(str, args)])
    assert result.exit_code == 0, result.output
    return result.stdout


OUTPUTS = {"onnx": "patched.onnx", "pt2": "patched.pt2", "torchscript": "patched.ts", "module": "patched.pt"}


@pytest.mark.parametrize("to", list(OUTPUTS))
@pytest.mark.parametrize("name", ["reused_relu", "functional", "inplace"])
def test_diff_of_patch_to_any_format_matches_every_site_by_name(tmp_path: Path, name: str, to: str) -> None:
    c = case(name)
    weights, data = tmp_path / "w.pt", tmp_path / "x.npy"
    torch.save(c.build().state_dict(), weights)
    np.save(data, sample_data(c, n=32, seed=3))
    before, after, out = tmp_path / "before.json", tmp_path / "after.json", tmp_path / OUTPUTS[to]
    _cli("scan", weights, "--arch", c.factory, "--data", data, "-f", "json", "-o", before, "-q")
    _cli("patch", weights, "--arch", c.factory, "--data", data, "--to", to, "-o", out, "-q")
    _cli("scan", out, "--data", data, "-f", "json", "-o", after, "-q", *(["--trust-pickle"] if to == "module" else []))
    names = [s["name"] for s in json.loads(before.read_text())["sites"]]
    assert names == [s.name for s in c.sites]  # the eager names, known from the catalogue
    assert [s["name"] for s in json.loads(after.read_text())["sites"]] == names
    diff = json.loads(_cli("diff", before, after, "-f", "json"))
    assert diff["summary"]["sites_matched"] == len(names)
    assert diff["added"] == [] and diff["removed"] == []
    patched = {s["name"] for s in diff["sites"] if s.get("kind_base")}  # relu -> prelu where dead
    assert patched == {s.name for s in c.sites if s.dead}


def test_the_api_patch_keeps_the_names_too() -> None:
    import relu_doctor as rd

    c = case("functional")
    model, data = c.build(), sample_data(c, n=32, seed=3)
    report = rd.scan(model, data)
    patched = rd.patch(model, report)
    after = rd.scan(patched, data)
    assert [s.name for s in after.sites] == [s.name for s in report.sites] == [s.name for s in c.sites]
    assert [s.kind for s in after.sites] == ["prelu" if s.dead else "relu" for s in c.sites]


def test_recorded_names_apply_by_name_and_never_to_other_sites() -> None:
    from relu_doctor.site_names import apply

    class S:
        def __init__(self, name: str) -> None:
            self.name = name

    sites = [S("/prelu"), S("/gelu"), S("block.relu")]
    assert apply(sites, [("/prelu", "/relu"), ("block.relu", "block.relu")]) == []
    assert [s.name for s in sites] == ["/relu", "/gelu", "block.relu"]
    other = [S("x/relu")]
    assert apply(other, [("/prelu", "/relu")]) and other[0].name == "x/relu"  # not these sites: a warning
