"""Hostile files built in code for the safety tests: .pt2 archives whose pickles (or shape
expressions) would create a marker file if anything in them ran, zip bombs by declaration,
and ONNX models whose external data points outside their folder."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Callable

import onnx
import torch


class _Payload:
    """Pickles as a call to eval(code): unpickling it runs `code`."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple:
        return (eval, (self.code,))


def marker_code(marker: Path, value: str = "None") -> str:
    """Python that creates `marker`, then evaluates to `value`."""
    return f"(open({str(marker)!r}, 'w').close(), {value})[1]"


def evil_torch_save(marker: Path, value: str = "None") -> bytes:
    """A torch.save archive whose unpickling creates `marker` and returns `value`."""
    buffer = io.BytesIO()
    torch.save(_Payload(marker_code(marker, value)), buffer)
    return buffer.getvalue()


def evil_pickle(marker: Path, value: str = "None") -> bytes:
    return pickle.dumps(_Payload(marker_code(marker, value)))


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.register_buffer("shift", torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x)) + self.shift + torch.tensor([1.0, 2.0, 3.0])


_CLEAN: list[bytes] = []  # exported once per test session


def clean_pt2(path: Path) -> Path:
    if not _CLEAN:
        torch.manual_seed(0)
        ep = torch.export.export(SmallNet().eval(), (torch.randn(2, 4),),
                                 dynamic_shapes=({0: torch.export.Dim("batch")},))
        buffer = io.BytesIO()
        torch.export.save(ep, buffer)
        _CLEAN.append(buffer.getvalue())
    path.write_bytes(_CLEAN[0])
    return path


Edit = Callable[[dict[str, bytes]], None]  # rewrites the archive's members by name (root folder stripped)


def rewrite_pt2(src: Path, dst: Path, edit: Edit) -> None:
    with zipfile.ZipFile(src) as z:
        root = z.namelist()[0].split("/", 1)[0]
        members = {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}
    edit(members)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(f"{root}/{name}", data)


def _config(members: dict[str, bytes], kind: str) -> tuple[str, dict]:
    name = f"data/{kind}/model_{kind}_config.json"
    return name, json.loads(members[name])


def pickled_weight(marker: Path) -> Edit:
    """The weight fc.weight marked use_pickle, its bytes a torch.save that runs code."""
    def edit(m: dict[str, bytes]) -> None:
        name, cfg = _config(m, "weights")
        entry = cfg["config"]["fc.weight"]
        entry["use_pickle"] = True
        parameter = "__import__('torch').nn.Parameter(__import__('torch').zeros(3, 4))"
        m[f"data/weights/{entry['path_name']}"] = evil_torch_save(marker, parameter)
        m[name] = json.dumps(cfg).encode()
    return edit


def pickled_constant(marker: Path) -> Edit:
    def edit(m: dict[str, bytes]) -> None:
        name, cfg = _config(m, "constants")
        entry = next(iter(cfg["config"].values()))
        entry["use_pickle"] = True
        m[f"data/constants/{entry['path_name']}"] = evil_torch_save(marker, "__import__('torch').ones(3)")
        m[name] = json.dumps(cfg).encode()
    return edit


def opaque_constant(marker: Path) -> Edit:
    """A constant stored as an opaque object: torch.export.load runs pickle.loads on it."""
    def edit(m: dict[str, bytes]) -> None:
        name, cfg = _config(m, "constants")
        entry = next(iter(cfg["config"].values()))
        entry.update(path_name="opaque_obj_0", use_pickle=True, tensor_meta=None)  # as torch.export.save writes them
        m["data/constants/opaque_obj_0"] = evil_pickle(marker, "__import__('torch').ones(3)")
        m[name] = json.dumps(cfg).encode()
    return edit


def pickled_sample_inputs(marker: Path) -> Edit:
    """Example inputs that fail a weights-only load, which torch retries with weights_only=False."""
    def edit(m: dict[str, bytes]) -> None:
        m["data/sample_inputs/model.pt"] = evil_torch_save(marker, "((__import__('torch').randn(2, 4),), {})")
    return edit


def eval_in_shape_expression(marker: Path) -> Edit:
    """A symbolic size whose expression sympy.sympify would eval."""
    def edit(m: dict[str, bytes]) -> None:
        text = m["models/model.json"].decode()
        start = text.index('"expr_str": "') + len('"expr_str": "')
        stop = text.index('"', start)
        code = f"__import__('builtins').open({str(marker)!r}, 'w').close() or Symbol('s77', positive=True)"
        m["models/model.json"] = (text[:start] + json.dumps(code)[1:-1] + text[stop:]).encode()
    return edit


