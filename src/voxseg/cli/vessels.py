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
    out = sample_dataset(dataset, output, config, num_processes=num_processes, progress=True)
    console.print(f"patch dataset written to {out} (patch_stats.csv, splits.json)")


@app.command()
@user_errors
def trace(
    images: list[Path] = typer.Argument(..., help="Image file(s), one per channel."),
    seeds: Path = typer.Option(..., "--seeds", help="seeds.json: [[[x,y,z],[dx,dy,dz],r],...]"),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder."),
    model: Path | None = typer.Option(None, "-m", "--model", help="Local model folder."),
    folds: list[str] | None = typer.Option(None, "--folds", "-f", help="Folds to ensemble."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, mps or auto."),
    tta: bool = typer.Option(False, "--tta/--no-tta", help="Mirror test-time augmentation."),
    vessel_label: int = typer.Option(1, "--vessel-label", help="Class of the vessel."),
    oracle: Path | None = typer.Option(
        None, "--oracle", help="Reference mask used as the local segmenter (pipeline checks)."
    ),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Tracing setting, e.g. --set box_scale=6 (repeatable)."
    ),
) -> None:
    """Trace a vessel tree from seed points with a local model (SeqSeg)."""
    import numpy as np

    from voxseg.config import apply_overrides
    from voxseg.io import Image, read_image
    from voxseg.vessels import (
        OracleSegmenter,
        PredictorSegmenter,
        TracingConfig,
        read_seeds,
    )
    from voxseg.vessels import trace as run_trace

    if (model is None) == (oracle is None):
        raise VoxsegError("give exactly one of --model (a trained local model) or --oracle")
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
        from voxseg.inference import Predictor

        segmenter = PredictorSegmenter(
            Predictor(model, folds=folds, device=device, tta=tta), label=vessel_label
        )
    config = apply_overrides(TracingConfig(), overrides)
    result = run_trace(image, read_seeds(seeds), segmenter, config)
    ending = (
        "".join(images[0].suffixes[-2:])
        if images[0].name.endswith(".nii.gz")
        else (images[0].suffix)
    )
    result.write(output, ending, image=image)
    console.print(
        f"{len(result.steps)} steps, {result.num_branches} branches in {result.seconds:.1f} s "
        f"→ {output}"
    )
