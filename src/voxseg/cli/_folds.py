"""``--folds 0 1 2 3 4``: Click options take one value, so further numbers arrive as extra
arguments; this merges them back."""

from __future__ import annotations

import typer

from voxseg.errors import VoxsegError


def collect_folds(first: str | None, ctx: typer.Context) -> list[str] | None:
    """The folds given after ``--folds`` (``all`` or integers), or None."""
    if first is None:
        if ctx.args:
            raise VoxsegError(f"unexpected arguments: {' '.join(ctx.args)}")
        return None
    values = [first, *ctx.args]
    for v in values:
        if v != "all" and not v.isdigit():
            raise VoxsegError(f"--folds takes fold numbers or 'all', got {v!r}")
    return values
