"""The Python API: `scan()` loads, samples, captures and returns a Report. The CLI calls it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import formats, notices, site_names
from . import gates as gating
from .backends import Backend
from .data_sources import as_arrays, load_data_file
from .distributed import all_reduce_count, all_reduce_sites, current_world
from .errors import UserError
from .guest import guarded, running
from .images import ImageOptions, image_options
from .input_options import parse_range, parse_shard, resolve_specs
from .inputs import DEFAULT_BATCH_SIZE, Sample, array_sample, check_batch_size, synthetic_sample
from .kinds.axis import NEURON_AXES
from .loading import LoadedModel, load_model
from .notices import Notice
from .option_values import globs, number, whole
from .report import Gates, ModelInfo, Report, SampleInfo, Settings, Site
from .stats import DEFAULT_TAU, small_sample_warning

Progress = Callable[[int, int], None]  # (samples done so far, total)


@guarded
def scan(
    model: Any,
    data: Any = None,
    *,
    input_shape: Sequence[str] | dict | tuple | str | None = None,
    samples: int | None = None,
    batch_size: int | str = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
    shard: str | tuple[int, int] | None = None,
    seed: int = 0,
    device: str = "auto",
    tau: float = DEFAULT_TAU,
    neuron_axis: str = "auto",
    include_smooth: bool = False,
    neuron_extremes: bool = False,
    input_range: str | tuple[float, float] | None = None,
    image_size: str | tuple[int, int] | None = None,
    mean: str | tuple[float, ...] | None = None,
    std: str | tuple[float, ...] | None = None,
    arch: str | None = None,
    arch_kwargs: dict | str | None = None,
    trust_pickle: bool = False,
    select: Sequence[str] = (),
    ignore: Sequence[str] = (),
    fail_dead_ratio: float | None = None,
    fail_total_dead_ratio: float | None = None,
    baseline: str | Path | Report | None = None,
    fail_increase: float | None = None,
    prove: bool = False,
    fail_provably_dead: float | None = None,
    progress: Progress | None = None,
    warn: bool = True,
    timeout: float | None = None,
    observer: Any = None,
) -> Report:
    """Scan `model` (a path, nn.Module, ScriptModule, ExportedProgram or onnx.ModelProto).

    Under torchrun every rank scans its part of the sample and all get the whole report.
    `baseline` (a report or its JSON path) compares the scan with it, as `scan --baseline`:
    the comparison is `report.diff`, and `report.diff.passed` is the `fail_increase` gate
    (percentage points). With `warn` (default) the report's warnings are also emitted
    through Python's `warnings` (class `ReluDoctorWarning`); the CLI prints them itself.
    `prove=True` (implied by `fail_provably_dead`) adds the data-free proofs (SPEC 14):
    neurons dead on every input, with inputs unbounded and, when given, in `input_range`.
    `timeout` (seconds): UserError saying what was running when it expired (see guest.py).
    `neuron_extremes=True` also measures each neuron's max and min (counters `neuron_max`,
    `neuron_min`; what `--neurons` writes), at the cost of two more reductions per site.
    """
    select, ignore = globs("select", select), globs("ignore", ignore)
    auto_batch = batch_size == "auto"
    samples, max_batches, seed, tau = _check_settings(samples, DEFAULT_BATCH_SIZE if auto_batch else batch_size, tau,
                                                      neuron_axis, max_batches, seed)
    base = _baseline(baseline, fail_increase)
    fail_dead_ratio = gating.check_threshold("fail_dead_ratio", fail_dead_ratio)  # before the scan, not after
    fail_total_dead_ratio = gating.check_threshold("fail_total_dead_ratio", fail_total_dead_ratio)
    fail_provably_dead = gating.check_threshold("fail_provably_dead", fail_provably_dead)
    bounds = parse_range(input_range)
    running("loading the model")
    loaded = _load(model, arch, arch_kwargs, trust_pickle)
    running("preparing the model")
    backend = _Backend(loaded, device)
    try:  # the caller's module is in eval mode from here on: put it back on every way out
        running("reading the sample")
        sample = build_sample(data, backend.specs, input_shape, samples, seed, bounds,
                              image_options(image_size, mean, std))
        all_samples = sample.count
        shard = parse_shard(shard)
        if shard is not None:
            sample = sample.shard(*shard)
            if sample.count == 0:
                raise UserError(f"shard {shard[0]}/{shard[1]} of {all_samples} samples is empty",
                                f"Use at most {all_samples} shards.")
        world = current_world()
        if world.size > 1:  # torchrun: each rank its own part, then all-reduce
            sample = sample.shard(world.rank, world.size)
        size = backend.settle_batch(sample, backend.auto_batch_size(sample) if auto_batch else int(batch_size))
        check_batch_size(size, sample.specs)
        if max_batches is not None:
            sample = replace(sample, count=min(sample.count, max_batches * size))

        loaded = _lend_weights(loaded, backend, model)
        result = backend.capture(sample, size, neuron_axis, include_smooth, _progress_reporter(progress, sample.count),
                                 neuron_extremes, observer)
    finally:
        backend.restore()
    result.warnings += site_names.apply(result.sites, loaded.site_names)
    count = all_reduce_count(sample.count, world)
    sample_info = SampleInfo.from_dict({
        "source": sample.source, "samples": count, "batch_size": size,
        "seed": seed if sample.source == "synthetic" else None, "inputs": sample.describe_inputs(),
        **sample.details,
        **({"shard": f"{shard[0]}/{shard[1]}", "of_samples": all_samples} if shard is not None else {}),
    })
    sites = [Site(i, s.name, s.kind, s.op, s.params, s.shape, s.axis, s.counters, tau)
             for i, s in enumerate(all_reduce_sites(result.sites, world))]
    report = Report(
        model=ModelInfo.from_dict(loaded.describe()),
        sample=sample_info,
        settings=Settings(tau=tau, neuron_axis=neuron_axis, include_smooth=include_smooth,
                          select=list(select), ignore=list(ignore)),
        sites=sites,
        warnings=notices.notices(sample.warnings, notices.OTHER) + notices.notices(
            result.warnings, notices.CAPTURE) + _sample_warnings(
            count, all_reduce_count(result.nonfinite_inputs, world), bool(sites) or bool(result.unmeasured)),
    )
    if prove or fail_provably_dead is not None:
        from .analysis import prove_report

        graph = backend.model.full_proto() if loaded.obj is None else loaded.obj  # weights lent: read back
        prove_report(graph, loaded.format, report, (float(bounds[0]), float(bounds[1])) if bounds else None)
    report.gates = gating.gate(sites, select, ignore, fail_dead_ratio, fail_total_dead_ratio, fail_provably_dead)
    if shard is not None:  # a shard records its gates unjudged: `merge` judges the whole (SPEC 11)
        report.gates = Gates(checked=report.gates.checked)
    if base is not None:
        from .compare import diff

        report.diff = diff(base, report, fail_increase, select, ignore)
    if warn:
        notices.emit([*report.warnings, *(report.diff.warnings if report.diff else [])])
    return report


def _lend_weights(loaded: LoadedModel, backend: _Backend, model: Any) -> LoadedModel:
    """An ONNX file this scan read itself: leave the backend's proto as the only reference to
    it, so that the capture can let the weights go once onnxruntime holds its own copy
    (backends/onnx.py, OnnxModel.source). A proto the caller passed in stays untouched."""
    if not (backend.is_onnx and isinstance(model, (str, Path)) and loaded.path and loaded.sha256):
        return loaded
    if loaded.data_files:  # weights from external-data files too, which the file's sha256 does not cover
        return loaded
    if backend.model.proto is not loaded.obj:  # a relaxed batch: a proto the file does not hold
        return loaded
    backend.model.source = (loaded.path, loaded.sha256)
    return replace(loaded, obj=None)


def _baseline(baseline: str | Path | Report | None, fail_increase: float | None) -> Report | None:
    """The report to compare with, read (and checked) before the scan: a wrong path fails at once."""
    from .compare import check_increase

    if baseline is None:
        if fail_increase is not None:
            raise UserError("fail_increase needs a baseline report to compare with",
                            "Pass baseline= (a Report or the path of its JSON).")
        return None
    check_increase(fail_increase)
    return Report.of(baseline, "baseline")


def site_names_of(model: Any, sample: Sample, include_smooth: bool, neuron_axis: str, device: str) -> list[str]:
    """The names a scan gives the sites of `model`, from its first rows of `sample`."""
    import copy

    loaded = _load(model, None, None, False)
    backend = _Backend(loaded, device)
    rows = replace(sample, count=min(2, sample.count), warnings=[], specs=copy.deepcopy(sample.specs))
    try:
        result = backend.capture(rows, backend.fixed_batch or rows.count, neuron_axis, include_smooth, lambda n: None)
    finally:
        backend.restore()
    return [s.name for s in result.sites]


def _progress_reporter(progress: Progress | None, total: int) -> Callable[[int], None]:
    """Turn the backends' "n more samples done" into the caller's (done, total)."""
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    return advance


def _sample_warnings(samples: int, nonfinite_inputs: int, any_site: bool) -> list[str]:
    warnings: list[str] = []
    if nonfinite_inputs:
        warnings.append(Notice(f"the inputs hold {nonfinite_inputs} NaN or infinite values: activations that "
                               "depend on them are counted in each site's nonfinite", notices.NONFINITE_INPUTS))
    if not any_site:
        warnings.append(Notice("no ReLU-family activation ran in this model", notices.NO_SITES))
    small = small_sample_warning(samples)
    if small:
        warnings.append(Notice(small, notices.SMALL_SAMPLE))
    return warnings


def _check_settings(samples: Any, batch_size: Any, tau: Any, neuron_axis: str, max_batches: Any,
                    seed: Any) -> tuple[int | None, int | None, int, float]:
    """Refuse impossible settings; return (samples, max_batches, seed, tau) as plain Python
    numbers (a numpy number passed in is not JSON, and the sample checks Python ints)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, or auto (got {batch_size!r})")
    tau = check_tau(tau)
    check_neuron_axis(neuron_axis)
    return (None if samples is None else whole("samples", samples),
            None if max_batches is None else whole("max_batches", max_batches), whole("seed", seed, minimum=0), tau)


