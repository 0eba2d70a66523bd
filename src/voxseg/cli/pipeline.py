"""``voxseg pipeline init|train|predict|evaluate|finetune``: multi-stage pipelines."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from voxseg.cli._app import DeviceOption, HomeOption, app, console, user_errors
from voxseg.cli._series import SeriesOption, SeriesUidOption, series_selectors

pipeline_app = typer.Typer(
    help="Multi-stage pipelines: cascades, localise → crop → segment (cord lesions, spine), "
    "vessel tracing from seeds.",
    no_args_is_help=True,
)
app.add_typer(pipeline_app, name="pipeline")

#: ``pipeline predict`` and ``pipeline evaluate``: override every stage's own TTA setting
StageTtaOption = typer.Option(
    None, "--tta/--no-tta", help="Mirror test-time augmentation (default: each stage's)."
)


def _dataset(dataset: str, home: str | None) -> Path:
    from voxseg.workspace import Workspace

    return Workspace.from_env(home).dataset_dir(dataset)


def _ints(text: str | None, what: str) -> list[int] | None:
    from voxseg.cli.plan import parse_ints

    return parse_ints(text, what)


@pipeline_app.command("init")
@user_errors
def init(
    recipe: str = typer.Argument(..., help="cord-lesion, spine, cascade or vessels."),
    dataset: str = typer.Argument(..., help="Dataset folder, or its name in $VOXSEG_HOME/raw."),
    out: Path = typer.Argument(..., help="Pipeline folder to create."),
    spacing: float = typer.Option(0.5, help="cord-lesion: isotropic spacing of the crop (mm)."),
    window: int = typer.Option(48, help="cord-lesion: in-plane window (voxels) along the cord."),
    cord_spacing: float = typer.Option(
        1.0,
        help="cord-lesion: the cord stage's grid is at least this coarse (mm); 0: the plan's.",
    ),
    heatmap_shape: str | None = typer.Option(
        None,
        help="spine: heatmap input shape ZxYxX (default 128x64x64 on a GPU, 64x32x32 on a CPU).",
    ),
    margin_mm: float = typer.Option(10.0, help="spine: margin around the located box (mm)."),
    num_folds: int = typer.Option(5, "--folds", help="cascade: folds of the lower stage."),
    patch_percentile: float = typer.Option(
        90.0,
        help="vessels: the local model's patch holds this percentile of the sampled box sides.",
    ),
    patch_size: str | None = typer.Option(None, help="Patch size ZxYxX of the last stage."),
    device: str | None = typer.Option(None, help="Plan for cuda or cpu (default: detected)."),
    settings: list[str] = typer.Option([], "--set", help="Model setting for every stage."),
    force: bool = typer.Option(False, "--force", help="Replace an existing pipeline.json."),
    home: str | None = HomeOption,
) -> None:
    """Write a recipe's pipeline.json for DATASET into OUT."""
    from voxseg.pipelines import init_pipeline

    options: dict = {
        "device": device,
        "patch_size": _ints(patch_size, "--patch-size"),
        "settings": settings,
    }
    if recipe == "cord-lesion":
        options.update(spacing=spacing, window=window, cord_spacing=cord_spacing or None)
    elif recipe == "spine":
        options.update(heatmap_shape=_ints(heatmap_shape, "--heatmap-shape"), margin_mm=margin_mm)
    elif recipe == "cascade":
        options.update(num_folds=num_folds)
    elif recipe == "vessels":
        options.update(patch_percentile=patch_percentile)
    spec = init_pipeline(recipe, _dataset(dataset, home), out, force=force, **options)
    for s in spec.stages:
        console.print(f"stage [bold]{s.name}[/]: {s.input.kind} → {', '.join(s.labels)}")
    console.print(f"pipeline written to {out / 'pipeline.json'}")


