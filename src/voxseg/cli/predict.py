"""``voxseg predict``: segment new scans with a trained model folder."""

from __future__ import annotations

from pathlib import Path

import typer

from voxseg.cli._app import DeviceOption, app, console, err_console, user_errors
from voxseg.cli._folds import collect_folds
from voxseg.cli._series import SeriesOption, SeriesUidOption, series_selectors
from voxseg.errors import VoxsegError


def _is_pipeline(model: Path) -> bool:
    from voxseg.modelfolder import find_loader

    return model.is_dir() and find_loader(model).name == "pipeline"


def _summary(output: Path, done: int, skipped: int, failed: int | None = None) -> str:
    """The closing line of ``voxseg predict`` (a pipeline stops at its first failed case)."""
    failures = "" if failed is None else f", failed {failed}"
    return f"predicted {done}, skipped {skipped} (already done){failures} → {output}"


@app.command(context_settings={"allow_extra_args": True})
@user_errors
def predict(
    ctx: typer.Context,
    inputs: Path = typer.Option(..., "-i", "--input", help="A file, a folder or a DICOM folder."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder."),
    model: Path = typer.Option(..., "-m", "--model", help="Model folder (or one fold_k in it)."),
    folds: str | None = typer.Option(
        None, "--folds", help="Folds to ensemble: --folds 0 1 2 3 4 (default: every trained fold)."
    ),
    checkpoint: str = typer.Option("final", help="final, best or last."),
    device: str = DeviceOption,
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Flip test-time augmentation (default: the model's setting)."
    ),
    step: float | None = typer.Option(
        None, help="Window step as a fraction of the patch (default: the model's setting)."
    ),
    batch_windows: int | None = typer.Option(
        None, help="Windows per forward pass (default: 4 on a GPU, torch's threads ≤ 4 on a CPU)."
    ),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write per-class probabilities (.npz)."
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="Output format: nii.gz, mha, nrrd, png (default: as the input)."
    ),
    num_parts: int = typer.Option(1, help="Split the cases into this many parts …"),
    part_id: int = typer.Option(0, help="… and predict this one (0-based)."),
    overwrite: bool = typer.Option(False, help="Predict cases whose output exists again."),
    overlays: bool = typer.Option(False, "--overlays", help="Write an overlay PNG per case."),
    qc: bool = typer.Option(
        False,
        "--qc",
        help="Quality control without a reference: qc.csv (volumes, components, border "
        "contact, volumes outside the training range, the folds' and flips' agreement) and "
        "the HTML report OUTPUT/report/index.html.",
    ),
    output_type: list[str] | None = typer.Option(
        None,
        "--output-type",
        help="Also write DICOM on the source series (DICOM input only): dicom-seg "
        "(CASE_SEG.dcm), rtstruct (CASE_RTSTRUCT.dcm); --output-type rtstruct dicom-seg.",
    ),
    seg_fractional: bool = typer.Option(
        False, "--seg-fractional", help="Write the DICOM-SEG as class probabilities."
    ),
    series_uid: list[str] | None = SeriesUidOption,
    series: list[str] | None = SeriesOption,
    postprocess: bool = typer.Option(True, "--postprocess/--no-postprocess"),
    amp: str = typer.Option(
        "auto",
        help="Network precision: auto (bf16 on CUDA and on CPUs with AMX, else float32), "
        "bf16, fp16 or off (float32).",
    ),
) -> None:
    """Predict every case in INPUT and write label maps in the input geometry to OUTPUT."""
    from voxseg.inference import Predictor, predict_folder
    from voxseg.inference.files import DICOM_OUTPUT_TYPES

    output_types = list(output_type or [])
    output_types += [a for a in ctx.args if a.lower() in DICOM_OUTPUT_TYPES]
    ctx.args = [a for a in ctx.args if a.lower() not in DICOM_OUTPUT_TYPES]
    fold_list = collect_folds(folds, ctx)
    selectors = series_selectors(series_uid, series)
    if _is_pipeline(model):
        # e.g. voxseg auto's model with its small-structure stage: run it as a pipeline
        single_model_only = {
            "--folds": fold_list,
            "--checkpoint": checkpoint != "final",
            "--step": step is not None,
            "--batch-windows": batch_windows is not None,
            "--save-probabilities": save_probabilities,
            "--format": fmt is not None,
            "--num-parts": num_parts != 1,
            "--overlays": overlays,
            "--qc": qc,
            "--output-type": output_types,
            "--no-postprocess": not postprocess,
            "--amp": amp != "auto",
        }
        used = [flag for flag, given in single_model_only.items() if given]
        if used:
            raise VoxsegError(
                f"{model}: a pipeline folder (several stages); {', '.join(used)} apply to one "
                "model only (voxseg pipeline predict --help lists what a pipeline takes)"
            )
        from voxseg.pipelines import predict_pipeline_folder

        console.print(f"{model} is a pipeline: predicting with all its stages")
        done = predict_pipeline_folder(
            model,
            inputs,
            output,
            device=device,
            tta=tta,
            overwrite=overwrite,
            series=selectors,
        )
        console.print(_summary(output, len(done["cases"]), len(done["skipped"])))
        return
    predictor = Predictor(
        model,
        folds=fold_list,
        device=device,
        tta=tta,
        step=step,
        batch_windows=batch_windows,
        checkpoint=checkpoint,
        postprocess=postprocess,
        amp=amp,
    )
    report = predict_folder(
        predictor,
        inputs,
        output,
        save_probabilities=save_probabilities,
        fmt=fmt,
        num_parts=num_parts,
        part_id=part_id,
        overwrite=overwrite,
        overlays=overlays,
        output_types=output_types,
        seg_fractional=seg_fractional,
        qc=qc,
        series=selectors,
    )
    console.print(_summary(output, len(report.done), len(report.skipped), len(report.failed)))
    if qc:
        from voxseg.evaluation.qc import QC_CSV
        from voxseg.modelfolder import REPORT
        from voxseg.report import write_report

        index = write_report(output, output / REPORT, log=console.print)
        console.print(f"quality control: {output / QC_CSV}, {index}")
    if report.failed:
        for case, why in report.failed.items():
            err_console.print(f"[red]{case}[/]: {why}", highlight=False, soft_wrap=True)
        raise VoxsegError(f"{len(report.failed)} case(s) failed: {', '.join(report.failed)}")
