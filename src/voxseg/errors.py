"""User-facing errors: each message names the file and the problem, and says what to do."""

from __future__ import annotations


class VoxsegError(Exception):
    """An error caused by the user's input; the CLI prints its message without a traceback."""


class DatasetError(VoxsegError):
    """A raw dataset failed validation; ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        text = message if not self.problems else message + "\n" + "\n".join(self.problems)
        super().__init__(text)
