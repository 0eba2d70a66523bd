"""Vessel tracing with a trained local model: the predictor the tracer calls (the model's
own prediction settings), and tracing a folder of scans from their seed files."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from voxseg.errors import VoxsegError

log = logging.getLogger(__name__)


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


def local_model_options(fingerprint, info, options, root: Path, percentile: float | None = None):
    """Planner options for a centerline patch dataset ``root``: the patch of
    :func:`voxseg.vessels.sampling.local_patch_size` at the spacing the planner picks (a
    first plan gives the spacing). Other datasets, and options with a patch, are returned
    as they are. Returns ``(options, note)``; ``note`` says what was chosen."""
    from voxseg.planning import plan_dataset
    from voxseg.vessels.sampling import LOCAL_PATCH_PERCENTILE, is_patch_dataset, local_patch_size

    if options.patch_size is not None or not is_patch_dataset(root):
        return options, None
    pct = LOCAL_PATCH_PERCENTILE if percentile is None else percentile
    spacing = plan_dataset(fingerprint, info, options).configurations["3d_fullres"].spacing
    patch = local_patch_size(root, spacing, pct)
    note = (
        f"centerline patch dataset: the local model's patch {'x'.join(map(str, patch))} holds "
        f"the {pct:g}th percentile of the sampled box sides at {tuple(spacing)} mm"
    )
    return options.model_copy(update={"patch_size": patch}), note


def build_patch_dataset(stage, dataset, folder: Path, *, cases: list[str] | None = None):
    """The training data of a tracing stage: the centerline-guided patch dataset of
    ``dataset``'s training cases (:func:`voxseg.vessels.sample_dataset`, the stage's
    ``sampler`` settings, its vessel label) in ``folder``; finished patches are kept."""
    from voxseg.data import Dataset
    from voxseg.vessels import SamplerConfig, sample_dataset

    if cases is not None:
        raise VoxsegError(
            f"stage {stage.name!r}: a tracing stage trains on all training cases' patches; "
            "fine-tuning it on a subset is not supported"
        )
    values = sorted({v for vs in stage.labels.values() for v in vs})
    settings = {"label": values[0] if len(values) == 1 else None, **stage.input.sampler}
    try:
        config = SamplerConfig(**settings)
    except ValueError as exc:
        raise VoxsegError(f"stage {stage.name!r}: invalid sampler settings:\n{exc}") from exc
    sample_dataset(dataset.root, folder, config)
    return Dataset(folder)


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
    segmenter_for: Callable[[str], Any],
    inputs: str | os.PathLike[str],
    seeds: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    tracing: dict[str, Any] | None = None,
    output_value: int = 1,
    seed_radius: float | None = None,
    allow_short: bool = False,
    overwrite: bool = False,
    series: Sequence[str] = (),
) -> dict[str, Any]:
    """Trace every case of ``inputs`` (a file or a folder, as ``voxseg predict``; ``series``
    chooses among the series of a DICOM folder, as there) from its
    seed file in ``seeds`` (see :func:`seed_file`) with the local segmenter
    ``segmenter_for(case_id)``. Each case gets its label map ``output_dir/{case}{ending}``
    (value ``output_value``) and the folder ``output_dir/{case}/`` (segmentation,
    probabilities, surface.vtp and .stl, centerline.vtp with radii, steps.json,
    overview.png). Returns ``{"cases": {id: seconds}, "skipped": [...], "messages": [],
    "warnings": [...]}`` (the short-trace warnings, also printed);
    a short trace is an error unless ``allow_short`` (after every case is written)."""
    from voxseg.inference.files import discover_inputs
    from voxseg.vessels import TracingConfig, read_seeds, trace
    from voxseg.vessels.outputs import OUTPUT_FILES

    try:
        config = TracingConfig(**(tracing or {}))
    except ValueError as exc:
        raise VoxsegError(f"invalid tracing settings {tracing}:\n{exc}") from exc
    out = Path(output_dir)
    seeds = Path(seeds)
    report: dict[str, Any] = {"cases": {}, "skipped": [], "messages": [], "warnings": []}
    short: list[str] = []
    for case in discover_inputs(inputs, series):
        folder = out / case.case_id
        target = out / f"{case.case_id}{case.ending}"
        if target.is_file() and (folder / OUTPUT_FILES["steps"]).is_file() and not overwrite:
            report["skipped"].append(case.case_id)
            continue
        path, name = seed_file(seeds, case.case_id)
        case_seeds = read_seeds(path, case=name, radius=seed_radius)
        out.mkdir(parents=True, exist_ok=True)
        image = case.read(on_disk=out)  # a tracer reads the boxes it visits, not the image
        result = trace(image, case_seeds, segmenter_for(case.case_id), config)
        result.write(folder, case.ending, image=image)
        result.write_labels(target, output_value)
        report["cases"][case.case_id] = result.seconds
        if result.warnings:
            report["warnings"] += [f"{case.case_id}: {w}" for w in result.warnings]
            short.append(case.case_id)
        log.info(
            f"{case.case_id}: {len(result.steps)} steps, {result.num_branches} branches, "
            f"{result.length:.0f} mm in {result.seconds:.1f} s"
        )
        for w in result.warnings:
            log.warning(f"{case.case_id}: {w}")
    if short and not allow_short:
        raise VoxsegError(
            f"short trace(s) in {', '.join(short)} (reasons above and in each steps.json); "
            "--allow-short accepts them"
        )
    return report


def trace_pipeline_folder(
    pipeline_dir: str | os.PathLike[str],
    inputs: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    seeds: str | os.PathLike[str] | None = None,
    device: str = "auto",
    tta: bool | None = None,
    allow_short: bool = False,
    overwrite: bool = False,
    series: Sequence[str] = (),
) -> dict[str, Any]:
    """``voxseg pipeline predict`` of a vessels pipeline: trace every case of ``inputs``
    from its seeds (``seeds``: a folder or one SeqSeg file; default: ``seeds/`` beside the
    ``inputs`` folder, as in a raw dataset) with the pipeline's local model."""
    from voxseg.pipelines.spec import CenterlinePatchesInput, read_spec, stage_dir

    spec = read_spec(pipeline_dir)
    (stage,) = [s for s in spec.stages if isinstance(s.input, CenterlinePatchesInput)]
    if seeds is None:
        seeds = Path(inputs).absolute().parent / "seeds"
        if not seeds.is_dir():
            raise VoxsegError(
                f"{seeds}: no seeds folder beside {inputs}; give the seed files with --seeds"
            )
    folder = stage_dir(pipeline_dir, stage.name)
    if not (folder / "config.json").is_file():
        raise VoxsegError(
            f"{folder}: stage {stage.name!r} is not trained; run "
            f"'voxseg pipeline train {pipeline_dir} DATASET'"
        )
    from voxseg.vessels import PredictorSegmenter

    predictor = tracing_predictor(
        folder, folds=None if stage.folds == ["all"] else stage.folds, device=device, tta=tta
    )
    segmenter = PredictorSegmenter(predictor, label=1)
    return trace_folder(
        lambda case_id: segmenter,
        inputs,
        seeds,
        output_dir,
        tracing=stage.input.tracing,
        output_value=spec.labels["vessel"],
        allow_short=allow_short,
        overwrite=overwrite,
        series=series,
    )
