"""``voxseg postprocess determine|apply``: choose post-processing on cross-validation results and
apply it to label maps."""

from __future__ import annotations

from pathlib import Path

import typer

from voxseg.cli._app import app, console, user_errors
from voxseg.cli.evaluate import parse_labels
from voxseg.errors import VoxsegError

postprocess_app = typer.Typer(
    help="Choose post-processing on cross-validation predictions, or apply it.",
    no_args_is_help=True,
)
app.add_typer(postprocess_app, name="postprocess")


@postprocess_app.command("determine")
@user_errors
def determine(
    pred: Path = typer.Option(..., "--pred", help="Folder of cross-validation predictions."),
    ref: Path = typer.Option(..., "--ref", help="Folder of their reference label maps."),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Model folder: postprocessing.json is written there."
    ),
    labels: list[str] | None = typer.Option(None, "--labels", help="name=VALUE; repeat."),
    dataset: Path | None = typer.Option(None, "--dataset", help="dataset.json naming labels."),
    num_processes: int = typer.Option(1, "--num-processes", "-np", help="Cases in parallel."),
    min_gain: float | None = typer.Option(
        None,
        "--min-gain",
        min=0,
        help="Foreground mean Dice a step must add to be kept (default 0.005; 0: nnU-Net's "
        "rule, any gain).",
    ),
) -> None:
    """Keep the largest component (all foreground, then per label) where it helps Dice."""
    from voxseg.postprocess import determine_postprocessing
    from voxseg.postprocess.determine import MIN_GAIN

    steps = determine_postprocessing(
        pred,
        ref,
        labels=parse_labels(labels),
        output_dir=output,
        dataset=dataset,
        num_processes=num_processes,
        min_gain=MIN_GAIN if min_gain is None else min_gain,
    )
    if steps:
        for step in steps:
            console.print(f"kept: {step}")
    else:
        console.print("no post-processing step improves Dice enough: none kept")
    console.print(f"{output / 'postprocessing.json'} written (details: postprocessing_report.json)")


@postprocess_app.command("apply")
@user_errors
def apply(
    inputs: Path = typer.Argument(..., help="A label map or a folder of them."),
    output: Path = typer.Argument(..., help="Output file (for a file) or folder."),
    config: Path = typer.Option(..., "--config", help="postprocessing.json"),
) -> None:
    """Apply the steps of a postprocessing.json to label maps, keeping their geometry."""
    from voxseg.evaluation.evaluate import LABEL_ENDINGS
    from voxseg.io import file_ending, read_image, write_image
    from voxseg.postprocess import apply_postprocessing, load_postprocessing

    steps = load_postprocessing(config)
    if inputs.is_file():
        pairs = [(inputs, output)]
    elif inputs.is_dir():
        files = [p for p in sorted(inputs.iterdir()) if file_ending(p) in LABEL_ENDINGS]
        pairs = [(p, output / p.name) for p in files if not p.name.startswith(".")]
    else:
        raise VoxsegError(f"{inputs}: not found")
    for src, dst in pairs:
        image = read_image(src)
        write_image(image.with_array(apply_postprocessing(image.array, image.spacing, steps)), dst)
    console.print(f"post-processed {len(pairs)} label map(s) → {output}")
