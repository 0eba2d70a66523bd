"""Vessel tracing with a trained local model: the predictor the tracer calls (the model's
own prediction settings), and tracing a folder of scans from their seed files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from voxseg.errors import VoxsegError


def tracing_predictor(
    model: str | os.PathLike[str],
    *,
    folds: list[str] | None = None,
    checkpoint: str = "final",
    device: str = "auto",
    tta: bool | None = None,
    step: float | None = None,
):
    """A :class:`voxseg.inference.Predictor` for the local model of a trace: the model's
    own prediction settings (``config.prediction``, read by the predictor as ``voxseg
    predict`` reads them), ``tta``/``step`` overriding them when given."""
    from voxseg.inference import Predictor

    return Predictor(model, folds=folds, checkpoint=checkpoint, device=device, tta=tta, step=step)


def check_trace(result, allow_short: bool, where: str = "") -> None:
    """Raise a :class:`VoxsegError` listing the short-trace warnings of ``result`` unless
    ``allow_short``."""
    if result.warnings and not allow_short:
        prefix = f"{where}: " if where else ""
        raise VoxsegError(
            prefix
            + "; ".join(result.warnings)
            + " (see steps.json; --allow-short accepts the trace)"
        )


def seed_file(seeds: Path, case_id: str) -> tuple[Path, str | None]:
    """The seed file of ``case_id`` in ``seeds``: a folder with ``{case}.json``,
    ``{case}.mrk.json`` or ``{case}.vtp`` (the first found), or one SeqSeg file holding every
    case (then the case name picks the entry)."""
    if seeds.is_file():
        return seeds, case_id
    for name in (f"{case_id}.json", f"{case_id}.mrk.json", f"{case_id}.vtp"):
        if (seeds / name).is_file():
            return seeds / name, None
    raise VoxsegError(
        f"{seeds}: no seed file for case {case_id!r} ({case_id}.json, {case_id}.mrk.json or "
        f"{case_id}.vtp)"
    )


def trace_folder(
    model: str | os.PathLike[str],
    inputs: str | os.PathLike[str],
    seeds: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    tracing: dict[str, Any] | None = None,
    device: str = "auto",
    tta: bool | None = None,
    folds: list[str] | None = None,
    checkpoint: str = "final",
    label: int = 1,
    seed_radius: float | None = None,
    allow_short: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Trace every case of ``inputs`` (a file or a folder, as ``voxseg predict``) from its
    seed file in ``seeds`` with the local model ``model``; each case's outputs go to
    ``output_dir/{case}/`` (segmentation, probabilities, surface.vtp/.stl, centerline.vtp
    with radii, steps.json). Returns ``{"cases": {id: seconds}, "skipped": [...],
    "short": {id: warnings}}``; a short trace is an error unless ``allow_short``."""
    from voxseg.inference.files import discover_inputs
    from voxseg.vessels import PredictorSegmenter, TracingConfig, read_seeds, trace
    from voxseg.vessels.outputs import OUTPUT_FILES

    config = TracingConfig(**(tracing or {}))
    predictor = tracing_predictor(model, folds=folds, checkpoint=checkpoint, device=device, tta=tta)
    out = Path(output_dir)
    seeds = Path(seeds)
    report: dict[str, Any] = {"cases": {}, "skipped": [], "short": {}}
    short: list[str] = []
    for case in discover_inputs(inputs):
        folder = out / case.case_id
        if (folder / OUTPUT_FILES["steps"]).is_file() and not overwrite:
            report["skipped"].append(case.case_id)
            continue
        path, name = seed_file(seeds, case.case_id)
        case_seeds = read_seeds(path, case=name, radius=seed_radius)
        image = case.read()
        result = trace(image, case_seeds, PredictorSegmenter(predictor, label=label), config)
        result.write(folder, case.ending, image=image)
        report["cases"][case.case_id] = result.seconds
        if result.warnings:
            report["short"][case.case_id] = result.warnings
            short.append(case.case_id)
        if not quiet:
            print(
                f"{case.case_id}: {len(result.steps)} steps, {result.num_branches} branches, "
                f"{result.length:.0f} mm in {result.seconds:.1f} s"
            )
            for w in result.warnings:
                print(f"{case.case_id}: warning: {w}")
    if short and not allow_short:
        raise VoxsegError(
            f"short trace(s) in {', '.join(short)} (reasons above and in each steps.json); "
            "--allow-short accepts them"
        )
    return report
