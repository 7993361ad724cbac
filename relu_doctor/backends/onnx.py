"""Capture in ONNX models with onnxruntime: reductions inside the graph, sums in numpy.

`find_sites` (onnx_graph.py) lists the sites, `instrument` (onnx_instrument.py) adds the
reduction nodes after each one, and onnxruntime returns per-(sample, neuron) partials
that `SiteAccumulator` (onnx_counters.py) adds up into the counters of stats.py.
This path never imports torch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from ..errors import UserError
from ..guest import running
from ..inputs import InputSpec, Sample
from . import CapturedSite, CaptureResult
from .onnx_chunks import sub_batch_rows, workers
from .onnx_counters import SiteAccumulator
from .onnx_graph import find_sites
from .onnx_instrument import SitePlan, instrument, plan_sites
from .onnx_session import make_session, session_bytes, session_from_bytes
from .onnx_shapes import static_shapes, without_weights

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass
class OnnxModel:
    """A model ready to run: its graph, what it says about its inputs, where it runs."""

    proto: onnx.ModelProto
    specs: list[InputSpec]
    fixed_batch: int | None
    providers: list[Any]
    input_dtypes: dict[str, np.dtype]
    threads: int | None = None  # onnxruntime intra-op threads (None: its default, one per core)
    # The file `proto` was read from and its sha256, set by a caller that holds no other
    # reference to `proto` (a scan of a path): `capture` then lets the weights go once
    # onnxruntime has its own copy (46 MB of a ResNet-18 scan's peak RSS), and `full_proto`
    # reads them back from the file when something needs them again.
    source: tuple[Path, str] | None = None
    weightless: bool = False

    def full_proto(self) -> onnx.ModelProto:
        """`proto` with its weights: read again from `source` if `capture` let them go."""
        if self.weightless and self.source is not None:
            from ..loading import sha256_of
            from .onnx_loading import load_onnx

            path, sha256 = self.source
            if sha256_of(path) != sha256:
                raise UserError(f"{path} changed while relu-doctor was scanning it",
                                "Scan it again once it is written.")
            self.proto, self.weightless = load_onnx(path), False
        return self.proto

    def drop_weights(self) -> None:
        """Keep only the graph's skeleton in memory, when `source` can give the weights back."""
        if self.source is not None and not self.weightless:
            self.proto, self.weightless = without_weights(self.proto), True


def resolve_device(device: str) -> list[Any]:
    """onnxruntime execution providers for --device auto | cpu | cuda."""
    import onnxruntime as ort

    from ..devices import parse_device

    kind, index = parse_device(device)
    available = ort.get_available_providers()
    # TF32 would round the activations that the in-graph reductions read (the 1x1 convs
    # that count positives and find the minimum); keep CUDA in full float32.
    cuda = [(CUDA, {"use_tf32": 0}), CPU]
    if kind == "auto":
        return cuda if CUDA in available else [CPU]
    if kind == "cpu":
        return [CPU]
    if CUDA not in available:
        raise UserError(f"--device {device}, but this onnxruntime has no CUDA execution provider",
                        "Install onnxruntime-gpu, or use --device cpu / auto.")
    if index is not None:
        cuda[0] = (CUDA, {"use_tf32": 0, "device_id": index})
    return cuda


def prepare(model: onnx.ModelProto, providers: list[Any]) -> OnnxModel:
    """Read the graph's inputs: per-sample shapes (None for symbolic dims) and a fixed batch."""
    initializers = {t.name for t in model.graph.initializer}
    specs: list[InputSpec] = []
    dtypes: dict[str, np.dtype] = {}
    fixed_batch: int | None = None
    for inp in model.graph.input:
        if inp.name in initializers:  # old exporters list weights as inputs too
            continue
        if not inp.type.HasField("tensor_type"):
            raise UserError(f"model input {inp.name!r} is not a tensor", "relu-doctor feeds tensor inputs only.")
        t = inp.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        except Exception:
            raise UserError(f"model input {inp.name!r} has an element type numpy cannot hold") from None
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim] \
            if t.HasField("shape") else None
        if dims and dims[0] is not None and fixed_batch is None and not specs:
            fixed_batch = dims[0]  # a batch dim fixed at export (often 1) sets the batch size
        specs.append(InputSpec(inp.name, tuple(dims[1:]) if dims else None, dtype.name, dtype_known=True))
        dtypes[inp.name] = dtype
    return OnnxModel(model, specs, fixed_batch, providers, dtypes)


