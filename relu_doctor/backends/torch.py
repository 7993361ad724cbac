"""Capture in eager modules, TorchScript and torch.export programs with one TorchDispatchMode.

Every aten call of the forward pass reaches the mode (torch_calls.py); the ReLU-family
ones are classified by the kinds registry and reduced on the spot into device counters
(torch_reduce.py); relu, relu6 and clip on CPU the mode computes itself, measuring them in
the same pass (fused_clamp.py). The mode also follows where each tensor's neuron axis is.
TorchScript and torch.export scans run their first batch under the mode and the others
on an instrumented copy of the graph, without it (torch_replay.py).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from ..errors import UserError, summarize_exception
from ..guest import running
from ..inputs import InputSpec, Sample, float_conversion_note
from ..kinds import KINDS
from ..kinds.axis import neuron_axis
from . import CapturedSite, CaptureResult
from .torch_calls import ActivationCall, ActivationCalls
from .torch_eager import compiled_code_runs_eagerly, dynamo_loaded
from .torch_naming import EagerModuleTracker, GraphOrigins, export_origins, site_name, torchscript_origins
from .torch_reduce import FusedRoad, TorchSiteAccumulator, Workspace, as_rows_positions_neurons
from .torch_replay import PointSite, Recording, Replay, script_forward


@dataclass
class TorchModel:
    """A runnable torch model with what it says about its inputs and how to name its sites."""

    forward: Callable[..., Any]
    specs: list[InputSpec]
    make_origins: Callable[[], Any]  # -> EagerModuleTracker | GraphOrigins
    device: torch.device
    dtype: torch.dtype = torch.float32
    fixed_batch: int | None = None
    restore: Callable[[], None] = lambda: None
    # graph formats: the forward instrumented for the batches after the first, or None where
    # that would not be exact (torch_replay.py)
    instrumented: Callable[[], Any] = lambda: None  # -> torch_replay.Instrumented | None


@dataclass
class _SiteState:
    name: str
    kind: str
    op: str
    params: dict[str, float]
    shape: list[int]
    axis: int
    acc: TorchSiteAccumulator


class _CaptureMode(ActivationCalls):
    def __init__(self, origins: Any, neuron_axis: str, include_smooth: bool, extremes: bool = False) -> None:
        self.extremes = extremes  # also the per-neuron max and min (stats: on-request counters)
        self.sites: dict[str, _SiteState] = {}  # in first-execution order
        self.workspace = Workspace()  # shared by the sites' reductions
        self.last_site: str | None = None
        self.warnings: list[str] = []
        self.unsplit: set[str] = set()  # sites already warned about
        self._name_counts: dict[str, int] = {}
        super().__init__(include_smooth, origins, track_axes=neuron_axis == "auto")
        self.neuron_axis = neuron_axis  # "auto" | "channel" | "last"
        self.observer: Any = None  # a backends.CaptureObserver
        self.recording: Recording | None = None  # while a first batch maps an instrumented graph's points
        self.start_batch(0, 0)

    def start_batch(self, valid_rows: int, batch_rows: int) -> None:
        self.valid_rows = valid_rows  # rows of the batch that belong to the sample
        self.batch_rows = batch_rows  # rows fed to the model (a fixed batch pads the last one)
        self._name_counts = {}
        self.start_pass()
        self.workspace.start_batch()

    def on_call(self, call: ActivationCall) -> None:
        if self.observer is not None:
            self.observer.on_call(call)
        y, kind = call.output, call.activation.kind
        name = site_name(call.origin, kind, self._name_counts)
        axis = neuron_axis(y.dim(), call.tag, self.neuron_axis)
        self.measure(name, y, axis, call)
        if self.recording is not None:
            self.recording.measured(y, PointSite(name, axis))

    def on_observe(self, y: torch.Tensor, point: int) -> None:
        if self.recording is not None:
            self.recording.observed(y, point)

    def on_stand_in(self, in_place: bool, x: torch.Tensor, top: float, point: int) -> Any:
        assert self.recording is not None, "an instrumented graph runs under the mode only while recording"
        op, args, kwargs = self.recording.originals[point]
        out = self.__torch_dispatch__(op, (), (x, *args), kwargs)  # measured as any call of the op
        self.recording.observed(out, point)
        return None if in_place else out

    def compute_clamp(self, x: torch.Tensor, top: float, in_place: bool,
                      axis: int | None = None) -> tuple[torch.Tensor, Any] | None:
        """clamp(x, 0, top) computed and reduced in one pass (fused_clamp.py), where x is a CPU
        activation that the per-row view reaches without a copy."""
        if x.device.type != "cpu" or x.dim() == 0 or x.numel() == 0 or x.dtype not in (torch.float32, torch.float64):
            return None
        kernels = FusedRoad.wanted(x.numel())
        if kernels is None:
            return None
        if axis is None:
            axis = neuron_axis(x.dim(), self._tags.get(x), self.neuron_axis)
        x3, red = as_rows_positions_neurons(*self._per_sample(x, axis))
        y = x if in_place else torch.empty_like(x)  # torch's own output keeps x's memory format too
        y3, _ = as_rows_positions_neurons(*self._per_sample(y, axis))
        if not (_viewed_in_place(x3, x) and _viewed_in_place(y3, y)):
            return None
        from .fused_clamp import clamp_row_stats

        return y, clamp_row_stats(x3.numpy(), y3.numpy(), red, top, self.workspace.threads or torch.get_num_threads())

    def measure(self, name: str, y: torch.Tensor, axis: int, call: ActivationCall | None = None,
                measured: Any = None) -> None:
        """Add one activation to site `name` (made from `call` when new); `axis` is y's neuron
        axis; `measured`: y's row results, computed with it (compute_clamp)."""
        self.last_site = name
        y, axis = self._sample_first(y, axis, name)
        state = self.sites.get(name)
        if state is None:
            assert call is not None, "a replayed site was measured under the mode first"
            origin = call.origin
            module_site = origin is not None and origin.is_activation_module and not call.fused
            neurons = y.shape[axis] if y.dim() > 1 else 1
            kind = call.activation.kind
            state = self.sites[name] = _SiteState(
                name=name, kind=kind, op=f"nn.{origin.module_type}" if module_site and origin else call.label,
                params=dict(call.activation.params), shape=list(y.shape[1:]), axis=axis,
                acc=TorchSiteAccumulator(neurons, y.device, KINDS[kind].nonnegative, keep_min=KINDS[kind].bounded,
                                         workspace=self.workspace, extremes=self.extremes),
            )
        elif list(y.shape[1:]) != state.shape and y.shape[axis] != state.acc.neurons:
            raise UserError(f"site {name} changed its number of neurons between batches "
                            f"({state.acc.neurons} -> {y.shape[axis]})")
        measured = call.measured if call is not None else measured
        if measured is not None and len(measured.counts) != len(y):
            measured = measured.first(len(y))  # the padding rows of a fixed batch are not the sample's
        state.acc.update(y.detach(), axis, measured)

    def _sample_first(self, y: torch.Tensor, axis: int, name: str) -> tuple[torch.Tensor, int]:
        """y with the sample as its first axis and the padding rows dropped, and its neuron axis.

        An activation whose first axis is not a multiple of the batch cannot be split by
        sample: it is kept whole (see _per_sample), and a single number (relu of a scalar
        parameter) is one row of one neuron per forward pass."""
        if y.dim() == 0:
            self._unsplit(name, f"site {name} is one number per forward pass, not one per input, so its "
                                "per-sample counts (sample_fires) count forward passes")
            return y.reshape(1, 1), 1
        rows = self.batch_rows
        if rows == 0:
            return y, axis
        if y.shape[0] % rows != 0:
            self._unsplit(name, f"site {name}: its first axis ({y.shape[0]}) is not the batch ({rows}), so its "
                                "per-sample counts (sample_fires) count rows, not inputs")
            return y, axis
        y, axis = self._per_sample(y, axis)
        # all rows valid (every batch but a padded last one): no view to make
        return (y if self.valid_rows == rows else y[: self.valid_rows]), axis

    def _unsplit(self, name: str, warning: str) -> None:
        if name not in self.unsplit:  # once per site
            self.unsplit.add(name)
            self.warnings.append(warning)

    def _per_sample(self, y: torch.Tensor, axis: int) -> tuple[torch.Tensor, int]:
        """y with the sample as its first axis, padding rows included. A model may flatten
        samples and positions, relu(x.reshape(B * T, F)): the rows are then sample-major, so
        (B, T, F) is the per-sample view."""
        rows = self.batch_rows
        if y.dim() == 0 or rows == 0 or y.shape[0] == rows or y.shape[0] % rows != 0:
            return y, axis
        return y.reshape(rows, y.shape[0] // rows, *y.shape[1:]), axis + 1


def _viewed_in_place(view: torch.Tensor, base: torch.Tensor) -> bool:
    """Whether `view` is a dense C-ordered view of all of `base`'s memory (no copy was made)."""
    return view.is_contiguous() and view.data_ptr() == base.data_ptr() and view.numel() == base.numel()


def auto_batch_size(model: TorchModel, sample: Sample) -> int:
    from .torch_memory import auto_batch_size as largest_fitting_batch

    return largest_fitting_batch(model, sample, _to_tensor)


def capture(model: TorchModel, sample: Sample, batch_size: int, neuron_axis: str = "auto",
            include_smooth: bool = False, progress: Callable[[int], None] | None = None,
            neuron_extremes: bool = False, observer: Any = None) -> CaptureResult:
    """Run the sample through the model and return the counters of every site (with
    `neuron_extremes`, also each neuron's max and min; `observer`: a backends.CaptureObserver)."""
    arguments = (model, sample, batch_size, neuron_axis, include_smooth, progress, neuron_extremes, observer)
    try:
        try:
            return _capture(*arguments, dynamo_before=dynamo_loaded())
        except _DynamoLoadedInTheFirstBatch:
            # torch.cond in eager compiles its branches: dynamo, loaded under the capture mode,
            # traced the mode's own code and failed. Once more, with compiled code running
            # eagerly from the start (torch_eager.py), as when dynamo was loaded before.
            return _capture(*arguments, dynamo_before=True)
    finally:
        model.restore()  # once, after the last try: a retry runs in eval mode too


class _DynamoLoadedInTheFirstBatch(Exception):
    pass


def _capture(model: TorchModel, sample: Sample, batch_size: int, neuron_axis: str, include_smooth: bool,
             progress: Callable[[int], None] | None, neuron_extremes: bool, observer: Any,
             dynamo_before: bool) -> CaptureResult:
    warnings = _settle_input_dtypes(model, sample)
    origins = model.make_origins()
    mode = _CaptureMode(origins, neuron_axis, include_smooth, neuron_extremes)
    mode.observer = observer
    mode.computes_clamps = True
    sync = torch.cuda.synchronize if model.device.type == "cuda" and observer is not None else None
    nonfinite_inputs = 0
    # Graph formats run their first batch under the mode and the others without it (torch_replay.py).
    several_batches = sample.count > (model.fixed_batch or batch_size)
    instrumented = model.instrumented() if observer is None and several_batches else None
    replay: Replay | None = None
    try:
        with torch.inference_mode(), compiled_code_runs_eagerly():
            for number, batch in enumerate(sample.batches(batch_size, model.fixed_batch), 1):
                running(f"the model's forward pass on batch {number}",
                        lambda: f"last site reached: {mode.last_site}" if mode.last_site else None)
                nonfinite_inputs += batch.nonfinite
                tensors = [_to_tensor(a, model) for a in batch.arrays]
                rows = len(batch.arrays[0]) if batch.arrays else 0
                mode.start_batch(batch.valid, rows)
                if observer is not None:
                    observer.start_batch()
                if instrumented is not None and replay is None:
                    mode.recording = Recording(instrumented.originals)
                try:
                    start = time.perf_counter()
                    if replay is not None:
                        outputs = replay(*tensors)
                    else:
                        with mode:
                            outputs = (instrumented.forward if instrumented else model.forward)(*tensors)
                        mode.finish_pass()
                    if sync is not None:
                        sync()
                    seconds = time.perf_counter() - start
                except UserError:
                    raise
                except Exception as e:
                    if number == 1 and not dynamo_before and dynamo_loaded():
                        raise _DynamoLoadedInTheFirstBatch from e
                    _blame(e, model, tensors, mode.last_site)
                if observer is not None:
                    observer.finish_batch(outputs, batch.valid, rows, seconds)
                del outputs
                problem = origins.check_count(mode.candidates) if isinstance(origins, GraphOrigins) and \
                    replay is None else None
                if problem:
                    warnings.append(problem)
                if mode.recording is not None:
                    if instrumented is not None and mode.recording.finish() and not problem:
                        replay = Replay(instrumented, mode.recording.points, mode.measure, mode.compute_clamp)
                    else:
                        instrumented = None  # the mode measures every batch
                    mode.recording = None
                if progress:
                    progress(batch.valid)
    finally:
        origins.close()
    if isinstance(origins, GraphOrigins) and origins.warning:
        warnings.append(origins.warning)
    sites = [CapturedSite(s.name, s.kind, s.op, s.params, s.shape, s.axis, s.acc.counters())
             for s in mode.sites.values()]
    return CaptureResult(sites, warnings + mode.warnings + mode.unmeasured, list(mode.unmeasured), nonfinite_inputs)


def _settle_input_dtypes(model: TorchModel, sample: Sample) -> list[str]:
    """Eager and TorchScript models do not say what dtype they take. Integer data is first
    tried as it is (token ids); if the model refuses it but runs on floats, it is converted,
    with the warning every format gives (inputs.data_dtype)."""
    guessed = [i for i, s in enumerate(sample.specs)
               if not s.dtype_known and np.dtype(s.dtype).kind in "iub"]
    if not guessed or sample.count == 0:
        return []
    head = sample.head(2)
    with torch.inference_mode():
        try:
            model.forward(*[_to_tensor(a, model) for a in head])
            return []
        except Exception:
            pass
        floats = [a.astype(np.float32) if i in guessed else a for i, a in enumerate(head)]
        try:
            model.forward(*[_to_tensor(a, model) for a in floats])
        except Exception:
            return []  # fails either way: the scan reports the model's own error
    notes = []
    for i in guessed:  # the scan's own sample (never a caller's): its specs list is ours to update
        spec = sample.specs[i]
        notes.append(float_conversion_note(spec.name, spec.dtype, "float32", sample.source))
        sample.specs[i] = replace(spec, dtype="float32")
    return notes


def _to_tensor(a: Any, model: TorchModel) -> torch.Tensor:
    t = torch.from_numpy(a) if not isinstance(a, torch.Tensor) else a
    if t.is_floating_point():
        t = t.to(model.dtype)
    return t.to(model.device)


def _blame(e: Exception, model: TorchModel, tensors: list[torch.Tensor], last_site: str | None) -> None:
    """Tell the model's own failure (a user error) from a failure of the capture (a bug).

    Rerunning the batch without the capture mode answers it, and gives the model's real
    message: TorchScript loses it when an error crosses a Python dispatch mode.
    """
    try:
        model.forward(*tensors)
    except Exception as plain:
        if _out_of_memory(plain):
            raise UserError(f"a batch of {tensors[0].shape[0] if tensors else '?'} samples does not fit in "
                            f"{model.device.type} memory: {summarize_exception(plain)}",
                            "Lower --batch-size, or let relu-doctor choose: --batch-size auto.") from None
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        where = f" (last site reached: {last_site})" if last_site else ""
        raise UserError(f"the model failed on inputs of shape {shapes}{where}: {summarize_exception(plain)}",
                        "Check --input-shape / --data against what the model expects.") from None
    raise e  # the model runs fine on its own: the capture broke, which is our bug


def _out_of_memory(e: Exception) -> bool:
    text = str(e)
    return isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text


# ---- turning loaded objects into TorchModel ----------------------------------------------


def resolve_device(device: str) -> torch.device:
    from ..devices import parse_device

    kind, index = parse_device(device)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}, but torch sees no CUDA device", "Use --device cpu or auto.")
    if index is not None and index >= torch.cuda.device_count():
        raise UserError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s)",
                        f"Use cuda:0 to cuda:{torch.cuda.device_count() - 1}, or cuda.")
    return torch.device(device.strip())


