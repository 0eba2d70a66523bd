"""The ``voxseg`` Typer application and shared CLI helpers."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from voxseg.errors import VoxsegError

app = typer.Typer(
    name="voxseg",
    help="From a new medical imaging dataset to a trained segmentation model to inference.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
#: width of tables and lines when the output is not a terminal (a log file, ``| tee``, CI):
#: rich's default of 80 columns would cut table cells ("spa…"); $COLUMNS still wins
LOG_WIDTH = 200


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or os.environ.get("COLUMNS"):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=LOG_WIDTH)


console = _console(stderr=False)
err_console = _console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Print a :class:`VoxsegError` as a clear message and exit 1, instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except VoxsegError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


HomeOption = typer.Option(
    None, "--home", help="Workspace root (default: $VOXSEG_HOME, else ./voxseg_home)."
)
