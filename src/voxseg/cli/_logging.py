"""How the CLI shows the library's log records.

The library logs through ``logging.getLogger(__name__)`` under the ``voxseg`` logger and
never prints; the CLI attaches one handler to ``voxseg`` that writes the plain message
(INFO and DEBUG to standard output, warnings and errors to standard error with a
``warning:``/``error:`` prefix). ``-q`` shows warnings only, ``-v`` adds DEBUG records.
Under torchrun only rank 0 shows INFO: the other ranks run the same code and would repeat
every line.
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "voxseg"


class PlainHandler(logging.Handler):
    """Writes each record's message to the standard stream of the moment (found at each
    record, so that a progress bar or a test runner that replaces the stream gets it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
            stream.write(text + "\n")
            stream.flush()
        except Exception:  # logging's contract: a failing handler reports, never raises
            self.handleError(record)


class PlainFormatter(logging.Formatter):
    """The message as the user reads it: ``warning: ...`` for warnings, no time or name."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def process_rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 otherwise."""
    return int(os.environ.get("RANK", "0") or 0)


def log_level(verbosity: int, rank: int = 0) -> int:
    """-1 (``-q``): WARNING; 0: INFO; 1 (``-v``): DEBUG; WARNING on every rank but 0."""
    if rank != 0 or verbosity < 0:
        return logging.WARNING
    return logging.DEBUG if verbosity > 0 else logging.INFO


def setup_logging(verbosity: int = 0, rank: int | None = None) -> int:
    """Attach the plain handler to the ``voxseg`` logger (once) and set its level; returns
    the level."""
    level = log_level(verbosity, process_rank() if rank is None else rank)
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, PlainHandler)]:
        logger.removeHandler(handler)
    handler = PlainHandler()
    handler.setFormatter(PlainFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    return level


def verbose() -> bool:
    """Whether ``-v`` is on (errors then show their traceback)."""
    return logging.getLogger(ROOT).isEnabledFor(logging.DEBUG)
