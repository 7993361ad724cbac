"""`relu-doctor patch` end to end: load, scan (or reuse a report), plan, rewrite, write
atomically, then reload what was written and verify it before it takes OUT's name.

MODEL is only ever read. OUT is written to a temporary file beside it, verified from
that file, and renamed into place only when verification passes; any failure on the way
(a crash, a failed check, Ctrl-C) removes the temporary file and leaves OUT as it was.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import formats
from ..errors import UserError, VerificationError
from ..files import atomic_path, check_output_path, write_error
from ..formats import MODULE, ONNX, PT2, TORCHSCRIPT
from ..guest import guarded, running
from ..images import image_options
from ..input_options import parse_range
from ..inputs import DEFAULT_BATCH_SIZE, InputSpec, Sample, synthetic_sample
from ..loading import LoadedModel, load_model
from ..report import ModelInfo, Report
from .plan import REVIVE, PatchPlan, plan_patch
from .report_match import check_report_matches
from .verify import Verification, check_rescan, new_checks, pair_change
from .verify_pass import OutputRecorder

OUTPUT_FORMATS = formats.OUTPUT_FORMATS
FRESH_SAMPLES = 32  # fresh random inputs the live-neuron check also runs


@dataclass
class ScanOptions:
    """The scan's input options (the same flags as `relu-doctor scan`)."""

    data: Any = None
    input_shape: Any = None
    samples: int | None = None
    batch_size: int | str = DEFAULT_BATCH_SIZE  # or "auto"
    max_batches: int | None = None
    seed: int = 0
    device: str = "auto"
    tau: float = 0.025
    neuron_axis: str = "auto"
    include_smooth: bool = False
    input_range: Any = None
    image_size: Any = None
    mean: Any = None
    std: Any = None
    arch: str | None = None
    arch_kwargs: Any = None
    trust_pickle: bool = False

    def scan_kwargs(self) -> dict[str, Any]:
        return dict(input_shape=self.input_shape, samples=self.samples, batch_size=self.batch_size,
                    max_batches=self.max_batches, seed=self.seed, device=self.device, tau=self.tau,
                    neuron_axis=self.neuron_axis, include_smooth=self.include_smooth, input_range=self.input_range,
                    image_size=self.image_size, mean=self.mean, std=self.std)


@dataclass
class PatchOutcome:
    model: Path
    out: Path | None
    input_format: str
    output_format: str
    report: Report
    plan: PatchPlan
    verification: Verification | None = None
    warnings: list[str] = field(default_factory=list)
    written: bool = False


# OUT's extension names the output format (SPEC 7); .pt/.pth is TorchScript or a pickled module
_EXTENSIONS = {".onnx": ("onnx",), ".pt2": ("pt2",), ".pt": ("torchscript", "module"),
               ".pth": ("torchscript", "module"), ".safetensors": ("state dict",)}
_NAMES = {"onnx": "ONNX", "pt2": "a torch.export .pt2", "torchscript": "TorchScript", "module": "a pickled module"}


def named_formats(out: Path | None, to: str | None) -> tuple[str, ...] | None:
    """The formats OUT's extension allows, checked against --to: a contradiction is refused before any work."""
    if to is not None and to not in OUTPUT_FORMATS:
        raise UserError(f"--to must be one of {', '.join(OUTPUT_FORMATS)} (got {to!r})")
    named = _EXTENSIONS.get(out.suffix.lower()) if out is not None else None
    if named == ("state dict",):
        raise UserError(f"-o {out}: a rewritten model cannot be written as a state dict (.safetensors)",
                        "Its modules are no longer those --arch builds (a leaking ReLU, fewer channels): "
                        "write .pt2, .onnx or .pt.")
    if to is not None and named is not None and to not in named:
        raise UserError(f"--to {to} contradicts -o {out}, whose extension means {' or '.join(named)}",
                        f"Name OUT for {_NAMES[to]} model, or drop --to.")
    return named


