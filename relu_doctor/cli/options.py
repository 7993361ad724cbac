"""Every command-line option, declared once, in groups that commands share.

A command names the groups it takes (`@takes(MODEL, SAMPLE, ...)`); their options are
added to its signature and arrive as one `Options` value, keyed by the Python API's
keyword names (SPEC 9: every CLI option is a keyword argument of the same name). So a
new sample option reaches `scan` and `patch` at once, and the two cannot drift.

Each option's callback parses and checks its value where it is parsed: a bad value is
click's usage error (exit 2, two lines) before any model is loaded.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import typer

from ..formats import OUTPUT_FORMATS

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Opt:
    """One option: its keyword name, Python type, default, and typer declaration."""

    name: str
    type: Any
    default: Any
    flags: tuple[str, ...]
    help: str
    metavar: str | None = None
    callback: Callable[..., Any] | None = None  # parses and checks the value while click parses
    finish: Callable[[Any], Any] | None = None  # applied after typer's own conversion
    extra: tuple[tuple[str, Any], ...] = ()

    def parameter(self) -> inspect.Parameter:
        info = typer.Option(self.default, *self.flags, help=self.help, metavar=self.metavar,
                            callback=self.callback, **dict(self.extra))
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=self.type)


Group = tuple[Opt, ...]


class Options(dict):  # type: ignore[type-arg]
    """The parsed values of a command's option groups, by keyword name."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def of(self, *groups: Group) -> dict[str, Any]:
        """The values of these groups only, as keyword arguments."""
        return {o.name: self[o.name] for g in groups for o in g}


def takes(*groups: Group) -> Callable[[F], F]:
    """Add the groups' options to a command; the command receives them as `opts: Options`."""

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        own = [p for name, p in signature.parameters.items() if name != "opts"]
        added = [o for g in groups for o in g]
        names = [o.name for o in added]
        if len(set(names)) != len(names) or set(names) & {p.name for p in own}:
            raise TypeError(f"{func.__name__}: an option is taken twice")

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            opts = Options((o.name, o.finish(kwargs.pop(o.name)) if o.finish else kwargs.pop(o.name)) for o in added)
            return func(**kwargs, opts=opts)

        params = own + [o.parameter() for o in added]
        command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer must read the signature above, not the original's
        return command  # type: ignore[return-value]

    return decorate


# -- parsers ---------------------------------------------------------------------------------------


def _checked(check: Callable[[Any], object]) -> Callable[[Any], Any]:
    """A callback running the API's own check on a given value (the API parses it again, cheaply).

    Its UserError becomes click's usage error: exit 2, two lines, before any model loads.
    """

    def callback(value: Any) -> Any:
        from ..errors import UserError

        if value is None or value == []:
            return value
        try:
            check(value)
        except UserError as e:
            raise typer.BadParameter(e.message + (f". {e.hint}" if e.hint else "")) from None
        return value

    return callback


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise typer.BadParameter(f"--batch-size {value!r} is not a number. Give a positive integer or auto.") from None
    if number < 1:
        raise typer.BadParameter(f"--batch-size must be at least 1, or auto (got {value})")
    return number


def _at_least(flag: str, low: int, high: int | None = None) -> Callable[[int], None]:
    def check(value: int) -> None:
        from ..errors import UserError

        if value < low or (high is not None and value > high):
            upper = f" and at most {high}" if high is not None else ""
            raise UserError(f"{flag} must be at least {low}{upper} (got {value})")

    return check


def _range(text: str) -> object:
    from ..input_options import parse_range

    return parse_range(text)


def _shapes(texts: list[str]) -> object:
    from ..input_options import parse_shape

    return [parse_shape(t) for t in texts]


def _shard(text: str) -> object:
    from ..input_options import parse_shard

    return parse_shard(text)


def _image(which: str) -> Callable[[str], object]:
    def check(text: str) -> object:
        from ..images import image_options

        return image_options(**{"image_size": None, "mean": None, "std": None, which: text})

    return check


def _device(text: str) -> object:
    from ..devices import parse_device

    return parse_device(text)