def prepare(obj: Any, device: torch.device) -> TorchModel:
    if isinstance(obj, torch.export.ExportedProgram):
        return _prepare_exported(obj, device)
    if isinstance(obj, torch.jit.ScriptModule):
        return _prepare_script(obj, device)
    if isinstance(obj, torch.nn.Module):
        return _prepare_eager(obj, device)
    raise UserError(f"cannot scan a {type(obj).__name__}", "Pass an nn.Module, a ScriptModule or an ExportedProgram.")


def _eval_mode(module: Any) -> Callable[[], None]:
    """Put `module` (eager or TorchScript) in eval mode; return what puts every submodule's
    `training` flag back as the caller had it (idempotent: safe on every way out)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()

    def restore() -> None:
        for m, training in modes:
            if m.training != training:
                m.train(training)

    return restore


def _prepare_eager(module: torch.nn.Module, device: torch.device) -> TorchModel:
    restore = _eval_mode(module)
    try:
        module = _on_device(module, device)
    except BaseException:
        restore()
        raise
    return TorchModel(forward=module, specs=_signature_specs(module.forward), device=device,
                      dtype=_param_dtype(module), make_origins=lambda: EagerModuleTracker(module), restore=restore)


def _prepare_script(module: torch.jit.ScriptModule, device: torch.device) -> TorchModel:
    restore = _eval_mode(module)
    try:
        module = _on_device(module, device)
        # Arguments with a default (`mask: Optional[Tensor] = None`) are optional, as in eager
        args = module.forward.schema.arguments[1:]  # type: ignore[attr-defined]  # skip self
    except BaseException:
        restore()
        raise
    specs = [InputSpec(a.name) for a in args if not a.has_default_value()]
    return TorchModel(forward=module, specs=specs, device=device, dtype=_param_dtype(module),
                      make_origins=lambda: torchscript_origins(module), restore=restore,
                      instrumented=lambda: script_forward(module))


def _prepare_exported(program: torch.export.ExportedProgram, device: torch.device) -> TorchModel:
    from .torch_program import ProgramForward, program_dtype

    specs, fixed_batch = _exported_specs(program)
    forward = ProgramForward(program, device)
    return TorchModel(forward=forward, specs=specs, device=device, dtype=program_dtype(program),
                      fixed_batch=fixed_batch, make_origins=lambda: export_origins(program.graph),
                      instrumented=forward.instrumented)


def _exported_specs(program: torch.export.ExportedProgram) -> tuple[list[InputSpec], int | None]:
    """Per-sample shapes from the program's input placeholders; a static dim 0 fixes the batch."""
    user_inputs = set(program.graph_signature.user_inputs)
    specs, fixed = [], None
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        dims = [d if isinstance(d, int) else None for d in val.shape]
        if dims and dims[0] is not None:
            fixed = dims[0]
        dtype = str(val.dtype).removeprefix("torch.")
        specs.append(InputSpec(node.name, tuple(dims[1:]), dtype if dtype != "bfloat16" else "float32",
                               dtype_known=True))
    return specs, fixed


def _signature_specs(forward: Callable[..., Any]) -> list[InputSpec]:
    try:
        params = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [InputSpec(p.name) for p in params if p.kind in kinds and p.default is inspect.Parameter.empty]


def _on_device(module: Any, device: torch.device) -> Any:
    current = next(iter(_tensors(module)), None)
    if current is None or current.device == device:
        return module
    import copy

    return copy.deepcopy(module).to(device)  # never move the caller's module under their feet


def _tensors(module: Any) -> Iterable[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def _param_dtype(module: Any) -> torch.dtype:
    for t in _tensors(module):
        if t.is_floating_point():
            return t.dtype
    return torch.float32