def auto_batch_size(model: OnnxModel, sample: Sample) -> int:
    """onnxruntime plans its own memory: the default batch is a safe choice."""
    from ..inputs import DEFAULT_BATCH_SIZE

    return DEFAULT_BATCH_SIZE


def capture(model: OnnxModel, sample: Sample, batch_size: int, neuron_axis: str = "auto",
            include_smooth: bool = False, progress: Callable[[int], None] | None = None,
            neuron_extremes: bool = False, observer: Any = None) -> CaptureResult:
    """Run the sample through the instrumented graph and return the counters of every site
    (with `neuron_extremes`, also each neuron's max and min, reduced in the graph;
    `observer`: a backends.CaptureObserver, which also gets the model's outputs)."""
    rows = model.fixed_batch or batch_size
    shapes = static_shapes(model.proto, {s.name: [rows, *s.dims] for s in sample.specs})
    search = find_sites(model.proto, include_smooth, {name: dims for name, (_, dims) in shapes.items()})
    plans, warnings = plan_sites(search.sites, shapes, neuron_axis)
    for plan in plans:
        plan.extremes = neuron_extremes
    warnings = search.warnings + warnings
    extra: list[str] = []  # what the observer reads besides the model's outputs

    def extend(instrumented: onnx.ModelProto) -> None:
        extra.extend(observer.onnx_fetch(instrumented))

    on_cpu = all((p[0] if isinstance(p, tuple) else p) == CPU for p in model.providers)
    sub = sub_batch_rows(model.proto, shapes, plans, rows) \
        if on_cpu and not model.fixed_batch and observer is None else None
    runs_on = dataclasses.replace(model, threads=1) if sub else model  # sub-batches: one thread per worker
    session = _session(runs_on, plans, extend=extend if observer is not None else None)
    model.drop_weights()  # onnxruntime has its own copy now (see OnnxModel.source)
    fetch = list(dict.fromkeys(name for p in plans for name in p.outputs.values()))
    outputs = [o.name for o in model.proto.graph.output] if observer is not None else []
    extra_only = {n for n in extra if n not in fetch}  # not a site's own output (a raw one)
    fetch += [n for n in outputs + extra if n not in fetch]
    split = _SubBatches(session, fetch, plans, sub, model.threads) if sub else None
    accumulators = [SiteAccumulator(p, neuron_axis) for p in plans]
    exact_sessions: dict[tuple[int, ...], tuple[Any, list[SitePlan]]] = {}
    nonfinite_inputs = 0
    number = 0
    # Not enumerate(): its (number, batch) tuple keeps the last batch alive while the next
    # one is made, 19 MB more at a ResNet-18 scan's peak (batch 32); so does a loop variable.
    for batch in sample.batches(batch_size, model.fixed_batch):
        number += 1
        running(f"onnxruntime running batch {number}")
        nonfinite_inputs += batch.nonfinite
        feeds = {s.name: np.asarray(a, model.input_dtypes.get(s.name)) for s, a in zip(sample.specs, batch.arrays)}
        # Copies: onnxruntime's outputs are views of its arena, and partials still alive in
        # the next run pin their chunks there, so the arena grows (ResNet-18: +100 MiB). The
        # observer's tensors are read at once and dropped before the next run.
        start = time.perf_counter()
        rows = len(batch.arrays[0]) if batch.arrays else batch.valid
        results = split.run(feeds, rows) if split is not None and batch.valid == rows else None
        if results is None:
            ran = _run(session, fetch or None, feeds)
            results = {name: y if name in extra_only else np.array(y, copy=True) for name, y in zip(fetch, ran)}
            del ran
        seconds = time.perf_counter() - start
        if observer is not None:
            observer.start_batch()
            observer.finish_batch([results[n] for n in outputs], batch.valid, rows, seconds,
                                  {n: results[n] for n in extra})
            for n in extra_only:
                results.pop(n, None)
        redo = [acc for acc in accumulators
                if not acc.add({role: results[name] for role, name in acc.plan.outputs.items()}, batch.valid, rows)]
        if redo:
            _exact(model, redo, feeds, batch.valid, rows, exact_sessions)
        if progress:
            progress(batch.valid)
        del batch, feeds, results  # before the next batch is made: one batch of inputs alive, not two
    if split is not None:
        split.close()
    sites = []
    for acc in accumulators:
        warnings += acc.warnings
        site = acc.plan.site
        if not acc.ran:
            warnings.append(f"site {site.name} never ran on this sample (its If branch was not taken)")
            continue
        sites.append(CapturedSite(site.name, site.kind, site.op, site.params, list(acc.shape or []),
                                  int(acc.axis or 0), acc.counters()))
    return CaptureResult(sites, warnings, search.unmeasured, nonfinite_inputs)


