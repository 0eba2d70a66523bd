"""``voxseg demo``: the whole flow on a generated CT phantom dataset, on a CPU in minutes."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from voxseg.cli._app import app, console, user_errors


@app.command()
@user_errors
def demo(
    output: Path = typer.Option(Path("demo_output"), "-o", "--output", help="Demo workspace."),
    num_train: int = typer.Option(16, help="Training cases to generate."),
    time_budget: str = typer.Option(
        "4m", "--time-budget", "-t", help="voxseg auto's budget: check to selected model."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda, mps."),
    seed: int = typer.Option(0, help="Phantom seed."),
) -> None:
    """synth → voxseg auto (check, plan, preprocess, train, select) → predict → evaluate."""
    from voxseg.pipelines.demo import DemoSettings, run_demo
    from voxseg.training.budget import parse_duration

    settings = DemoSettings(
        output=output,
        num_train=num_train,
        time_budget=parse_duration(time_budget),
        device=device,
        seed=seed,
    )
    tic = time.perf_counter()
    summary = run_demo(settings)
    from voxseg.evaluation import summary_table

    console.print(summary_table(summary))
    console.print(f"demo finished in {time.perf_counter() - tic:.0f} s; everything is in {output}")
