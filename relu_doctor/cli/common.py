"""What every command shares: exit codes, the error-to-exit-code mapping, output, progress.

stdout carries data, stderr carries progress, warnings and errors (SPEC 10, DESIGN 7-8).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

EXIT_OK, EXIT_GATE, EXIT_USER, EXIT_BUG = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away
MIN_WIDTH, MAX_WIDTH, DEFAULT_WIDTH = 60, 1000, 80


class ErrorMappingGroup(typer.core.TyperGroup):
    """Click's usage errors in our two-line shape: what is wrong, then where to look."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        ClickException: Any
        try:  # typer >= 0.25 vendors click
            from typer._click import ClickException
        except ImportError:
            from click import ClickException

        try:
            result = super().main(*args, **{**kwargs, "standalone_mode": False})
        except BrokenPipeError:  # --help or --version into `| head`
            reader_gone()
        except typer.Exit as e:
            sys.exit(e.exit_code)
        except typer.Abort:
            sys.exit(EXIT_INTERRUPTED)
        except ClickException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # bare `relu-doctor`: the help is the answer
                stderr().print(e.format_message(), highlight=False, markup=False)
                sys.exit(EXIT_USER)
            ctx = getattr(e, "ctx", None)
            command = ctx.command_path if ctx is not None else "relu-doctor"
            say("error:", e.format_message(), "bold red")
            stderr().print(f"See '{command} --help'.", highlight=False, markup=False)
            sys.exit(EXIT_USER)
        # without standalone mode click returns a command's exit code instead of exiting
        sys.exit(result if isinstance(result, int) else EXIT_OK)


def terminal_width() -> int:
    """The terminal's width, or 80; an absurd COLUMNS (0, negative, not a number, huge) is bounded."""
    import os
    import shutil

    text = os.environ.get("COLUMNS", "")
    columns = int(text) if text.strip().isdigit() else 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 0
        except (OSError, ValueError):
            columns = 0
        columns = columns or shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns or DEFAULT_WIDTH
    return min(max(columns, MIN_WIDTH), MAX_WIDTH)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, width=terminal_width())


def say(label: str, message: str, style: str) -> None:
    """One stderr line: a styled label, then the message as plain text (never markup, no control character)."""
    from rich.text import Text

    from ..render.escape import visible

    stderr().print(Text.assemble((label, style), " ", visible(message)))


def warn(warnings: Sequence[str], quiet: bool) -> None:
    if not quiet:
        for w in warnings:
            say("warning:", w, "yellow")


def gate_failed(title: str, lines: Sequence[str]) -> None:
    """A breached gate on stderr: the title, then one line per offending site."""
    from ..render.escape import visible

    say("gate failed:", title, "bold red")
    for line in lines:
        stderr().print(f"  {visible(line)}", highlight=False, markup=False)


def reader_gone() -> None:
    """stdout's reader left (`| head -1`): stop quietly, as Unix tools do, with 128 + SIGPIPE."""
    import os

    try:  # later flushes (Rich, interpreter exit) must not raise again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    sys.exit(EXIT_BROKEN_PIPE)


def _stdout_gone(e: OSError) -> bool:
    import errno

    return isinstance(e, BrokenPipeError) or e.errno in (errno.EPIPE, errno.EBADF)


def run_guarded(debug: bool, body: Callable[[], int]) -> None:
    """Run a command body; user errors become two lines and exit 2, bugs exit 3."""
    from ..errors import UserError, VerificationError, summarize_exception
    from ..files import Terminated, terminate_cleanly
    from ..render.escape import visible

    try:
        with terminate_cleanly():  # SIGTERM / SIGHUP unwind through `finally`: no temporary file is left
            code = body()
    except BrokenPipeError:
        reader_gone()
    except Terminated as e:
        say("error:", f"{e}; nothing was written", "bold red")
        raise typer.Exit(e.exit_code) from None
    except UserError as e:
        say("error:", e.message, "bold red")
        if e.hint:
            stderr().print(visible(e.hint), highlight=False, markup=False)
        if debug:
            raise
        raise typer.Exit(EXIT_USER) from None
    except VerificationError as e:
        say("verification failed:", str(e), "bold red")
        if debug:
            raise
        raise typer.Exit(EXIT_BUG) from None
    except KeyboardInterrupt:
        stderr().print("interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as e:  # a bug in relu-doctor: say so, keep the traceback for --debug
        if debug:
            raise
        say("internal error:", f"{type(e).__name__}: {summarize_exception(e)}", "bold red")
        stderr().print("This is a bug in relu-doctor; rerun with --debug for the traceback and report it.")
        raise typer.Exit(EXIT_BUG) from None
    raise typer.Exit(code)


def _closed_stdout() -> Exception:
    from ..errors import UserError

    return UserError("stdout is closed: nowhere to write the output", "Pass -o FILE, or leave stdout open.")


def emit(text: str, output: Path | None, protected: Sequence[Path]) -> None:
    """Write data to -o FILE (atomically) or to stdout."""
    from ..files import atomic_write_text, check_output_path

    if output is None:
        if sys.stdout is None:  # started with stdout closed (`>&-`)
            raise _closed_stdout()
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError as e:
            if isinstance(e, BrokenPipeError) or not _stdout_gone(e):
                raise
            raise _closed_stdout() from None
        return
    check_output_path(output, protected)
    atomic_write_text(output, text)


def stdout_console(soft_wrap: bool = False) -> Console:
    """Straight to the terminal, in colour when stdout is one (Rich honours NO_COLOR), as wide as it is."""
    if sys.stdout is None:
        raise _closed_stdout()
    return Console(highlight=False, soft_wrap=soft_wrap, width=terminal_width())


class ProgressBar:
    """A Rich progress bar on stderr, only when stderr is a terminal and not --quiet."""

    def __init__(self, enabled: bool) -> None:
        self.progress: Any = None
        self.task: Any = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.progress = Progress(
                "scanning", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=stderr(), transient=True
            )

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            return
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("scan", total=total)
        self.progress.update(self.task, completed=done)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _no_type(ctx: Any) -> None:
    return None


class Command(typer.core.TyperCommand):
    """Help as people read it: `MODEL` in the usage line (not `{MODEL}`), argument names without
    Python types (`REPORT.json...`, not `REPORT.json <list[Path]>`), and the whole first sentence
    of a command's summary in the command list (never cut with `...`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, typer.core.TyperArgument):
                name = param.metavar or param.name or ""
                many = "..." if param.nargs != 1 and not name.endswith("...") else ""
                shown: Callable[[], str] = functools.partial(str, name + many)
                # per-instance overrides of typer's display (typer >= 0.25 builds both from these)
                param._usage_display_name = shown  # type: ignore[method-assign]
                param._rich_display_name = shown  # type: ignore[method-assign]
                param.display_type_rich = _no_type  # type: ignore[method-assign]

    def get_short_help_str(self, limit: int = 45) -> str:
        text = (self.short_help or self.help or "").strip()
        return text.split("\n\n")[0].replace("\n", " ")
