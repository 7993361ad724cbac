"""Sample inputs: data arrays or seeded synthetic data, matched to the model's inputs and
served in batches.

Arrays stay numpy here (an ONNX scan never needs torch); backends convert a batch when
they run it. A sample is a list of per-input arrays whose first axis is the sample.
The arrays are read by data_sources.py; the options that shape a sample (--input-shape,
--shard, --input-range) are parsed by input_options.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import UserError
from .limits import check_sample_bytes, human_size
from .notices import SYNTHETIC_DATA, Notice

DEFAULT_SYNTHETIC_SAMPLES = 256
DEFAULT_BATCH_SIZE = 32
# Refuse a single batch beyond this before allocating it (the machine would swap or die).
MAX_BATCH_BYTES = 8 * 2**30


@dataclass(frozen=True)
class InputSpec:
    """What the model says about one input: per-sample shape (None for an unknown dim)."""

    name: str
    shape: tuple[int | None, ...] | None = None
    dtype: str = "float32"
    # False where the model does not say (eager, TorchScript): float32 is then a guess, and
    # integer data stays integer until the model shows it takes floats (backends/torch.py)
    dtype_known: bool = False

    @property
    def dims(self) -> tuple[int, ...]:
        """The per-sample shape of a resolved spec, where every dim is known."""
        if self.shape is not None and any(d is None for d in self.shape):
            raise ValueError(f"input {self.name!r} has unknown dims: {self.shape}")
        return tuple(int(d) for d in self.shape or () if d is not None)


@dataclass
class Batch:
    arrays: list[np.ndarray]  # one per model input, first axis = rows in this batch
    valid: int  # rows that belong to the sample (the rest pad a fixed-size batch)
    nonfinite: int = 0  # NaN / inf input values in the valid rows (backends add them up)


@dataclass
class Sample:
    """The inputs a scan runs: real arrays or a seeded synthetic stream."""

    source: str  # "synthetic", "array" or the data path
    specs: list[InputSpec]  # resolved: every shape fully known
    count: int
    seed: int | None = None
    input_range: tuple[float, float] | None = None
    arrays: list[np.ndarray] | None = None  # None for synthetic
    warnings: list[str] = field(default_factory=list)
    offset: int = 0  # index of this sample's first row in the whole sample (shards)
    details: dict[str, Any] = field(default_factory=dict)  # more for the report's sample (e.g. images)

    def shard(self, index: int, count: int) -> Sample:
        """Rows [index*N/count, (index+1)*N/count) of this sample: contiguous, so shards of a
        file read disjoint blocks, and together they are exactly the whole."""
        start = self.count * index // count
        stop = self.count * (index + 1) // count
        return replace(self, offset=self.offset + start, count=stop - start, warnings=list(self.warnings))

    def batches(self, batch_size: int, fixed_batch: int | None = None) -> Iterator[Batch]:
        """Batches of `batch_size` rows; with `fixed_batch` every batch has exactly that many
        rows, the last padded with copies of its first row and marked by `valid`. Reads only:
        iterating twice gives the same batches (the sample is not changed)."""
        size = fixed_batch or batch_size
        for start in range(self.offset, self.offset + self.count, size):
            stop = min(start + size, self.offset + self.count)
            arrays = [self._rows(i, start, stop) for i in range(len(self.specs))]
            nonfinite = sum(_nonfinite(a) for a in arrays if a.dtype.kind == "f")
            valid = stop - start
            if fixed_batch and valid < fixed_batch:
                arrays = [np.concatenate([a, np.repeat(a[:1], fixed_batch - valid, 0)]) for a in arrays]
            yield Batch(arrays, valid, nonfinite)
            del arrays  # not alive while the next batch is made

    def head(self, rows: int) -> list[np.ndarray]:
        """The first `rows` rows of every input, as a batch would serve them (not counted)."""
        stop = self.offset + min(rows, self.count)
        return [self._rows(i, self.offset, stop) for i in range(len(self.specs))]

    def _rows(self, input_index: int, start: int, stop: int) -> np.ndarray:
        spec = self.specs[input_index]
        if self.arrays is not None:
            # A copy: data may be a read-only memory map, and in-place ReLUs write their input.
            # Integer data for a float input becomes float here, the same for every format.
            rows = self.arrays[input_index][start:stop]
            if rows.dtype.kind != np.dtype(spec.dtype).kind:
                return np.array(rows, dtype=spec.dtype, order="C")
            return np.array(rows, order="C", copy=True)
        # Filled in place: stacking a list of per-sample arrays would hold the batch twice
        # (19 MB more at the peak of a ResNet-18 scan, batch 32).
        batch = np.empty((stop - start, *spec.dims), np.dtype(spec.dtype))
        for row, i in enumerate(range(start, stop)):
            batch[row] = self._synthetic(spec, input_index, i)
        return batch

    def _synthetic(self, spec: InputSpec, input_index: int, sample_index: int) -> np.ndarray:
        # One generator per (seed, sample, input): sample i is the same whatever the batch
        # size or shard, so partial scans of a synthetic sample merge exactly.
        rng = np.random.default_rng([self.seed or 0, sample_index, input_index])
        shape = spec.dims
        dtype = np.dtype(spec.dtype)
        if dtype.kind in "iub":
            lo, hi = self.input_range or (0, 2)
            return rng.integers(int(lo), int(hi), size=shape).astype(dtype)
        if self.input_range is None:
            return rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        lo, hi = self.input_range
        return rng.uniform(lo, hi, size=shape).astype(dtype)

    def describe_inputs(self) -> list[dict[str, Any]]:
        return [{"name": s.name, "shape": list(s.shape or ()), "dtype": s.dtype} for s in self.specs]


def synthetic_sample(specs: list[InputSpec], samples: int | None, seed: int,
                     input_range: tuple[float, float] | None) -> Sample:
    for s in specs:
        if s.shape is None or any(d is None for d in s.shape):
            known = "x".join("?" if d is None else str(d) for d in s.shape or ())
            raise UserError(
                f"the shape of input {s.name!r} is unknown" + (f" ({known})" if known else ""),
                "Give it with --input-shape (per sample, no batch dimension), e.g. --input-shape 3,224,224, "
                "or pass real data with --data.",
            )
    count = DEFAULT_SYNTHETIC_SAMPLES if samples is None else samples
    _check_synthetic(specs, count, seed, input_range)
    return Sample(
        source="synthetic", specs=specs,
        count=count,
        seed=seed, input_range=input_range,
        warnings=[Notice("synthetic inputs: real inputs give the numbers that matter (pass --data)", SYNTHETIC_DATA)],
    )


def _check_synthetic(specs: list[InputSpec], count: int, seed: int,
                     input_range: tuple[float, float] | None) -> None:
    """What a synthetic sample could not generate, refused before the first batch."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise UserError(f"--seed must be an integer from 0 to 2**63-1 (got {seed!r})")
    per_sample = sum(math.prod(int(d or 0) for d in s.shape or ()) * np.dtype(s.dtype).itemsize for s in specs)
    check_sample_bytes(count * per_sample, f"--samples {count} synthetic inputs of {human_size(per_sample)} each",
                       "Scan fewer --samples (a few hundred to a few thousand give a detection floor under 1%).")
    for s in specs:
        dtype = np.dtype(s.dtype)
        if dtype.kind not in "iub" or input_range is None:
            continue
        lo, hi = input_range
        info = np.iinfo(dtype) if dtype.kind != "b" else np.iinfo(np.uint8)
        top = 2 if dtype.kind == "b" else int(info.max) + 1
        if not (float(lo).is_integer() and float(hi).is_integer() and info.min <= lo < hi <= top):
            raise UserError(f"input {s.name!r} is {dtype.name}: --input-range {lo:g},{hi:g} is not a range of its "
                            f"integers", f"Give whole numbers LO,HI (HI excluded) within {int(info.min)}..{top}.")


