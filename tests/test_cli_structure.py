"""The CLI's shape: options declared once and shared, no import cycle, Rich and Typer only in cli/ and render/."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from relu_doctor.cli import app
from relu_doctor.cli import options as declared

PACKAGE = Path(__file__).resolve().parent.parent / "relu_doctor"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules of relu_doctor that `path` imports at run time (function-level too; TYPE_CHECKING blocks not)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and "TYPE_CHECKING" in ast.unparse(block.test) for n in ast.walk(block)}
    me = _module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            prefix = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{prefix}.{a.name}" for a in node.names} | {prefix}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {d for d in _imports(p) if d in modules and d != m} for m, p in modules.items()}


def test_no_import_cycle_in_the_package() -> None:
    graph = _graph()
    # a package's __init__ importing its own submodules is not a way back
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(edges[m]):
            assert state.get(d) != 1, "import cycle: " + " -> ".join([*path[path.index(d):], d])
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_only_cli_and_render_import_rich_or_typer() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if name.startswith(("relu_doctor.cli", "relu_doctor.render")):
            continue
        heavy = {m for m in _imports(path) if m.split(".")[0] in ("rich", "typer", "click")}
        if heavy:
            offenders.append(f"{name}: {sorted(heavy)}")
    assert not offenders


def test_command_modules_never_import_the_cli_package_itself() -> None:
    for path in (PACKAGE / "cli").glob("*.py"):
        if path.name != "__init__.py":
            assert "relu_doctor.cli" not in _imports(path), path.name


def _options_of(command: str) -> dict[str, object]:
    """Each --flag of `command` -> the click parameter typer built for it."""
    import typer.main

    group = typer.main.get_command(app)
    return {flag: p for p in group.commands[command].params for flag in p.opts}  # type: ignore[attr-defined]


def test_every_sample_and_measure_option_of_scan_is_an_option_of_patch_with_the_same_help() -> None:
    scan, patch = _options_of("scan"), _options_of("patch")
    shared = [o for g in (declared.MODEL, declared.SAMPLE, declared.MEASURE, declared.SELECT, declared.RUN) for o in g]
    for opt in shared:
        flag = opt.flags[0]
        assert flag in scan and flag in patch, flag
        assert scan[flag].help == patch[flag].help == opt.help  # type: ignore[attr-defined]
    for flag in ("--image-size", "--mean", "--std", "--max-batches", "--tau", "--include-smooth"):
        assert flag in patch


@pytest.fixture(scope="module")
def reused_relu(all_formats: Callable[[str], dict[str, Path]]) -> dict[str, Path]:
    return all_formats("reused_relu")  # the session's files (conftest.py): saved once for every module


def test_patch_reads_an_image_folder_with_scans_image_options(reused_relu: dict, tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # 12x10 images: only --image-size 8,8 makes them fit the (3, 8, 8) input
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "patched.onnx"
    result = CliRunner().invoke(app, ["patch", str(reused_relu["onnx"]), "--data", str(images), "--image-size", "8,8",
                                      "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--batch-size", "2",
                                      "--max-batches", "2", "--tau", "0.1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    # the planted dead neurons (3 sites, 7 neurons) are dead on any input, images included
    assert "3 site(s), 7 neuron(s) made leaky" in result.stdout
    # --max-batches 2 of --batch-size 2: the verification ran the scan's 4 samples, not all 6
    assert "Verified, reloaded from the file: 4 sample + 32 fresh" in result.stdout
    assert out.is_file()


def test_patch_without_image_size_says_so_and_writes_nothing(reused_relu: dict, tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((12, 10, 3), np.uint8)).save(images / "a.png")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(images / "b.png")
    result = CliRunner().invoke(app, ["patch", str(reused_relu["onnx"]), "--data", str(images),
                                      "-o", str(tmp_path / "p.onnx")])
    assert result.exit_code == 2 and "--image-size" in result.output
    assert not (tmp_path / "p.onnx").exists()
