"""A patched site keeps its name across `patch --arch ... --to onnx`: a before/after `diff`
matches every site by name (issue 15). Through the CLI, on catalogue models whose sites
are module calls, a shared module, functional spellings and in-place calls."""

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


@pytest.mark.parametrize("name", ["reused_relu", "functional", "inplace"])
def test_diff_of_patch_to_onnx_matches_every_site_by_name(tmp_path: Path, name: str) -> None:
    c = case(name)
    weights, data = tmp_path / "w.pt", tmp_path / "x.npy"
    torch.save(c.build().state_dict(), weights)
    np.save(data, sample_data(c, n=32, seed=3))
    before, after, out = tmp_path / "before.json", tmp_path / "after.json", tmp_path / "patched.onnx"
    _cli("scan", weights, "--arch", c.factory, "--data", data, "-f", "json", "-o", before, "-q")
    _cli("patch", weights, "--arch", c.factory, "--data", data, "--to", "onnx", "-o", out, "-q")
    _cli("scan", out, "--data", data, "-f", "json", "-o", after, "-q")
    names = [s["name"] for s in json.loads(before.read_text())["sites"]]
    assert names == [s.name for s in c.sites]  # the eager names, known from the catalogue
    assert [s["name"] for s in json.loads(after.read_text())["sites"]] == names
    diff = json.loads(_cli("diff", before, after, "-f", "json"))
    assert diff["summary"]["sites_matched"] == len(names)
    assert diff["added"] == [] and diff["removed"] == []
    patched = {s["name"] for s in diff["sites"] if s.get("kind_base")}  # relu -> prelu where dead
    assert patched == {s.name for s in c.sites if s.dead}