def _tau(value: float) -> None:
    from ..errors import UserError

    if not 0 < value < 1:
        raise UserError(f"{value:g} is not between 0 and 1", "The ReDo paper uses 0.025 (default) to 0.1")


def _ratio(flag: str) -> Callable[[float], object]:
    def check(value: float) -> object:
        from ..gates import check_threshold

        check_threshold(flag, value)
        return value

    return check


def _increase(value: float) -> object:
    from ..compare import check_increase

    check_increase(value)
    return value


def _choice(value: Enum | None) -> str | None:
    return None if value is None else value.value


def _list(value: list[str] | None) -> tuple[str, ...]:
    return tuple(value or ())


class NeuronAxis(str, Enum):
    auto = "auto"
    channel = "channel"
    last = "last"


# -- the model -------------------------------------------------------------------------------------

ARCH = Opt("arch", str | None, None, ("--arch",), "MODULE:CALLABLE building the model for a state dict.",
           "MODULE:CALLABLE")
ARCH_KWARGS = Opt("arch_kwargs", str | None, None, ("--arch-kwargs",), "JSON keyword arguments for --arch.", "JSON")
TRUST_PICKLE = Opt("trust_pickle", bool, False, ("--trust-pickle",),
                   "Allow loading a pickled nn.Module. Unpickling runs code from the file.")
MODEL: Group = (ARCH, ARCH_KWARGS, TRUST_PICKLE)

# -- the sample the model runs on ------------------------------------------------------------------

SAMPLE: Group = (
    Opt("data", Path | None, None, ("--data",),
        "Sample inputs: .npy, .npz (by input name), .pt, or a folder of images (subfolders too).", "PATH"),
    Opt("input_shape", list[str] | None, None, ("--input-shape",),
        "Per-sample input shape, no batch dim: 3,224,224 or name=3,224,224. Repeatable.", "SHAPE", _checked(_shapes)),
    Opt("samples", int | None, None, ("--samples",), "Samples to scan (synthetic default 256).", "N",
        _checked(_at_least("--samples", 1))),
    Opt("batch_size", str, "32", ("--batch-size",), "Samples per forward pass, or auto.", "B", _batch_size),
    Opt("max_batches", int | None, None, ("--max-batches",), "Stop after this many batches.", "N",
        _checked(_at_least("--max-batches", 1))),
    Opt("seed", int, 0, ("--seed",), "Seed of the synthetic inputs.", "N",
        _checked(_at_least("--seed", 0, 2**63 - 1))),
    Opt("input_range", str | None, None, ("--input-range",),
        "Synthetic inputs uniform in LO,HI instead of standard normal; with --prove, the inputs' declared range.",
        "LO,HI", _checked(_range)),
    Opt("image_size", str | None, None, ("--image-size",),
        "With --data FOLDER of images: resize them to H,W (one number: a square).", "H,W",
        _checked(_image("image_size"))),
    Opt("mean", str | None, None, ("--mean",), "Images: subtract this mean.", "R,G,B", _checked(_image("mean"))),
    Opt("std", str | None, None, ("--std",), "Images: divide by this std.", "R,G,B", _checked(_image("std"))),
    Opt("device", str, "auto", ("--device",), "cpu, cuda, cuda:N or auto.", "DEVICE", _checked(_device)),
)

# -- what is measured ------------------------------------------------------------------------------

MEASURE: Group = (
    Opt("tau", float, 0.025, ("--tau",), "ReDo dormancy threshold, between 0 and 1.", "TAU", _checked(_tau)),
    Opt("neuron_axis", NeuronAxis, NeuronAxis.auto, ("--neuron-axis",), "auto, channel or last.", "AXIS", _choice),
    Opt("include_smooth", bool, False, ("--include-smooth",), "Also report GELU, SiLU, ELU, ... sites."),
)

SHARD = Opt("shard", str | None, None, ("--shard",),
            "Scan only shard I of N of the sample (I/N, from 0); combine with `merge`.", "I/N",
            _checked(_shard))

# -- which sites count -----------------------------------------------------------------------------

SELECT: Group = (
    Opt("select", list[str] | None, None, ("--select",), "Only sites whose name matches this glob. Repeatable.",
        "GLOB", finish=_list),
    Opt("ignore", list[str] | None, None, ("--ignore",), "Skip sites whose name matches this glob. Repeatable.",
        "GLOB", finish=_list),
)