def check_tau(tau: Any) -> float:
    """tau (the dormancy threshold) as a float strictly between 0 and 1 (scan, watch, revive)."""
    tau = number("tau", tau)
    if not 0 < tau < 1:
        raise UserError(f"--tau must be between 0 and 1 (got {tau})", "The ReDo paper uses 0.025 (default) to 0.1.")
    return tau


def check_neuron_axis(neuron_axis: Any) -> None:
    if neuron_axis not in NEURON_AXES:
        raise UserError(f"--neuron-axis must be one of {', '.join(NEURON_AXES)} (got {neuron_axis!r})")


def _load(model: Any, arch: str | None, arch_kwargs: Any, trust_pickle: bool) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, Path)):
        return load_model(model, arch, arch_kwargs, trust_pickle)
    if type(model).__name__ == "ModelProto":
        return LoadedModel(formats.ONNX, model)
    fmt = _torch_format_of(model)
    if fmt == formats.MODULE:  # inside DDP and torch.compile wrappers: the model's own names and forward
        from .backends.torch_live import unwrap

        model = unwrap(model)
    return LoadedModel(fmt, model, site_names=site_names.of_object(model))


def _torch_format_of(obj: Any) -> str:
    import torch

    if isinstance(obj, torch.export.ExportedProgram):
        return formats.PT2
    if isinstance(obj, torch.jit.ScriptModule):
        return formats.TORCHSCRIPT
    if isinstance(obj, torch.nn.Module):
        return formats.MODULE
    raise UserError(f"cannot scan a {type(obj).__name__}",
                    "Pass a path, an nn.Module, a ScriptModule, an ExportedProgram or an onnx.ModelProto.")


