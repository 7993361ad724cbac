"""How much input one scan may allocate: checked before allocating, with what it would need."""

from __future__ import annotations

import os

from .errors import UserError


def max_sample_bytes() -> int:
    """The most input bytes one scan may generate or decode in all (synthetic samples, image folders).

    64 GiB by default (about 110,000 inputs of 3x224x224 float32, twice ImageNet's validation
    set); RELU_DOCTOR_MAX_SAMPLE_BYTES sets another limit. Checked before anything is allocated.
    """
    text = os.environ.get("RELU_DOCTOR_MAX_SAMPLE_BYTES", "")
    return int(text) if text.isdigit() and int(text) > 0 else 64 * 2**30


def check_sample_bytes(need: int, what: str, hint: str) -> None:
    limit = max_sample_bytes()
    if need > limit:
        raise UserError(f"{what} would need {human_size(need)} of input (the limit is {human_size(limit)})",
                        hint + " RELU_DOCTOR_MAX_SAMPLE_BYTES raises the limit.")


def human_size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"
