"""The ``voxseg`` Typer application and shared CLI helpers."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from voxseg.errors import VoxsegError
from voxseg.progress import last_step

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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` and lock release runs."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


#: How to continue a verb (module, function) after an interruption (default: the same
#: command again, which skips finished outputs).
RESUME_HINTS = {("voxseg.cli.train", "train"): "run the same command with --resume"}


def user_errors(func: F) -> F:
    """Print a :class:`VoxsegError` as a clear message and exit 1, instead of a traceback.

    Ctrl-C (exit 130) and SIGTERM (exit 143) stop the verb with a line saying how to resume;
    finished outputs are complete (atomic writes) and a rerun skips them.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return func(*args, **kwargs)
        except VoxsegError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt as exc:
            term = isinstance(exc, Terminated)
            key = (func.__module__, func.__name__)
            hint = RESUME_HINTS.get(key, "run the same command again")
            step = last_step()
            where = f" (last step: {step})" if step else ""
            err_console.print(
                f"[bold yellow]stopped[/] by {'SIGTERM' if term else 'Ctrl-C'}{where}: finished "
                f"outputs are kept and complete; {hint} to resume where it stopped",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(143 if term else 130)

    return wrapper  # type: ignore[return-value]


HomeOption = typer.Option(
    None, "--home", help="Workspace root (default: $VOXSEG_HOME, else ./voxseg_home)."
)
