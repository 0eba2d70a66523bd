"""The ``voxseg`` command: one verb per step of the flow."""

from __future__ import annotations

from voxseg.cli import (  # noqa: F401  (registers the verbs)
    auto,
    dataset,
    demo,
    doctor,
    ensemble,
    evaluate,
    pipeline,
    plan,
    postprocess,
    predict,
    preprocess,
    report,
    synth,
    train,
    vessels,
)
from voxseg.cli._app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
