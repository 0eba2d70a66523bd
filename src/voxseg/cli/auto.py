"""``voxseg auto``: the whole flow, from a dataset to a ready model, in the time given."""

from __future__ import annotations

import typer

from voxseg.cli._app import DeviceOption, HomeOption, app, console, user_errors


@app.command()
@user_errors
def auto(
    dataset: str = typer.Argument(..., help="A dataset folder anywhere, or its name or number."),
    time_budget: str = typer.Option(
        ..., "--time-budget", "-t", help="Everything within this long: 90s, 20m, 2h, 1h30m."
    ),
    device: str = DeviceOption,
    num_processes: int | None = typer.Option(
        None, "--num-processes", "-p", help="Processes for checking and preprocessing."
    ),
    report: bool = typer.Option(
        True, "--report/--no-report", help="Write an HTML report of the model (after the budget)."
    ),
    home: str | None = HomeOption,
) -> None:
    """Check, plan, preprocess, train, select and choose post-processing within a time budget;
    writes models/<dataset>/auto/ (run again after an interruption to resume)."""
    from voxseg.pipelines.auto import run_auto
    from voxseg.training.budget import format_duration, parse_duration

    seconds = parse_duration(time_budget)
    folder = run_auto(
        dataset,
        seconds,
        device=device,
        home=home,
        num_processes=num_processes,
        log=lambda text: console.print(text, highlight=False, markup=False),
    )
    from voxseg.config import read_json
    from voxseg.modelfolder import SUMMARY

    summary = read_json(folder / SUMMARY)
    console.print(
        f"[bold]model ready[/] in {format_duration(summary['spent_seconds'])} "
        f"(budget {format_duration(seconds)}): {summary['why']}",
        highlight=False,
    )
    console.print(f"summary: {folder / SUMMARY}")
    if report:
        from voxseg.modelfolder import REPORT
        from voxseg.report import write_report

        page = write_report(folder, folder / REPORT, num_processes=num_processes)
        console.print(f"report: {page}")
    console.print("predict new scans with:")
    console.print(f"  {summary['predict']}", highlight=False, markup=False, soft_wrap=True)
