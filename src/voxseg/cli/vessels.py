"""``voxseg centerline``, ``voxseg vessels sample`` and ``voxseg trace``: the SeqSeg flow."""

from __future__ import annotations

from pathlib import Path

import typer

from voxseg.cli._app import app, console, user_errors
from voxseg.errors import VoxsegError

vessels_app = typer.Typer(
    help="Vessel datasets: centerline-guided patch sampling.", no_args_is_help=True
)
app.add_typer(vessels_app, name="vessels")


@app.command()
@user_errors
def centerline(
    mask: Path = typer.Argument(..., help="Vessel mask (any image format)."),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Centerline .vtp (a .json graph is written next to it)."
    ),
    label: list[int] | None = typer.Option(
        None, "--label", help="Vessel label(s); default: every non-zero voxel."
    ),
    root: str | None = typer.Option(
        None, "--root", help="Inlet point 'x,y,z' (LPS mm); default: the end of largest radius."
    ),
) -> None:
    """Extract the centerline of a vessel mask (TEASAR skeleton, radii in mm, VMTK arrays)."""
    from voxseg.io import read_image
    from voxseg.vessels import extract_centerline

    root_pt = None
    if root is not None:
        try:
            root_pt = [float(v) for v in root.split(",")]
            assert len(root_pt) == 3
        except (ValueError, AssertionError) as exc:
            raise VoxsegError(f"--root {root!r}: expected x,y,z in mm") from exc
    cl = extract_centerline(read_image(mask), label=label or None, root=root_pt)
    if not cl.branches:
        raise VoxsegError(f"{mask}: the mask is empty; no centerline")
    cl.write(output)
    console.print(
        f"{len(cl.branches)} branches, {len(cl.paths())} centerlines, {cl.length:.1f} mm "
        f"→ {output} (+ {output.with_suffix('.json').name})"
    )


@vessels_app.command("sample")
@user_errors
def sample(
    dataset: Path = typer.Argument(..., help="Raw dataset with labelsTr/ (and centerlines/)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder of the patch dataset."),
    num_processes: int = typer.Option(1, "--num-processes", "-np", help="Cases in parallel."),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Sampler setting, e.g. --set patches_per_point=5 (repeatable)."
    ),
) -> None:
    """Sample centerline-guided patches into a new raw dataset (SeqSeg's sampler)."""
    from voxseg.config import apply_overrides
    from voxseg.vessels import SamplerConfig, sample_dataset

    config = apply_overrides(SamplerConfig(), overrides)
    out = sample_dataset(dataset, output, config, num_processes=num_processes)
    console.print(f"patch dataset written to {out} (patch_stats.csv, splits.json)")


@app.command()
@user_errors
def trace(
    images: list[Path] = typer.Argument(..., help="Image file(s), one per channel."),
    seeds: Path = typer.Option(
        ...,
        "--seeds",
        help="Seed file: voxseg/SeqSeg JSON, a .vtp or JSON point list, or 3D Slicer .mrk.json.",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder."),
    model: Path | None = typer.Option(None, "-m", "--model", help="Local model folder."),
    folds: list[str] | None = typer.Option(None, "--folds", "-f", help="Folds to ensemble."),
    checkpoint: str = typer.Option(
        "final", "--checkpoint", help="final, best or last (a run stopped early has only last)."
    ),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, mps or auto."),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Mirror test-time augmentation (default: the model's)."
    ),
    step: float | None = typer.Option(
        None, "--step", help="Window step as a fraction of the patch (default: the model's)."
    ),
    case: str | None = typer.Option(
        None, "--case", help="The case to take from a SeqSeg seed file with several."
    ),
    seed_radius: float | None = typer.Option(
        None,
        "--seed-radius",
        help="Radius (mm) of seeds the file gives none for (default: estimated at the seed).",
    ),
    allow_short: bool = typer.Option(
        False, "--allow-short", help="Exit 0 even when the trace is short (see steps.json)."
    ),
    vessel_label: int = typer.Option(1, "--vessel-label", help="Class of the vessel."),
    oracle: Path | None = typer.Option(
        None, "--oracle", help="Reference mask used as the local segmenter (pipeline checks)."
    ),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Tracing setting, e.g. --set box_scale=6 (repeatable)."
    ),
) -> None:
    """Trace a vessel tree from seed points with a local model (SeqSeg).

    A trace shorter than the minimum (``min_steps``, ``min_length_radii``) or whose branches
    all stop for the same failure prints why per branch and exits 1 unless --allow-short."""
    from collections import Counter

    import numpy as np

    from voxseg.cli._app import err_console
    from voxseg.config import apply_overrides
    from voxseg.io import Image, file_ending, read_image, read_image_on_disk
    from voxseg.pipelines.vessels import check_trace, tracing_predictor
    from voxseg.progress import note_step
    from voxseg.vessels import OracleSegmenter, PredictorSegmenter, TracingConfig, read_seeds
    from voxseg.vessels import trace as run_trace
    from voxseg.vessels.tracing import TraceStep

    if (model is None) == (oracle is None):
        raise VoxsegError("give exactly one of --model (a trained local model) or --oracle")
    config = apply_overrides(TracingConfig(), overrides)
    seed_list = read_seeds(seeds, case=case, radius=seed_radius)
    if len(images) == 1:  # the tracer reads the boxes it visits: the voxels stay on disk
        output.mkdir(parents=True, exist_ok=True)
        image = read_image_on_disk(images[0], output)
    else:
        channels = [read_image(p) for p in images]
        first = channels[0]
        image = Image(
            np.stack([c.array for c in channels]).astype(np.float32),
            first.spacing,
            first.origin,
            first.direction,
        )
    if oracle is not None:
        segmenter = OracleSegmenter(read_image(oracle))
    else:
        predictor = tracing_predictor(
            model, folds=folds, checkpoint=checkpoint, device=device, tta=tta, step=step
        )
        segmenter = PredictorSegmenter(predictor, label=vessel_label)

    def noted(s: TraceStep) -> None:
        note_step(f"tracing: step {s.index + 1} (branch {s.branch})")

    result = run_trace(image, seed_list, segmenter, config, progress=noted)
    note_step(f"writing the trace into {output}")
    result.write(output, file_ending(images[0]) or ".nii.gz", image=image)
    console.print(
        f"{len(result.steps)} steps, {result.num_branches} branches, {result.length:.0f} mm "
        f"in {result.seconds:.1f} s → {output}"
    )
    ends = Counter(e["reason"] for e in result.branch_ends())
    console.print("branch ends: " + ", ".join(f"{n} × {why}" for why, n in ends.most_common()))
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    check_trace(result, allow_short)