def output_format(input_format: str, to: str | None, out: Path | None = None) -> str:
    """--to when given, else what OUT's extension names, else the input's own format."""
    source = formats.get(input_format)
    natural = source.patch_as or input_format
    named = named_formats(out, to)
    # .pt of a TorchScript input is TorchScript; of an eager one, a pickled module
    wanted = to or (natural if named is None or natural in named else named[0])
    if wanted == natural:
        return natural
    if not source.convertible:
        asked = f"--to {to}" if to else f"-o {out}"
        suffix = {"module": ".pt", "torchscript": ".pt"}.get(natural, f".{natural}")
        kind = {ONNX: "an ONNX", PT2: "a .pt2", TORCHSCRIPT: "a TorchScript"}.get(input_format, "this")
        raise UserError(f"{asked}: a patch converts eager models only; {kind} model is written as {_NAMES[natural]}",
                        f"Name OUT {suffix}, or patch the pickled module / state dict (--arch) of it.")
    return wanted


@guarded
def patch_file(
    model: str | Path,
    out: str | Path | None,
    *,
    options: ScanOptions | None = None,
    report_path: str | Path | None = None,
    slope: float = 0.01,
    mode: str = "channel",
    min_dead_ratio: float = 0.0,
    select: Sequence[str] = (),
    ignore: Sequence[str] = (),
    to: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: Any = None,
    timeout: float | None = None,
) -> PatchOutcome:
    """Patch the model file `model` into `out`; raises VerificationError (nothing written) on failure.

    `timeout` (seconds): UserError saying what was running when it expired (see guest.py)."""
    from .. import api
    from .plan import check_options

    opts = options or ScanOptions()
    check_options(slope, mode, min_dead_ratio)
    model = Path(model)
    out = Path(out) if out is not None else None
    if out is None and not dry_run:
        raise UserError("patch needs -o OUT", "Say where to write the patched model, or pass --dry-run.")
    protected = [model] + [Path(p) for p in (opts.data, report_path) if isinstance(p, (str, Path))]
    if out is not None and not dry_run:
        check_output_path(out, protected, force=force)
    named_formats(out, to)  # --to against OUT's extension, before anything is loaded
    running("loading the model")
    loaded = load_model(model, opts.arch, opts.arch_kwargs, opts.trust_pickle)
    if formats.get(loaded.format).patch_as is None:  # TorchScript, for the reasons in patching/torch.py
        from .torch import torchscript_refusal

        raise torchscript_refusal()
    fmt = output_format(loaded.format, to, out)
    recorder = OutputRecorder()  # the original's outputs and timings, for the verification
    report = _report(loaded, report_path, opts, progress, recorder)
    plan = plan_patch(report, slope=slope, mode=mode, min_dead_ratio=min_dead_ratio, select=select, ignore=ignore)
    if report_path is not None:  # a report from a file: the model must agree with it (report_match.py)
        check_report_matches(report, _probe(loaded, report, opts), str(report_path), [p.name for p in plan.sites])
    outcome = PatchOutcome(model, out, loaded.format, fmt, report, plan)
    if dry_run or not plan.sites or out is None:
        return outcome
    include_smooth = report.settings.include_smooth
    # the scan's own sample, for the rewrite's example and the checks
    sample, batch_size, fixed_batch = scan_sample(loaded, report, opts)
    if opts.max_batches is not None:  # the sample the scan saw: its first max_batches batches
        sample = replace(sample, count=min(sample.count, opts.max_batches * batch_size))
    running("rewriting the model")
    patched, example, plan = _rewrite(loaded, plan, sample, fixed_batch, fmt, include_smooth, outcome.warnings)
    outcome.plan = plan
    if not plan.sites:  # revive: every selected site is read by something no weight can undo
        return outcome
    names = None
    if fmt != "onnx":  # what the patched model's sites are called now, and in the report
        from ..site_names import pairs_for

        now = api.site_names_of(patched, sample, include_smooth, str(report.settings.get("neuron_axis", "auto")),
                                opts.device)
        names = pairs_for(now, plan.site_names)
    running(f"saving the patched model as {fmt}")
    data = _serialize(patched, fmt, names)  # in memory: no C++ writer ever meets a full disk
    try:
        # torch.export reads only paths ending in .pt2
        with atomic_path(out, suffix=formats.get(fmt).temp_suffix, force=force) as tmp:
            tmp.write_bytes(data)
            running(f"verifying the patched model written to {out}")
            try:
                outcome.verification = _verify(loaded, tmp, fmt, plan, sample, example, opts, report, batch_size,
                                               recorder if report_path is None else None)
            finally:
                recorder.outputs = []
            problems = outcome.verification.all_problems()
            if problems:
                raise VerificationError("; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")
                                        + f". Nothing was written to {out}.")
    except OSError as e:
        raise write_error(out, e) from None
    outcome.written = True
    return outcome