def _exact(model: OnnxModel, redo: list[SiteAccumulator], feeds: dict[str, np.ndarray], valid: int, rows: int,
           cache: dict[tuple[int, ...], tuple[Any, list[SitePlan]]]) -> None:
    """Re-run a batch whose partials were not finite, with the raw outputs of those sites."""
    key = tuple(acc.plan.index for acc in redo)
    if key not in cache:
        plans = [dataclasses.replace(acc.plan, outputs={}) for acc in redo]
        cache[key] = (_session(model, plans, raw=True), plans)
    session, plans = cache[key]
    fetch = [p.outputs["raw"] for p in plans]
    for acc, y in zip(redo, _run(session, fetch, feeds)):
        acc.add_raw(y, valid, rows)


class _SubBatches:
    """A batch run as sub-batches on parallel single-threaded workers (onnx_chunks.py): the
    sub-batches' per-row partials stacked back into the batch's, the same numbers a whole
    run gives, so the host adds each batch once whatever the split."""

    def __init__(self, session: Any, fetch: list[str], plans: list[SitePlan], part_rows: int,
                 threads: int | None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.session, self.fetch, self.plans, self.part_rows = session, fetch, plans, part_rows
        self.pool: Any = ThreadPoolExecutor(workers(threads), thread_name_prefix="relu-doctor-onnx")

    def run(self, feeds: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray] | None:
        """{output name: partials} of the batch, or None (from then on) when the graph does
        not split: a run failed, or a site's rows did not follow the sub-batch (a shape pinned
        in the graph); the caller runs whole batches then."""
        if self.pool is None:
            return None
        parts = [{k: v[i:i + self.part_rows] for k, v in feeds.items()} for i in range(0, rows, self.part_rows)]
        try:
            results = list(self.pool.map(self._partials, parts))
        except UserError:
            results = []
        sizes = [len(next(iter(part.values()))) for part in parts]
        if not results or not all(self._rows_split(r, n) for r, n in zip(results, sizes)):
            self.close()
            return None
        # per-row partials stack; the one scalar (the reduce road's batch maximum) is a max
        return {name: np.concatenate([r[name] for r in results]) if results[0][name].ndim
                else np.max([r[name] for r in results]) for name in self.fetch}

    def _partials(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # copies: onnxruntime's outputs are views of its arena (see capture)
        return {name: np.array(y, copy=True) for name, y in zip(self.fetch, _run(self.session, self.fetch, feeds))}

    def _rows_split(self, results: dict[str, np.ndarray], rows: int) -> bool:
        """Each site's partials have one row per sample of the part, as planned at full size."""
        for plan in self.plans:
            name = plan.outputs.get("pool") or plan.outputs.get("sum")
            if name is None or results[name].ndim == 0 or results[name].shape[0] != rows:
                return False
        return True

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


def _session(model: OnnxModel, plans: list[SitePlan], raw: bool = False,
             extend: Callable[[onnx.ModelProto], None] | None = None) -> Any:
    """The session of the model instrumented for `plans` (fills their outputs, see instrument);
    `extend` may add graph outputs to the instrumented model first."""
    instrumented = instrument(model.full_proto(), plans, raw=raw)
    if extend is not None:
        extend(instrumented)
    serialized = session_bytes(instrumented)
    try:
        if serialized is None:  # past 2 GiB: through a file
            return make_session(instrumented, model.providers, model.threads)
        del instrumented  # one copy of the weights fewer while onnxruntime parses the bytes
        return session_from_bytes(serialized, model.providers, model.threads)
    except Exception as e:
        try:  # does onnxruntime take the model as it is? Then the instrumentation is at fault
            make_session(model.full_proto(), model.providers, model.threads)
        except Exception as original:
            raise UserError(f"onnxruntime cannot run this model: {_first_line(original)}",
                            "Check that the model runs in onnxruntime (opset 7 or later).") from None
        raise RuntimeError(f"the instrumented model does not load in onnxruntime: {_first_line(e)}") from e


def _run(session: Any, fetch: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    try:
        return session.run(fetch, feeds)
    except Exception as e:  # onnxruntime's Fail / InvalidArgument for inputs that do not fit
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feeds.items())
        raise UserError(f"the model failed on inputs {shapes}: {_first_line(e)}",
                        "Check --input-shape / --data against what the model expects.") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]
