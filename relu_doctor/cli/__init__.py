"""The relu-doctor command: parse, call the API, render, map errors to exit codes.

One module per command (scan, patch, diff, merge, timeline); options are declared once in
options.py; exit codes, output and progress live in common.py. The command modules
never import this one: commands are registered here.

Heavy modules (numpy, torch, onnx) are imported inside the commands, so `--help` and
`--version` start fast.
"""

from __future__ import annotations

import sys

import typer

from .. import __version__
from . import diff, merge, patch, prune, scan, timeline
from .common import EXIT_BUG, EXIT_GATE, EXIT_OK, EXIT_USER, Command, ErrorMappingGroup

__all__ = ["EXIT_BUG", "EXIT_GATE", "EXIT_OK", "EXIT_USER", "app", "main"]

app = typer.Typer(
    name="relu-doctor",
    cls=ErrorMappingGroup,
    help="How many of your ReLUs are dead, and where. Scans PyTorch and ONNX models on a sample batch.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"relu-doctor {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """How many of your ReLUs are dead, and where."""


# name -> module
COMMANDS = {"scan": scan, "patch": patch, "prune": prune, "diff": diff, "merge": merge, "timeline": timeline}
for name, module in COMMANDS.items():
    app.command(name, cls=Command, epilog=getattr(module, "EXAMPLES", None))(getattr(module, name))


def main() -> None:
    sys.exit(app())
