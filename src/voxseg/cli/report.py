"""``voxseg report``: an HTML report of a dataset, a model or an evaluation."""

from __future__ import annotations

from pathlib import Path

import typer

from voxseg.cli._app import app, console, user_errors


@app.command()
@user_errors
def report(
    target: Path = typer.Argument(
        ..., help="A dataset (raw or preprocessed), a model folder, a fold or an evaluation folder."
    ),
    output: Path = typer.Option(Path("report"), "-o", "--output", help="Report folder."),
    num_processes: int | None = typer.Option(
        None, "--num-processes", "-np", help="Case pages written in parallel (default: up to 4)."
    ),
    no_cases: bool = typer.Option(
        False, "--no-cases", help="Leave out the per-case slice viewers (reads no images)."
    ),
) -> None:
    """index.html with the dataset, plan, training curves, evaluation tables and a slice
    viewer per case; opens offline in any browser. Reads what the steps wrote only."""
    from voxseg.report import write_report

    index = write_report(
        target,
        output,
        num_processes=num_processes,
        cases=not no_cases,
        log=lambda text: console.print(text, highlight=False),
    )
    console.print(f"open {index}")