class _Backend:
    """The backend that runs a loaded model's format (formats.backend_of), with the model prepared."""

    def __init__(self, loaded: LoadedModel, device: str) -> None:
        self.backend: Backend = formats.backend_of(loaded.format)  # type: ignore[assignment]
        self.is_onnx = formats.get(loaded.format).backend == "onnx"
        self.model = self.backend.prepare(loaded.obj, self.backend.resolve_device(device))
        self.specs = self.model.specs
        self.fixed_batch = self.model.fixed_batch

    def settle_batch(self, sample: Sample, requested: int) -> int:
        """The batch size to run: `requested`, unless the model's batch is fixed (an export
        bakes it in, often as 1). ONNX graphs are relaxed where the graph computes the same;
        otherwise a warning says why batches are small and how to re-export."""
        fixed = self.fixed_batch
        if fixed is None:
            return requested
        if sample.count <= fixed or requested <= fixed:
            return fixed
        why = ""
        if self.is_onnx:
            from .backends.onnx_batch import relax_batch

            names = [s.name for s in sample.specs]
            rows = [np.asarray(np.resize(a, (2 * fixed, *a.shape[1:])), self.model.input_dtypes.get(n))
                    for n, a in zip(names, sample.head(2 * fixed))]
            relaxed, why = relax_batch(self.model.proto, fixed, rows, self.model.providers, names)
            if relaxed is not None:
                self.model = replace(self.model, proto=relaxed, fixed_batch=None)
                self.fixed_batch = None
                return requested
            how = "export it with a dynamic batch axis (dynamic_axes or dynamic_shapes) to scan faster"
            what = f"the ONNX model's batch dimension is fixed at {fixed}, and {why}"
        else:
            name = sample.specs[0].name if sample.specs else "x"
            how = (f"re-export with a dynamic batch to scan faster: torch.export.export(model, args, "
                   f"dynamic_shapes={{'{name}': {{0: torch.export.Dim('batch')}}}})")
            what = f"the .pt2 program was exported with a fixed batch of {fixed}"
        sample.warnings.append(f"{what}: scanning {fixed} sample{'s' if fixed > 1 else ''} at a time, "
                               f"not {requested}; {how}")
        return fixed

    def restore(self) -> None:
        """Give a caller's torch module back in the training mode it came in (ONNX: nothing)."""
        getattr(self.model, "restore", lambda: None)()

    def auto_batch_size(self, sample: Sample) -> int:
        return self.backend.auto_batch_size(self.model, sample)

    def capture(self, sample: Sample, batch_size: int, neuron_axis: str, include_smooth: bool,
                progress: Callable[[int], None], neuron_extremes: bool = False, observer: Any = None) -> Any:
        return self.backend.capture(self.model, sample, batch_size, neuron_axis, include_smooth, progress,
                                    neuron_extremes=neuron_extremes, observer=observer)


def build_sample(data: Any, specs: list, input_shape: Any, samples: int | None, seed: int,
                 input_range: tuple[float, float] | None, images: ImageOptions | None = None) -> Sample:
    """The sample a scan runs: `data` (a path, arrays, tensors) or a seeded synthetic one."""
    specs = resolve_specs(specs, input_shape)
    if data is None:
        return synthetic_sample(specs, samples, seed, input_range)
    if isinstance(data, (str, Path)) and Path(data).is_dir():
        from .images import load_image_folder

        folder = load_image_folder(Path(data), images or ImageOptions())
        sample = array_sample([folder.array], specs, str(data), samples)
        sample.warnings += folder.warnings
        sample.details["images"] = folder.info
        return sample
    if isinstance(data, (str, Path)):
        return array_sample(load_data_file(Path(data), images), specs, str(data), samples)
    return array_sample(as_arrays(data), specs, "array", samples)
