"""Model code is guest code: it may print, exit, or never return.

- `stdout_to_stderr()`: while the model runs, file descriptor 1 points to stderr (and
  sys.stdout is sys.stderr), so a model that prints, from Python or from TorchScript's
  C++, cannot corrupt the report on stdout. The CLI wraps its API calls in it.
- `contain_exits`: a SystemExit (or another BaseException that is not an interrupt)
  raised by the model's code becomes exit 2, saying what was running: an exit from guest
  code must never look like a finished scan.
- `deadline(seconds)`: --timeout. SIGALRM raises TimedOut in the main thread (cleanup
  runs through `finally`); if the model is stuck in C++ where Python cannot interrupt
  it, a watchdog thread removes the temporary files and ends the process with exit 2.
- `running(what, detail)`: what relu-doctor is doing now, for those messages.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .errors import UserError

F = TypeVar("F", bound=Callable[..., Any])
_now: list[tuple[str, Callable[[], str | None] | None]] = [("starting", None)]
_active: list[float] = []  # the deadline now running, if any
HARD_STOP_GRACE = 10.0  # seconds after the deadline before the watchdog ends the process


def running(what: str, detail: Callable[[], str | None] | None = None) -> None:
    """Record what is running now; `detail` is asked only when a message needs it (e.g. the last site)."""
    _now[0] = (what, detail)


def doing() -> str:
    what, detail = _now[0]
    extra = detail() if detail else None
    return f"{what} ({extra})" if extra else what


class TimedOut(BaseException):
    """--timeout expired. A BaseException, so model code's `except Exception` cannot swallow it."""


def guarded(fn: F) -> F:
    """For scan() and patch(): their `timeout=` keyword as a deadline, and exits of model
    code contained (see contain_exits)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .files import remove_temporaries

        running("starting")
        with deadline(kwargs.get("timeout"), remove_temporaries):
            return contain_exits(fn)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def contain_exits(fn: F) -> F:
    """Turn an exit raised inside `fn` (by the model's code) into a UserError (exit 2)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (KeyboardInterrupt, GeneratorExit, TimedOut):
            raise
        except SystemExit as e:
            raise UserError(f"the model's code exited (SystemExit({e.code!r})) while {doing()}",
                            "A model must return from its code; remove the exit() / sys.exit() call.") from None
        except Exception:
            raise
        except BaseException as e:
            if type(e).__name__ == "Terminated":  # files.Terminated: a real signal, not the model
                raise
            raise UserError(f"the model's code raised {type(e).__name__} while {doing()}",
                            "A model must return from its code or raise an Exception.") from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Inside: whatever is written to stdout (fd 1, sys.stdout) goes to stderr."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # stdout or stderr closed: nothing to protect, or nowhere to send it
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved is not None:
            _flush_c_stdio()  # TorchScript's print goes through C's buffered stdout
            os.dup2(saved, 1)
            os.close(saved)


def call_quietly(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """fn(*args, **kwargs) under stdout_to_stderr(): for the CLI, whose stdout is data."""
    with stdout_to_stderr():
        return fn(*args, **kwargs)


def _flush_c_stdio() -> None:
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def check_timeout(seconds: float) -> float:
    if not seconds > 0 or seconds == float("inf"):
        raise UserError(f"--timeout must be a positive number of seconds (got {seconds})")
    return seconds


@contextlib.contextmanager
def deadline(seconds: float | None, cleanup: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Raise TimedOut after `seconds`; end the process (exit 2) if that cannot interrupt it."""
    if seconds is None or _active:  # an outer deadline (patch's, around its scan) already runs
        yield
        return
    check_timeout(seconds)
    main = threading.current_thread() is threading.main_thread()
    done = threading.Event()

    def on_alarm(_signum: int, _frame: Any) -> None:
        raise TimedOut()

    def watchdog() -> None:
        if done.wait(seconds + (HARD_STOP_GRACE if main else 0)):
            return
        cleanup()
        sys.stderr.write(f"error: timed out after {seconds:g} s while {doing()}\n"
                         "The model did not return; raise --timeout, or check the model.\n")
        sys.stderr.flush()
        os._exit(2)

    _active.append(seconds)
    previous = signal.signal(signal.SIGALRM, on_alarm) if main else None
    if main:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    threading.Thread(target=watchdog, name="relu-doctor-timeout", daemon=True).start()
    try:
        yield
    except TimedOut:
        raise UserError(f"timed out after {seconds:g} s while {doing()}",
                        "Raise --timeout, or scan fewer samples (--samples).") from None
    finally:
        done.set()
        _active.pop()
        if main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