# -- gates -----------------------------------------------------------------------------------------

GATES: Group = (
    Opt("fail_dead_ratio", float | None, None, ("--fail-dead-ratio",),
        "Exit 1 if any ReLU-type site has a dead ratio above R.", "R", _checked(_ratio("fail_dead_ratio"))),
    Opt("fail_total_dead_ratio", float | None, None, ("--fail-total-dead-ratio",),
        "Exit 1 if the model's dead ratio is above R.", "R", _checked(_ratio("fail_total_dead_ratio"))),
)
PROVE: Group = (
    Opt("prove", bool, False, ("--prove",),
        "Also prove, without data, which neurons are dead on every input (in --input-range when given)."),
    Opt("fail_provably_dead", float | None, None, ("--fail-provably-dead",),
        "Exit 1 if any ReLU-type site has more than R of its neurons provably dead (implies --prove).", "R",
        _checked(_ratio("fail_provably_dead"))),
)
FAIL_INCREASE = Opt("fail_increase", float | None, None, ("--fail-increase",),
                    "Exit 1 if a ReLU-type site's dead ratio grew by more than PP percentage points.", "PP",
                    _checked(_increase))
NEURONS = Opt("neurons", Path | None, None, ("--neurons",),
              "Also write every site's per-neuron counters here (.npz: fires, entries, abs_sum, ...).", "FILE.npz")
BASELINE = Opt("baseline", Path | None, None, ("--baseline",),
               "Also compare with this earlier JSON report (as `diff`).", "BASE.json")

# -- output and run --------------------------------------------------------------------------------

REPORT_OUTPUT = Opt("output", Path | None, None, ("--output", "-o"),
                    "Write here instead of stdout, in the format the extension names.", "FILE")


def report_format(choices: type[Enum], default: Enum) -> Opt:
    """-f/--format with the choices a command renders; unset, -o's extension decides, else `default`."""
    names = [c.value for c in choices]  # type: ignore[attr-defined]
    listed = ", ".join(names[:-1]) + " or " + names[-1]
    return Opt("format", choices | None, None, ("--format", "-f"),  # type: ignore[operator]
               f"{listed}. Default: from -o's extension (.json, .md, .csv), else {default.value}.", "FORMAT",
               _choice)


DISPLAY: Group = (
    Opt("top", int | None, None, ("--top",), "Table: only the N sites with the most dead neurons.", "N",
        _checked(_at_least("--top", 1))),
    Opt("only_dead", bool, False, ("--only-dead",), "Table: only sites with dead neurons."),
)


# -- writing a model (patch, prune) ----------------------------------------------------------------

# the formats a rewritten model can be written in, as the registry (formats.py) lists them
OutputFormat = Enum("OutputFormat", {name: name for name in OUTPUT_FORMATS}, type=str)  # type: ignore[misc]

WRITE_MODEL: Group = (
    Opt("output", Path | None, None, ("--output", "-o"),
        "The new model, required unless --dry-run. Its extension names the format: .onnx, .pt2, "
        ".pt/.pth (TorchScript for TorchScript input, else a pickled module); --to wins.", "OUT"),
    Opt("to", OutputFormat | None, None, ("--to",),
        "Output format (onnx, pt2, torchscript, module); eager inputs (state dict, safetensors, pickled "
        "module) convert to any. Default: OUT's extension, else the input's format.", "FORMAT"),
    Opt("force", bool, False, ("--force",), "Replace OUT if it exists."),
    Opt("dry_run", bool, False, ("--dry-run",), "Print the plan; write nothing."),
)


def _timeout(value: float) -> float:
    from ..guest import check_timeout

    return check_timeout(value)


TIMEOUT = Opt("timeout", float | None, None, ("--timeout",),
              "Give up after this many seconds (exit 2, naming what was running).", "SECONDS", _checked(_timeout))

RUN: Group = (
    Opt("quiet", bool, False, ("--quiet", "-q"), "No progress bar, no warnings."),
    Opt("debug", bool, False, ("--debug",), "Show tracebacks."),
)