def _report(loaded: LoadedModel, report_path: str | Path | None, opts: ScanOptions, progress: Any,
            recorder: OutputRecorder | None = None) -> Report:
    from .. import api

    if report_path is not None:
        report = Report.load(report_path)
        if report.model.get("sha256") != loaded.sha256:
            raise UserError(f"{report_path} is not a report of {loaded.path} (its model.sha256 differs)",
                            "Scan this exact file again, or patch without --report.")
        return report
    report = api.scan(loaded.obj, opts.data, progress=progress, warn=False, observer=recorder, **opts.scan_kwargs())
    report.model = ModelInfo.from_dict(loaded.describe())
    return report


def _probe(loaded: LoadedModel, report: Report, opts: ScanOptions) -> Report:
    """The model's own sites: a scan of one small batch of the sample, with the report's settings."""
    from .. import api

    kwargs = opts.scan_kwargs()
    kwargs.update(samples=2, batch_size=2, max_batches=1, include_smooth=report.settings.include_smooth,
                  neuron_axis=report.settings.neuron_axis)
    return api.scan(loaded.obj, opts.data, warn=False, **kwargs)


def scan_sample(loaded: LoadedModel, report: Report, opts: ScanOptions) -> tuple[Sample, int, int | None]:
    """The sample `report`'s scan saw (same data, seed and shapes), its batch size (--batch-size
    auto: the size the scan chose) and the model's fixed batch size, if any."""
    from .. import api

    specs, fixed_batch = _specs(loaded, opts.device)
    sample = api.build_sample(opts.data, specs, opts.input_shape, opts.samples, opts.seed,
                              parse_range(opts.input_range), image_options(opts.image_size, opts.mean, opts.std))
    chosen = opts.batch_size if isinstance(opts.batch_size, int) else report.sample.get("batch_size")
    return sample, fixed_batch or int(chosen or DEFAULT_BATCH_SIZE), fixed_batch


def _specs(loaded: LoadedModel, device: str) -> tuple[list[InputSpec], int | None]:
    """What the model says about its inputs (as the scan reads them), and a fixed batch size."""
    backend = formats.backend_of(loaded.format)
    prepared = backend.prepare(loaded.obj, backend.resolve_device(device))
    getattr(prepared, "restore", lambda: None)()
    return [InputSpec(s.name, s.shape, s.dtype, s.dtype_known) for s in prepared.specs], prepared.fixed_batch


def _rewrite(loaded: LoadedModel, plan: PatchPlan, sample: Sample, fixed_batch: int | None, fmt: str,
             include_smooth: bool, warnings: list[str]) -> tuple[Any, Any, PatchPlan]:
    """The patched model object to write (in `fmt`), the example inputs used, and the plan as
    carried out (revive leaves alone the sites it cannot cut off)."""
    if loaded.format == ONNX:
        if plan.mode == REVIVE:
            from .revive_onnx import revive_onnx

            patched_onnx, plan = revive_onnx(loaded.obj, plan, include_smooth)
            return patched_onnx, None, plan
        from .onnx import patch_onnx

        return patch_onnx(loaded.obj, plan, include_smooth), None, plan
    from .torch import convert, example_inputs, patch_torch

    first = next(sample.batches(min(2, sample.count), fixed_batch))
    example = example_inputs(first.arrays, loaded.obj)
    if plan.mode == REVIVE:
        from .revive import revive_torch

        patched, plan, notes = revive_torch(loaded.obj, plan, example, include_smooth)
        if not plan.sites:
            return patched, example, plan
    else:
        patched, notes = patch_torch(loaded.obj, plan, example, include_smooth)
    warnings += notes
    if fmt != MODULE and formats.get(loaded.format).convertible:
        patched, notes = convert(patched, fmt, example, [s.name for s in sample.specs])
        warnings += notes
        if fmt == "onnx":  # the exporter names the nodes: give the sites the report's names back
            from .onnx_names import keep_site_names

            warnings += keep_site_names(patched, plan.site_names, include_smooth)
    return patched, example, plan


