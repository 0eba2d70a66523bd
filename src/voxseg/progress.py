"""One progress helper for long work: a live bar on a terminal, plain lines in a log file.

Progress is reported through the :mod:`logging` logger of the module doing the work, so
whoever configures logging decides what is shown (the CLI: ``-q``/``-v``; a library
caller: nothing unless it enables the ``voxseg`` logger at INFO). When that logger shows
INFO and standard output is a terminal, a bar shows the steps and an ETA and each unit of
work (an epoch, a case, a stage) is logged as one line above it. When standard output is
not a terminal (a cluster job, ``nohup``, ``| tee``) there is no bar: the same lines are
logged as they happen, so a log file shows progress while the job runs.
"""

from __future__ import annotations

import logging
from typing import Any

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
    """``with ProgressReporter("training", total, log) as p: p.advance(); p.line("epoch 1")``.

    ``logger`` is the calling module's logger: lines are its INFO records, and nothing is
    shown (no bar either) when it does not show INFO (``-q``, ranks other than 0 under DDP,
    a library caller that did not enable logging). ``transient``: a short step whose bar
    disappears when done and whose items are DEBUG lines (``-v``) in a log file.
    """

    def __init__(
        self,
        description: str,
        total: float | None = None,
        logger: logging.Logger | None = None,
        *,
        transient: bool = False,
    ) -> None:
        self.logger = logger or logging.getLogger("voxseg")
        self.transient = transient
        self.enabled = self.logger.isEnabledFor(logging.INFO)
        self.console = Console()
        self.live = self.enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._task: Any = None
        self._description = description
        self._total = total

    def __enter__(self) -> ProgressReporter:
        if self.live:
            # the bar redirects standard output and error: log lines print above it
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=self.transient,
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
        if self.transient:
            self.logger.debug(text)
        elif not self.live:
            self.line(text)

    def line(self, text: str) -> None:
        """One INFO line: above the bar on a terminal, as it happens in a log file."""
        self.logger.info(text)
