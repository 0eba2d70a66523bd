"""Verbs of the flow whose capability has not landed yet: each says what it waits for.

When a capability lands, its verb moves to its own module and leaves this file.
"""

from __future__ import annotations

import typer

from voxseg.cli._app import app, user_errors
from voxseg.errors import NotBuiltYet

PENDING = {
}


def _make(verb: str, waits_for: str) -> None:
    @app.command(
        verb,
        help=f"(not built yet: waits for {waits_for})",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    @user_errors
    def _pending(ctx: typer.Context) -> None:
        raise NotBuiltYet(f"'voxseg {verb}' is not built yet: it waits for {waits_for}.")


for _verb, _waits in PENDING.items():
    _make(_verb, _waits)
