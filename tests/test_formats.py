"""The format registry: one entry per format, detection by content, one backend protocol."""

from __future__ import annotations

from pathlib import Path

import pytest

from relu_doctor import formats
from relu_doctor.loading import detect_format

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


@pytest.mark.parametrize("file, name", [("sample_cnn.onnx", "onnx"), ("sample_cnn.pt", "torchscript"),
                                        ("sample_cnn.pt2", "pt2"), ("sample_cnn_state_dict.pt", "state_dict")])
def test_the_registry_detects_each_sample_file_by_content(file: str, name: str, tmp_path: Path) -> None:
    renamed = tmp_path / "model.bin"  # no telling extension: the content decides
    renamed.write_bytes((SAMPLES / file).read_bytes())
    assert detect_format(renamed) == name


def test_every_format_a_patch_writes_can_be_saved_and_every_backend_has_the_protocol() -> None:
    for entry in formats.FORMATS.values():
        if entry.patch_as is not None:
            assert formats.get(entry.patch_as).saver is not None, entry.name
        backend = formats.backend_of(entry.name)
        for function in ("resolve_device", "prepare", "auto_batch_size", "capture"):
            assert callable(getattr(backend, function)), (entry.name, function)
    assert set(formats.OUTPUT_FORMATS) == {"module", "onnx", "pt2", "torchscript"}