@pipeline_app.command("train")
@user_errors
def train(
    pipeline: Path = typer.Argument(..., help="Pipeline folder (with pipeline.json)."),
    dataset: str = typer.Argument(..., help="Training dataset folder or name."),
    stages: list[str] = typer.Option([], "--stage", help="Train only these stages."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda, cuda:1, mps."),
    force: bool = typer.Option(False, "--force", help="Retrain folds that are already trained."),
    home: str | None = HomeOption,
) -> None:
    """Train every stage (derive its data, plan, preprocess, train, install)."""
    from voxseg.pipelines import train_pipeline

    folders = train_pipeline(
        pipeline, _dataset(dataset, home), stages=stages or None, device=device, force=force
    )
    for f in folders:
        console.print(f"stage installed in {f}")


@pipeline_app.command("predict")
@user_errors
def predict(
    pipeline: Path = typer.Argument(..., help="Pipeline folder."),
    inputs: Path = typer.Argument(..., help="An image, or a folder of images."),
    output: Path = typer.Argument(..., help="Output folder."),
    device: str = DeviceOption,
    tta: bool | None = StageTtaOption,
    save_stages: bool = typer.Option(False, "--save-stages", help="Also write stage outputs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo finished cases."),
    seeds: Path | None = typer.Option(
        None,
        "--seeds",
        help="vessels: folder of {case}.json/.mrk.json/.vtp seed files, or one SeqSeg seed file "
        "(default: seeds/ beside INPUTS).",
    ),
    allow_short: bool = typer.Option(
        False, "--allow-short", help="vessels: exit 0 even when a trace is short."
    ),
    series_uid: list[str] | None = SeriesUidOption,
    series: list[str] | None = SeriesOption,
) -> None:
    """Run the pipeline on new scans; every output lies on its input's grid. A vessels
    pipeline traces each scan from its seeds (OUTPUT/{case}/: surface, centerline, steps)."""
    from voxseg.pipelines import predict_pipeline_folder

    report = predict_pipeline_folder(
        pipeline,
        inputs,
        output,
        device=device,
        tta=tta,
        save_stages=save_stages,
        overwrite=overwrite,
        seeds=seeds,
        allow_short=allow_short,
        series=series_selectors(series_uid, series),
    )
    n = len(report["cases"])
    mean = sum(report["cases"].values()) / n if n else math.nan
    console.print(
        f"{n} case(s) predicted ({mean:.2f} s each), {len(report['skipped'])} skipped "
        f"(already done), {len(report['messages'])} with an empty stage; written to {output}"
    )
    if report.get("warnings"):
        console.print(f"{len(report['warnings'])} short trace(s) accepted (--allow-short)")


@pipeline_app.command("evaluate")
@user_errors
def evaluate(
    pipeline: Path = typer.Argument(..., help="Pipeline folder."),
    dataset: str = typer.Argument(..., help="Dataset with labelled held-out cases."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Default: PIPELINE/eval."),
    split: str = typer.Option("Ts", help="Ts (imagesTs/labelsTs) or Tr."),
    device: str = DeviceOption,
    tta: bool | None = StageTtaOption,
    home: str | None = HomeOption,
) -> None:
    """Predict held-out cases end to end; Dice per label, lesion-wise detection, time."""
    from voxseg.pipelines import evaluate_pipeline

    out = output or pipeline / f"eval_{split}"
    report = evaluate_pipeline(
        pipeline, _dataset(dataset, home), out, split=split, device=device, tta=tta
    )
    _print_report(report)
    console.print(f"written to {out / 'pipeline_summary.json'}")


def _print_report(report: dict, title: str = "") -> None:
    from rich.table import Table

    table = Table(title=title or f"{report['num_cases']} case(s)")
    table.add_column("label")
    table.add_column("Dice", justify="right")
    table.add_column("lesion sensitivity", justify="right")
    table.add_column("lesion precision", justify="right")
    for name, dice in report["dice"].items():
        lesion = report["lesions"].get(name, {})
        table.add_row(
            name,
            _fmt(dice),
            _fmt(lesion.get("sensitivity")),
            _fmt(lesion.get("precision")),
        )
    console.print(table)
    console.print(f"{report['seconds_per_case']:.2f} s per case")


def _fmt(value) -> str:
    return "–" if value is None or value != value else f"{value:.3f}"


@pipeline_app.command("finetune")
@user_errors
def finetune(
    pipeline: Path = typer.Argument(..., help="Trained pipeline folder."),
    new_dataset: str = typer.Argument(..., help="The new data (folder or name)."),
    stage: str = typer.Option(..., "--stage", help="The stage to fine-tune (e.g. lesion)."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="New pipeline folder (default: PIPELINE-finetuned-STAGE)."
    ),
    settings: list[str] = typer.Option([], "--set", help="Fine-tuning settings (epochs, lr)."),
    holdout: float = typer.Option(
        0.25, help="Share of training cases held out when the data has no labelsTs."
    ),
    device: str | None = typer.Option(None, help="auto, cpu, cuda, cuda:1, mps."),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="TTA in the before/after evaluation (default: each stage's)."
    ),
    home: str | None = HomeOption,
) -> None:
    """Fine-tune one stage from its weights on new data; report before/after metrics."""
    from voxseg.pipelines import finetune_pipeline

    out = output or pipeline.parent / f"{pipeline.name}-finetuned-{stage}"
    report = finetune_pipeline(
        pipeline,
        _dataset(new_dataset, home),
        stage,
        out,
        settings=settings,
        holdout=holdout,
        device=device,
        tta=tta,
    )
    for when in ("before", "after"):
        r = report[when]
        _print_report({"num_cases": 0, **r, "lesions": r["lesions"]}, title=f"{when} fine-tuning")
    console.print(f"fine-tuned pipeline in {out}; report in {out / 'finetune_report.json'}")