def aoti_code(marker: Path) -> Edit:
    def edit(m: dict[str, bytes]) -> None:
        m["data/aotinductor/model/model.so"] = b"\x7fELF not really"
    return edit


def zero_record_bomb(_: Path) -> Edit:
    """A weight whose record is empty and whose metadata declares 2**31 elements: torch.zeros(...)."""
    def edit(m: dict[str, bytes]) -> None:
        name, cfg = _config(m, "weights")
        entry = cfg["config"]["fc.weight"]
        entry["tensor_meta"]["sizes"] = [{"as_int": 2**16}, {"as_int": 2**15}]
        m[f"data/weights/{entry['path_name']}"] = b""
        m[name] = json.dumps(cfg).encode()
    return edit


def declared_bomb(src: Path, dst: Path, declared: int = 3 * 2**30) -> None:
    """`src` with one more member whose central-directory entry declares `declared` bytes, as a
    zip bomb's does (a 4 MB deflate stream of zeros really expands to 4 GB; building one
    here would take seconds)."""
    with zipfile.ZipFile(src) as z:
        items = [(i, z.read(i)) for i in z.infolist()]
    with zipfile.ZipFile(dst, "w") as z:
        for info, data in items:
            z.writestr(info, data)
        root = items[0][0].filename.split("/", 1)[0]
        z.writestr(f"{root}/data/bomb", bytes(1024))
        z.filelist[-1].file_size = declared


def external(tensor: onnx.TensorProto, location: str, folder: Path | None = None) -> None:
    """Move `tensor`'s bytes to external data at `location` (written into `folder` when given)."""
    data = tensor.raw_data or onnx.numpy_helper.to_array(tensor).tobytes()
    if folder is not None:
        (folder / location).write_bytes(data)
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.ClearField("int64_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(data)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def onnx_with_hidden_tensors() -> onnx.ModelProto:
    """x -> + sparse initializer -> + Constant attribute -> If(subgraph with an initializer) -> Relu.
    Every kind of place an external tensor can hide, in one runnable model."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    shift = numpy_helper.from_array(np.array([0.0, -1.0, 0.0, 0.5], np.float32), "shift")
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array([-5.0], np.float32), "sparse"),
                                       numpy_helper.from_array(np.array([1], np.int64), "sparse_idx"), [4])
    branch_w = numpy_helper.from_array(np.array([1.0, 1.0, 1.0, 1.0], np.float32), "branch_w")
    then = helper.make_graph([helper.make_node("Mul", ["b", "branch_w"], ["then_out"])], "then", [],
                             [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, ["N", 4])],
                             initializer=[branch_w])
    other = helper.make_graph([helper.make_node("Identity", ["b"], ["else_out"])], "else", [],
                              [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, ["N", 4])])
    cond = numpy_helper.from_array(np.array(True), "cond_value")
    nodes = [
        helper.make_node("Add", ["x", "sparse"], ["a"]),
        helper.make_node("Constant", [], ["c"], value=shift),
        helper.make_node("Add", ["a", "c"], ["b"]),
        helper.make_node("Constant", [], ["cond"], value=cond),
        helper.make_node("If", ["cond"], ["d"], then_branch=then, else_branch=other),
        helper.make_node("Relu", ["d"], ["y"], name="act"),
    ]
    graph = helper.make_graph(nodes, "hidden", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              sparse_initializer=[sparse])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def hidden_tensor(model: onnx.ModelProto, where: str) -> onnx.TensorProto:
    graph = model.graph
    if where == "sparse initializer":
        return graph.sparse_initializer[0].values
    if where == "node attribute":
        return graph.node[1].attribute[0].t
    then = next(a for a in graph.node[4].attribute if a.name == "then_branch")
    return then.g.initializer[0]


HIDING_PLACES = ("sparse initializer", "node attribute", "If subgraph")


class Printing(torch.nn.Module):
    """Prints from forward (Python): must not reach stdout."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("GUEST OUTPUT from forward")
        return torch.relu(self.fc(x))


class Exiting(Printing):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import sys

        sys.exit(0)


class Hanging(Printing):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import time

        y = torch.relu(self.fc(x))
        while True:
            time.sleep(0.05)
        return y


def exiting_factory() -> torch.nn.Module:
    raise SystemExit(0)