def array_sample(arrays: dict[str, np.ndarray] | list[np.ndarray], specs: list[InputSpec],
                 source: str, samples: int | None) -> Sample:
    """Match data arrays to the model's inputs (by name or position) and check them."""
    unused: list[str] = []
    if isinstance(arrays, dict):
        names = [s.name for s in specs] if specs else list(arrays)
        if len(arrays) == 1 and len(names) == 1:
            ordered = list(arrays.values())
        else:
            missing = [n for n in names if n not in arrays]
            if missing:
                raise UserError(f"the data has no array for input {missing[0]!r} (it has {', '.join(arrays)})",
                                "Key the .npz / dict by the model's input names.")
            ordered = [arrays[n] for n in names]
            unused = [k for k in arrays if k not in names]  # e.g. an optional mask argument
    else:
        ordered = list(arrays)
    if specs and len(ordered) != len(specs):
        raise UserError(f"the data has {len(ordered)} arrays but the model takes {len(specs)} inputs")
    if not specs:
        specs = [InputSpec(f"input{i}") for i in range(len(ordered))]
    counts = {len(a) if a.ndim else 0 for a in ordered}
    if len(counts) != 1:
        raise UserError(f"the data's arrays have different numbers of samples: {sorted(counts)}")
    count = counts.pop()
    if count == 0:
        raise UserError(f"the data in {source} holds no samples", "Pass an array whose first axis has samples.")
    resolved: list[InputSpec] = []
    notes = [f"the data's {', '.join(map(repr, unused))} {'is' if len(unused) == 1 else 'are'} not among the "
             f"inputs the model requires ({', '.join(names)}): not used (optional arguments take their defaults)"
             ] if unused else []
    for spec, a in zip(specs, ordered):
        _check_fits(spec, a, source)
        dtype, note = data_dtype(spec, a.dtype, source)
        resolved.append(InputSpec(spec.name, tuple(a.shape[1:]), dtype, spec.dtype_known))
        notes += [note] if note else []
    if samples is not None:
        count = min(count, samples)
    return Sample(source=source, specs=resolved, count=count, arrays=ordered, warnings=notes)


