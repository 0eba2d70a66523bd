"""``--series-uid`` / ``--series``: which image series of a DICOM folder holding several to
predict (one definition for ``voxseg predict`` and ``voxseg pipeline predict``)."""

from __future__ import annotations

import typer

SeriesUidOption = typer.Option(
    None,
    "--series-uid",
    help="Predict this DICOM series (SeriesInstanceUID; repeatable). Needed when a DICOM "
    "folder holds several image series (the error lists them).",
)
SeriesOption = typer.Option(
    None,
    "--series",
    help="Choose DICOM series by desc:PATTERN, number:N, modality:CT, seq:PATTERN or "
    "uid:UID (repeatable), or 'all' to predict every series of a folder.",
)


def series_selectors(series_uid: list[str] | None, series: list[str] | None) -> list[str]:
    """Both options as the selectors of :func:`voxseg.inference.files.discover_inputs`."""
    return [f"uid:{u}" for u in series_uid or []] + list(series or [])
