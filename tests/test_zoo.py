"""The architecture zoo: real architectures in every format report their planted dead neurons.

Each case of tests/zoo_models.py runs as the eager module, a TorchScript file (a trace, or
a script for the optional-argument module), a torch.export .pt2 and an ONNX export, on
the same data; every format must report, site by site in execution order, the dead
indices that forward hooks on the eager model give (`reference_dead`), and those must be
the planted ones. The in-repo models are the quick tier; transformers models are slow.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from relu_doctor.cli import app
from tests.zoo_models import ZOO, Positional, ZooCase, reference_dead

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded: every model comes from a config

FORMATS = ("eager", "torchscript", "pt2", "onnx", "onnx_dynamo")  # onnx_dynamo: batch 1 baked in, slow tier
SAMPLES, BATCH = 24, 8
# Their dynamo exports hold Reshapes to constant shapes with the batch inside a product
# (attention's view(T, B * heads, d), OPT's flattened tokens): not relaxable, said once.
BATCH_PINNED = frozenset({"encoder_layer", "scripted_encoder_layer", "opt"})


def _params() -> list:
    out = []
    for case in ZOO:
        for fmt in FORMATS:
            marks = [pytest.mark.slow] if case.slow or fmt == "onnx_dynamo" else []
            if fmt in case.xfail:
                marks.append(pytest.mark.xfail(strict=True, reason=case.xfail[fmt]))
            out.append(pytest.param(case, fmt, marks=marks, id=f"{case.name}-{fmt}"))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Per case, on first use: the model, its data file, its saved formats and the reference."""
    return {}


def _build(case: ZooCase, cache: dict[str, dict], folder: Path) -> dict:
    if case.name in cache:
        return cache[case.name]
    model = case.build()
    data = case.make_data(SAMPLES, 1)
    data_path = folder / "data.npz"
    np.savez(data_path, **dict(zip(case.input_names, data)))
    example = tuple(torch.from_numpy(a) for a in case.make_data(4, 2))
    paths = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporters' deprecation and tracer warnings
        with torch.no_grad():  # as people trace for inference
            script = torch.jit.script(model) if case.script else torch.jit.trace(model, example)
        paths["torchscript"] = folder / "model.pt"
        script.save(str(paths["torchscript"]))
        batch = torch.export.Dim("batch", min=1)
        program = torch.export.export(model, example, dynamic_shapes=tuple({0: batch} for _ in example))
        paths["pt2"] = folder / "model.pt2"
        torch.export.save(program, paths["pt2"])
        paths["onnx"] = folder / "model.onnx"
        exported = Positional(model).eval() if case.onnx_wrapper else model
        torch.onnx.export(exported, example, str(paths["onnx"]), dynamo=False, opset_version=17,
                          input_names=list(case.input_names), output_names=["output"],
                          dynamic_axes={**{n: {0: "batch"} for n in case.input_names}, "output": {0: "batch"}})
        paths["onnx_dynamo"] = folder / "model_dynamo.onnx"
    cache[case.name] = entry = {"model": model, "data": data, "data_path": data_path, "paths": paths,
                                "reference": reference_dead(case, model, data)}
    return entry


def _export_dynamo(case: ZooCase, entry: dict) -> None:
    """The dynamo ONNX exporter with its defaults: the example's batch of 1 is baked in,
    and the scan must relax it (or say why not) and still find the planted neurons."""
    path = entry["paths"]["onnx_dynamo"]
    if path.exists():
        return
    model = Positional(entry["model"]).eval() if case.onnx_wrapper else entry["model"]
    example = tuple(torch.from_numpy(a[:1]) for a in entry["data"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(path), dynamo=True, input_names=list(case.input_names), verbose=False)


def _scan(entry: dict, fmt: str) -> dict:
    if fmt == "eager":
        import relu_doctor as rd

        report = rd.scan(entry["model"], data=entry["data"][0] if len(entry["data"]) == 1 else entry["data"],
                         batch_size=BATCH)
        return json.loads(report.to_json())
    result = CliRunner().invoke(app, ["scan", str(entry["paths"][fmt]), "--data", str(entry["data_path"]),
                                      "--batch-size", str(BATCH), "--format", "json", "--quiet"])
    assert result.exit_code == 0, result.output  # exit 3 would be a capture bug
    return json.loads(result.stdout)


@pytest.mark.parametrize(("case", "fmt"), _params())
def test_every_format_reports_the_planted_dead_neurons(case: ZooCase, fmt: str, built: dict,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    entry = _build(case, built, tmp_path_factory.mktemp(case.name))
    reference = entry["reference"]
    planted = {**case.planted, **case.functional}
    # The reference is the planted answer: hooks see exactly the planted neurons dead
    assert reference == [(path, list(planted[path][1])) for path in planted]
    if fmt == "onnx_dynamo":
        _export_dynamo(case, entry)
    report = _scan(entry, fmt)
    if fmt == "onnx_dynamo":  # relaxed to the batch asked for, or a warning says why not
        if case.name in BATCH_PINNED:
            assert report["sample"]["batch_size"] == 1
            assert any("fixed at 1, and the graph pins it" in w for w in report["warnings"]), report["warnings"]
        else:
            assert report["sample"]["batch_size"] == BATCH, report["warnings"]
    assert report["sample"]["samples"] == SAMPLES
    got = [s["dead_indices"] for s in report["sites"]]
    assert got == [dead for _, dead in reference], [(s["name"], s["neurons"], s["axis"]) for s in report["sites"]]
    assert report["summary"]["dead"] == sum(len(dead) for _, dead in reference)
