"""The ``voxseg`` command: one verb per step of the flow."""

from __future__ import annotations

from voxseg.cli import doctor, pending  # noqa: F401  (registers the verbs)
from voxseg.cli._app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
