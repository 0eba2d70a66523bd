"""``voxseg evaluate``: metrics of predicted label maps against references."""

from __future__ import annotations

from pathlib import Path

import typer

from voxseg.cli._app import app, console, err_console, user_errors
from voxseg.errors import VoxsegError


def parse_labels(items: list[str] | None) -> dict[str, int | list[int]] | None:
    """``["liver=1", "tumour=2", "organ=1,2"]`` → ``{"liver": 1, "tumour": 2, "organ": [1, 2]}``."""
    if not items:
        return None
    out: dict[str, int | list[int]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            values = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            values = []
        if not sep or not name.strip() or not values:
            raise VoxsegError(f"--labels {item!r}: expected name=VALUE or name=V1,V2 (a region)")
        out[name.strip()] = values[0] if len(values) == 1 else values
    return out


@app.command()
@user_errors
def evaluate(
    pred: Path = typer.Argument(..., help="Folder (or file) of predicted label maps."),
    ref: Path = typer.Argument(..., help="Folder (or file) of reference label maps."),
    labels: list[str] | None = typer.Option(
        None, "--labels", help="name=VALUE, or name=V1,V2 for a region; repeat per label."
    ),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="dataset.json (or its folder) naming the labels."
    ),
    nsd_tolerance_mm: float = typer.Option(
        1.0, "--nsd-tolerance-mm", help="Tolerance of the normalised surface Dice, mm."
    ),
    ignore_label: int | None = typer.Option(
        None, "--ignore-label", help="Reference value excluded from every metric."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Folder for summary.json and metrics.csv (default: PRED)."
    ),
    num_processes: int = typer.Option(1, "--num-processes", "-np", help="Cases in parallel."),
    centerlines: Path | None = typer.Option(
        None,
        "--centerlines",
        help="Folder of reference <case>.vtp: adds centerline overlap and distance (vessels).",
    ),
    report: bool = typer.Option(
        False,
        "--report",
        help="Also write an HTML report (tables, plots, a slice viewer per case) to OUTPUT/report.",
    ),
    continue_on_error: bool = typer.Option(
        False,
        "--continue-on-error",
        help="Evaluate the other cases when one fails; list the failed ones and exit 1.",
    ),
) -> None:
    """Dice, IoU, precision, recall, HD95, ASSD, NSD and volumes per case and label."""
    from voxseg.evaluation import evaluate_folder, summary_table

    summary = evaluate_folder(
        pred,
        ref,
        labels=parse_labels(labels),
        dataset=dataset,
        output_dir=output,
        nsd_tolerance_mm=nsd_tolerance_mm,
        ignore_label=ignore_label,
        num_processes=num_processes,
        centerlines=centerlines,
        continue_on_error=continue_on_error,
    )
    console.print(summary_table(summary))
    if "centerline_mean" in summary:
        cl = summary["centerline_mean"]
        console.print(
            f"centerline overlap {cl['centerline_overlap']:.3f}, centerline distance "
            f"{cl['centerline_distance_mm']:.2f} mm (mean over cases)"
        )
    target = output if output is not None else (pred if pred.is_dir() else None)
    if target is not None:
        console.print(f"summary.json and metrics.csv written to {target}")
    if report:
        if target is None:
            raise VoxsegError("--report needs a folder: give -o/--output for a single case")
        from voxseg.report import write_report

        index = write_report(target, target / "report", num_processes=num_processes)
        console.print(f"report written to {index}")
    failed = summary.get("failed", {})
    if failed:
        for case, why in failed.items():
            err_console.print(f"[red]{case}[/]: {why}", highlight=False, soft_wrap=True)
        raise VoxsegError(
            f"{len(failed)} case(s) failed ({', '.join(failed)}); the other "
            f"{summary['num_cases']} were evaluated"
        )
