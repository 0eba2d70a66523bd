"""One progress helper for long work: a live bar on a terminal, plain lines in a log file.

On a terminal the bar shows the steps and an ETA, and each unit of work (an epoch, a case,
a stage) prints one line above it. When standard output is not a terminal (a cluster job,
``nohup``, ``| tee``) there is no bar: the same lines are printed and flushed as they
happen, so a log file shows progress while the job runs.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_last: list[str] = []


def last_step() -> str | None:
    """The last unit of work a reporter announced (an interrupted verb says where it was)."""
    return _last[0] if _last else None


def note_step(text: str) -> None:
    """Record the unit of work now under way (read back by :func:`last_step`)."""
    _last[:] = [text]


class ProgressReporter:
    """``with ProgressReporter("training", total) as p: p.advance(); p.line("epoch 1 ...")``.

    ``enabled=False`` prints nothing (other ranks under DDP, library callers that asked for
    quiet); ``stream`` is standard output unless given.
    """

    def __init__(
        self,
        description: str,
        total: float | None = None,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.enabled = enabled
        self.stream = stream
        self.console = Console(file=stream) if stream is not None else Console()
        self.live = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._task: Any = None
        self._description = description
        self._total = total

    def __enter__(self) -> ProgressReporter:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self._description, total=self._total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)  # type: ignore[arg-type]
            self._progress = None

    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def set_total(self, total: float, completed: float | None = None) -> None:
        self._total = total
        if self._progress is not None:
            self._progress.update(self._task, total=total, completed=completed)

    def describe(self, text: str) -> None:
        note_step(text)
        if self._progress is not None:
            self._progress.update(self._task, description=text)

    def item(self, text: str) -> None:
        """One unit done (a case, a file): the bar advances on a terminal; in a log file the
        unit gets its own plain line."""
        note_step(text)
        self.advance()
        if not self.live:
            self.line(text)

    def line(self, text: str) -> None:
        """One plain line: above the bar on a terminal, flushed at once in a log file."""
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False)
            return
        stream = self.stream or sys.stdout
        stream.write(text + "\n")
        stream.flush()
