"""Reading a watch history (one JSON report per line) as untrusted input.

A history file may be truncated by a crash, edited by hand, or not a history at all: every
line is parsed and checked before it is used, and anything wrong is a UserError naming the
line (exit 2), never a traceback. A last line cut short by a crash (no newline, not JSON) is
dropped with a warning: the lines before it were each complete when written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..report import Report

MAX_LINE_BYTES = 256 << 20  # a report of a very large model; anything longer is not one
_HINT = "Pass a file written by relu_doctor.watch(..., history=PATH)."


def read_history(path: str | Path) -> tuple[list[Report], list[str]]:
    """The reports of a history file, in file order, and warnings."""
    path = Path(path)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise UserError(f"history not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a history file", _HINT) from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    reports: list[Report] = []
    warnings: list[str] = []
    with f:
        number = 0
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                break
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise UserError(f"{path}:{number}: a line longer than {MAX_LINE_BYTES >> 20} MiB", _HINT)
            if not raw.strip():
                continue
            try:
                reports.append(parse_line(raw))
            except ValueError as e:
                if not raw.endswith(b"\n") and reports:  # only the end of the file lacks a newline
                    warnings.append(f"{path}:{number}: the last line is incomplete (a run cut short?); skipped")
                    break
                raise UserError(f"{path}:{number}: not a relu-doctor report: {e}", _HINT) from None
    if not reports:
        raise UserError(f"{path} holds no report", _HINT)
    return reports, warnings


def parse_line(raw: bytes) -> Report:
    """One history line as a Report; ValueError says what is wrong."""
    from ..validate import check_report

    try:
        d = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise ValueError(f"a JSON {type(d).__name__}, not an object")
    try:
        check_report(d, "line")  # the one validation of a report read from a file
    except UserError as e:
        raise ValueError(e.message.removeprefix("line is not a relu-doctor report: ")) from None
    steps = d["sample"].get("steps")
    if steps is not None and not (isinstance(steps, list) and len(steps) == 2
                                  and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in steps)
                                  and steps[0] <= steps[1]):
        raise ValueError(f"sample.steps must be [first, last] steps (got {_short(steps)})")
    try:
        return Report.from_dict(d)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError, RecursionError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
