"""``voxseg ensemble`` (average saved probabilities of several models) and ``voxseg select``
(rank models and ensembles on cross-validation and print the commands to use)."""

from __future__ import annotations

from pathlib import Path

import click
import typer
from typer.core import TyperCommand

from voxseg.cli._app import HomeOption, app, console, err_console, user_errors
from voxseg.errors import VoxsegError


class MultiValueCommand(TyperCommand):
    """Lets ``-i A B C`` mean ``-i A -i B -i C`` for the options in ``multi_value``: the
    values after such an option, up to the next ``-…``, all belong to it."""

    multi_value: tuple[str, ...] = ()

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        expanded: list[str] = []
        current: str | None = None
        for arg in args:
            if arg.startswith("-"):
                current = arg if arg in self.multi_value else None
                expanded.append(arg)
            elif current is not None and expanded[-1] != current:
                expanded.extend([current, arg])
            else:
                expanded.append(arg)
        return super().parse_args(ctx, expanded)


class EnsembleCommand(MultiValueCommand):
    multi_value = ("-i", "--input")


class SelectCommand(MultiValueCommand):
    multi_value = ("--models", "--configs", "--folds")


@app.command(cls=EnsembleCommand)
@user_errors
def ensemble(
    inputs: list[Path] = typer.Option(
        ..., "-i", "--input", help="Prediction folders with <case>.npz: -i DIR1 DIR2 ..."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder."),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help="dataset.json, its folder or a dataset name (default: found beside the inputs).",
    ),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write the mean probabilities (.npz)."
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="Output ending (default: that of the first input's label maps)."
    ),
    overwrite: bool = typer.Option(False, help="Ensemble cases whose output exists again."),
    home: str | None = HomeOption,
) -> None:
    """Average the saved probabilities of several models and write the label maps."""
    from voxseg.inference.ensemble import ensemble_folders

    report = ensemble_folders(
        inputs,
        output,
        dataset=dataset,
        save_probabilities=save_probabilities,
        fmt=fmt,
        overwrite=overwrite,
        home=home,
    )
    console.print(
        f"ensembled {len(report.done)}, skipped {len(report.skipped)} (already done) → {output}"
    )
    if report.missing:
        for case, folders in report.missing.items():
            err_console.print(f"[yellow]{case}[/]: no probabilities in {', '.join(folders)}")
        err_console.print(f"{len(report.missing)} case(s) left out: not in every input")


@app.command(cls=SelectCommand)
@user_errors
def select(
    dataset: str = typer.Argument(..., help="Dataset name in the workspace or a path."),
    plan: str = typer.Option("default", "--plan", "-p", help="Plan name."),
    models: list[str] | None = typer.Option(
        None, "--models", help="Only these model names: --models m1 m2 (default: all)."
    ),
    configs: list[str] | None = typer.Option(
        None, "--configs", help="Only these configurations: --configs 2d 3d_fullres."
    ),
    folds: list[str] | None = typer.Option(
        None, "--folds", help="Folds to compare on (default: every fold found)."
    ),
    ensembles: bool = typer.Option(
        True, "--ensembles/--no-ensembles", help="Also rank pairwise ensembles."
    ),
    predict_probabilities: bool = typer.Option(
        False,
        "--predict-probabilities",
        help="Predict missing validation probabilities first (needed for ensembles).",
    ),
    postprocess: bool = typer.Option(
        True, "--postprocess/--no-postprocess", help="Choose post-processing for the best."
    ),
    device: str = typer.Option("auto", help="For --predict-probabilities: auto, cpu, cuda."),
    home: str | None = HomeOption,
) -> None:
    """Rank trained models and ensembles on cross-validation; print the commands to use."""
    from voxseg.pipelines.selection import select_models
    from voxseg.workspace import Workspace

    for fold in folds or []:
        if not fold.isdigit():
            raise VoxsegError(f"--folds takes fold numbers, got {fold!r}")
    selection = select_models(
        dataset,
        plan=plan,
        models=models or None,
        configs=configs or None,
        folds=folds or None,
        ensembles=ensembles,
        predict_probabilities=predict_probabilities,
        postprocess=postprocess,
        device=device,
        home=home,
    )
    console.print(selection.table())
    for what, why in selection.skipped.items():
        err_console.print(f"[yellow]skipped[/] {what}: {why}")
    if postprocess:
        kept = ", ".join(str(s) for s in selection.postprocessing) or "none"
        console.print(f"post-processing for {selection.best.name}: {kept}")
    console.print("\n[bold]To predict new scans:[/]")
    for command in selection.commands:
        console.print(command, highlight=False, soft_wrap=True)
    report = Workspace.from_env(home).reports / selection.dataset / "selection.json"
    console.print(f"\n{report} written")
