"""Warnings a report carries, as data: the text people read and a stable code for programs.

A `Notice` is a `str` (the JSON `warnings` list and every `"..." in w` keep working) with a
`code`, saved in the JSON as the parallel list `warning_codes` (a key added to v1). Code
that must find a warning again (merge redoes the sample-size one) matches the code, never
the wording.
"""

from __future__ import annotations

import os
import sys
import warnings as py_warnings
from collections.abc import Iterable
from types import FrameType

SYNTHETIC_DATA = "synthetic_data"
SMALL_SAMPLE = "small_sample"
NONFINITE_INPUTS = "nonfinite_inputs"
NO_SITES = "no_sites"
CAPTURE = "capture"  # what a backend says about a site (not measured, rows not split, ...)
NO_SHA256 = "no_sha256"
MISSING_SHARDS = "missing_shards"
DUPLICATE_SAMPLE = "duplicate_sample"
EXTREMES_NOT_MERGED = "extremes_not_merged"  # some parts lack the per-neuron max/min (neuron_extremes)
OTHER = "other"  # a report without codes (older v1 files)


class Notice(str):
    code: str

    def __new__(cls, text: str, code: str = OTHER) -> Notice:
        self = super().__new__(cls, text)
        self.code = code
        return self

    def __reduce__(self) -> tuple:  # pickling (multiprocessing) keeps the code
        return (Notice, (str(self), self.code))


def code_of(w: str) -> str:
    return w.code if isinstance(w, Notice) else OTHER


def notices(texts: Iterable[str], code: str) -> list[str]:
    return [t if isinstance(t, Notice) else Notice(t, code) for t in texts]


class ReluDoctorWarning(UserWarning):
    """What `rd.scan()` emits through Python's `warnings` (filter it by this class)."""


def emit(items: Iterable[str], stacklevel: int | None = None) -> None:
    """Emit each notice once through Python's warnings, for API users (notebooks, scripts).

    By default the warning points at the first caller outside relu_doctor (however many
    of its own frames, decorators included, lie between)."""
    level = stacklevel or _first_outside_frame()
    for w in items:
        py_warnings.warn(str(w), ReluDoctorWarning, stacklevel=level)


def _first_outside_frame() -> int:
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame: FrameType | None = sys._getframe(2)  # 1 is emit() itself
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
