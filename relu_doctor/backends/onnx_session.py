"""onnxruntime sessions for in-memory models, set up as the instrumented graph needs them.

The execution order and the memory settings matter for the instrumented model's peak
memory (see `_new_session`); all sessions go through `_new_session`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import EncodeError


def make_session(model: onnx.ModelProto, providers: list, threads: int | None = None, options: Any = None) -> Any:
    """An onnxruntime session for an in-memory model (through a temporary file past 2 GiB)."""
    serialized = session_bytes(model)
    if serialized is not None:
        return session_from_bytes(serialized, providers, threads, options)
    with tempfile.TemporaryDirectory(prefix="relu-doctor-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin")
        return _new_session(str(path), providers, threads, options)


def session_bytes(model: onnx.ModelProto) -> bytes | None:
    """The model serialized for `session_from_bytes`, after checking that it holds no external
    references (onnxruntime would resolve them against the current directory); None past
    protobuf's 2 GiB (make_session then goes through a file). A caller that drops its proto
    before creating the session keeps one copy of the weights fewer while onnxruntime parses."""
    from .onnx_loading import require_in_memory

    require_in_memory(model)
    try:
        return model.SerializeToString()
    except (ValueError, EncodeError):  # over protobuf's 2 GiB
        return None


def session_from_bytes(serialized: bytes, providers: list, threads: int | None = None, options: Any = None) -> Any:
    """A session for bytes from `session_bytes` (only those: they were checked there)."""
    session = _new_session(serialized, providers, threads, options)
    # onnxruntime's Python session keeps the bytes it was built from for as long as it lives
    # (46 MB on a ResNet-18, as much as the weights), only to rebuild itself on another
    # provider when one fails. With the CPU provider alone there is nothing to fall back to.
    if all((p[0] if isinstance(p, tuple) else p) == "CPUExecutionProvider" for p in providers) \
            and hasattr(session, "_model_bytes"):
        session.disable_fallback()
        session._model_bytes = None
    return session


def _new_session(model: str | bytes, providers: list, threads: int | None, options: Any) -> Any:
    import onnxruntime as ort

    options = options or ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime warns about our shared constants; not the user's concern
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED  # see onnx_instrument._instrument_graph
    # onnxruntime's memory pattern plans one block for all of a run's buffers from the first
    # run and allocates it on the second, while the first run's buffers stay in the arena: on
    # ResNet-18 (batch 32, instrumented) peak RSS went from 577 MiB after one run to 773 MiB
    # after two. Without it the arena serves every run: 577 MiB throughout (bare inference
    # with the pattern: 549), at the same CPU time per run (1.165 s against 1.172 s).
    options.enable_mem_pattern = False
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model, options, providers=providers)