def data_dtype(spec: InputSpec, data: np.dtype, source: str) -> tuple[str, str | None]:
    """The dtype an input is fed in, and a warning when the data is converted.

    One rule for every format: integer data stays integer for an integer input (token
    ids); for a float input it is converted, values unchanged, with a warning. Converting
    (not refusing) because many exported models take raw 0..255 pixels and normalise inside;
    the warning is for the others. Float data for an integer input is refused: a token id
    cannot be guessed from a float. Where the model does not say (eager, TorchScript), the
    data's own dtype is tried first (backends/torch.py converts when the model refuses it).
    """
    want = np.dtype(spec.dtype)
    if data.kind == want.kind:
        return spec.dtype, None
    if not spec.dtype_known:
        return (spec.dtype, None) if data.kind == "f" else (data.name, None)
    if want.kind == "f":
        return spec.dtype, float_conversion_note(spec.name, data.name, spec.dtype, source)
    if data.kind == "f":
        raise UserError(f"the data for input {spec.name!r} in {source} is {data.name}, but the model takes "
                        f"{spec.dtype} (integers such as token ids)",
                        f"Save that input as integers ({spec.dtype}).")
    return spec.dtype, None  # integers or bools for an integer input: values unchanged


def float_conversion_note(name: str, data: str, dtype: str, source: str) -> str:
    return (f"the data for input {name!r} in {source} is {data}, the model takes {dtype}: converted with "
            "values unchanged (not scaled to [0, 1]); if the model expects normalised inputs, "
            "normalise the data first")


def _check_fits(spec: InputSpec, a: np.ndarray, source: str) -> None:
    if a.dtype.kind not in "fiub":
        raise UserError(f"the data for input {spec.name!r} in {source} has dtype {a.dtype}, not a number")
    if spec.shape is None:
        return
    if len(a.shape) != len(spec.shape) + 1 or any(
        want is not None and want != got for want, got in zip(spec.shape, a.shape[1:])
    ):
        want = "x".join("?" if d is None else str(d) for d in spec.shape)
        raise UserError(
            f"the data for input {spec.name!r} has shape {tuple(a.shape)}, but the model expects "
            f"(samples, {want.replace('x', ', ')})",
            "The first axis of the data is the sample; the rest must match the model's input.",
        )


def check_batch_size(batch_size: int, specs: list[InputSpec]) -> None:
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {batch_size})")
    per_sample = sum(int(np.prod(s.dims)) * np.dtype(s.dtype).itemsize for s in specs)
    need = per_sample * batch_size
    if need > MAX_BATCH_BYTES:
        raise UserError(
            f"one batch of {batch_size} inputs would need {need / 2**30:.1f} GiB before the model even runs",
            "Lower --batch-size or --input-shape.",
        )


def _nonfinite(a: np.ndarray) -> int:
    """NaN and inf values in `a`. Counting them costs 2.5 times a check that there are none
    (2.3 against 0.9 ms for a batch of 32 x 3x224x224, 0.3% of a MobileNetV2 scan), so
    the batch is checked first."""
    return 0 if np.isfinite(a).all() else int((~np.isfinite(a)).sum())
