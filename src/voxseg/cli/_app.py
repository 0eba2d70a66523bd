"""The ``voxseg`` Typer application and shared CLI helpers."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from voxseg._registry import TRUST_CODE_ENV
from voxseg.cli._logging import process_rank, setup_logging, verbose
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


def _version_callback(value: bool) -> None:
    if value:
        from voxseg import __version__

        console.print(f"voxseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version."
    ),
    trust_code: bool = typer.Option(
        False,
        "--trust-code",
        help="Let configs and model folders name code (module:attr, undeclared keyword "
        "arguments, any nnU-Net network class); only for folders you trust.",
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Also debug messages, and the traceback of an error."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
) -> None:
    """From a new medical imaging dataset to a trained segmentation model to inference."""
    if trust_code:
        os.environ[TRUST_CODE_ENV] = "1"  # read by every registry, also in worker processes
    level = setup_logging(1 if verbose else -1 if quiet else 0)
    console.quiet = level > logging.INFO  # the verbs' own result lines follow the same rule


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
            _report_error(exc)
            sys.exit(1)
        except KeyboardInterrupt as exc:
            if process_rank() != 0 or os.environ.get(ERROR_DIR_ENV):
                # said once: by the process that launched the ranks, else by rank 0
                sys.exit(143 if isinstance(exc, Terminated) else 130)
            term = isinstance(exc, Terminated)
            key = (func.__module__, func.__name__)
            hint = RESUME_HINTS.get(key, "run the same command again")
            step = last_step()
            where = f" (last step: {step})" if step else " (before its first step)"
            err_console.print(
                f"[bold yellow]stopped[/] by {'SIGTERM' if term else 'Ctrl-C'}{where}: finished "
                f"outputs are kept and complete; {hint} to resume where it stopped",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(143 if term else 130)

    return wrapper  # type: ignore[return-value]


#: Set by ``voxseg train --nproc-per-node`` for its torchrun processes: a process stopped
#: by a :class:`VoxsegError` writes its message to ``rank<N>.txt`` in this folder instead of
#: printing it, and the launching process reports it as one ``error:`` line.
ERROR_DIR_ENV = "VOXSEG_ERROR_DIR"

#: how torch's DataLoader re-raises an error of a worker process: the error's type with the
#: worker's whole traceback as its message
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def error_message(exc: BaseException) -> str:
    """An error's message for the user; for one raised in a DataLoader worker, the original
    message at the end of the worker's traceback."""
    text = str(exc)
    if _WORKER_TRACEBACK in text:
        name = f"{type(exc).__module__}.{type(exc).__qualname__}: "
        at = text.rfind(name)
        if at >= 0:
            return text[at + len(name) :].strip()
    return text


def _report_error(exc: VoxsegError) -> None:
    """One ``error: ...`` line (with ``-v``, the traceback first)."""
    message = error_message(exc)
    if verbose():
        traceback.print_exception(exc, file=sys.stderr)
    folder = os.environ.get(ERROR_DIR_ENV)
    if folder:
        Path(folder, f"rank{process_rank()}.txt").write_text(message)
        return
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


HomeOption = typer.Option(
    None, "--home", help="Workspace root (default: $VOXSEG_HOME, else ./voxseg_home)."
)
#: where a prediction runs (``voxseg predict``, ``auto``, ``pipeline predict/evaluate``)
DeviceOption = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps.")