def _serialize(obj: Any, fmt: str, names: list[tuple[str, str]] | None = None) -> bytes:
    return formats.get(fmt).save(obj, names)


def _verify(loaded: LoadedModel, written: Path, fmt: str, plan: PatchPlan, sample: Sample, example: Any,
            opts: ScanOptions, report: Report, batch_size: int, recorded: OutputRecorder | None) -> Verification:
    """Reload what was written, rescan it the way the original was scanned, and check it
    (see verify.py) on the rescan's own runs and on fresh random inputs.

    The original's outputs come from its scan (`recorded`); where there was none to record
    (a --report) a scan of the original records them here, so both timings are of a scan's
    runs. An eager model patched --to onnx is compared with itself, run by torch: the
    model the user has against the file they get, export rounding included (see
    Verification.original_runtime). Only revive, whose outputs must be bit-identical,
    exports the original too and compares within onnxruntime."""
    from .. import api

    reloaded = load_model(written, trust_pickle=True)  # our own file, written a moment ago
    include_smooth = report.settings.include_smooth
    fresh = synthetic_sample(sample.specs, FRESH_SAMPLES, opts.seed + 1_000_003, sample.input_range)
    kwargs = opts.scan_kwargs()
    # the batches the original's scan ran (--batch-size auto: the size it chose)
    kwargs.update(include_smooth=include_smooth, neuron_axis=report.settings.get("neuron_axis", opts.neuron_axis),
                  batch_size=batch_size)
    original, original_onnx = loaded.obj, loaded.format == ONNX
    if fmt == ONNX and not original_onnx and plan.mode == REVIVE:
        from .torch import onnx_proto

        original, original_onnx = onnx_proto(loaded.obj, example, [s.name for s in sample.specs]), True
        recorded = None
    if recorded is None:
        recorded = OutputRecorder()
        api.scan(original, opts.data, warn=False, observer=recorded, **kwargs)
    checks = new_checks(plan)
    result = Verification(list(checks.values()))
    if original_onnx != (fmt == ONNX):
        result.original_runtime, result.patched_runtime = ("onnxruntime", "torch") if original_onnx \
            else ("torch", "onnxruntime")
    rescan = dict(warn=False, **kwargs)
    if fmt == ONNX:
        from . import verify_onnx

        onnx_checks = verify_onnx.RescanChecks(reloaded.obj, checks, plan, result, recorded, include_smooth)
        result.rescan = api.scan(reloaded, opts.data, observer=onnx_checks, **rescan)  # with the names it records
        onnx_checks.finish()
        verify_onnx.check_fresh(reloaded.obj, onnx_checks, fresh, batch_size, result, opts.device)
        compared = onnx_checks.compared()
    else:
        from . import verify_torch

        torch_checks = verify_torch.RescanChecks(checks, plan, result, recorded)
        result.rescan = api.scan(reloaded, opts.data, observer=torch_checks, **rescan)
        torch_checks.finish()
        verify_torch.check_fresh(reloaded.obj, checks, plan, fresh, batch_size, result, opts.device, include_smooth)
        compared = torch_checks.compared()
    if not compared:  # the original's outputs were too large to keep: run both again
        result.max_abs_change = pair_change(_outputs(original, original_onnx, sample, batch_size, opts.device),
                                            _outputs(reloaded.obj, fmt == ONNX, sample, batch_size, opts.device))
    check_rescan(result, plan)
    if plan.mode == REVIVE and result.max_abs_change != 0:
        result.problems.append(f"revive changed the model's outputs on the sample (max |change| "
                               f"{result.max_abs_change:.3g}); they must be identical")
    return result


def _outputs(model: Any, onnx_model: bool, sample: Sample, batch_size: int, device: str) -> Iterator[list[Any]]:
    """The model's outputs on the sample, batch by batch (onnx_model: run by onnxruntime)."""
    if onnx_model:
        from .verify_onnx import batch_outputs
    else:
        from .verify_torch import batch_outputs
    return batch_outputs(model, sample, batch_size, device)
