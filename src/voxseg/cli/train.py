"""``voxseg train``: train one fold, several folds, or all cases."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import typer

from voxseg.cli._app import ERROR_DIR_ENV, HomeOption, Terminated, app, console, user_errors
from voxseg.cli._folds import collect_folds
from voxseg.cli._logging import verbose
from voxseg.config import apply_overrides, load_model
from voxseg.errors import VoxsegError
from voxseg.modelfolder import SUMMARY, VALIDATION


@app.command(context_settings={"allow_extra_args": True})
@user_errors
def train(
    ctx: typer.Context,
    dataset: str = typer.Argument(..., help="Dataset name in the workspace or a path."),
    config: str = typer.Option("3d_fullres", "--config", "-c", help="Plan configuration."),
    plan: str = typer.Option("default", "--plan", "-p", help="Plan name."),
    model: str | None = typer.Option(
        None, "--model", help="Model name (its folder; default: the configuration)."
    ),
    fold: str = typer.Option("0", "--fold", "-f", help="Fold number, or 'all' (every case)."),
    folds: str | None = typer.Option(
        None, "--folds", help="Several folds, trained one after the other: --folds 0 1 2 3 4"
    ),
    epochs: int | None = typer.Option(None, help="Shortcut for --set training.epochs=N."),
    iterations: int | None = typer.Option(
        None, help="Shortcut for --set training.iterations_per_epoch=N."
    ),
    lr: float | None = typer.Option(None, help="Shortcut for --set optimizer.lr=X."),
    recipe: str | None = typer.Option(
        None, help="Optimiser + schedule by name: nnunet (default), adamw (short budgets)."
    ),
    time_budget: str | None = typer.Option(
        None,
        "--time-budget",
        help="Train for this long (90s, 20m, 2h), final validation included: the epochs "
        "(and the epoch length) are fixed from the measured speed.",
    ),
    network: str | None = typer.Option(None, help="Registered network or module:Class."),
    device: str | None = typer.Option(None, help="auto, cpu, cuda, cuda:1, mps."),
    settings: list[str] = typer.Option([], "--set", help="Override any parameter: key.sub=value"),
    config_file: Path | None = typer.Option(
        None, "--config-file", help="A full model config JSON (e.g. another model's config.json)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run exactly where it stopped."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite a run / resume a changed config."),
    pretrained: Path | None = typer.Option(
        None, "--pretrained", help="Model folder or weights to fine-tune from."
    ),
    nproc_per_node: int = typer.Option(
        1, "--nproc-per-node", help="Processes (GPUs) on this machine, through torchrun + DDP."
    ),
    home: str | None = HomeOption,
) -> None:
    """Train a model on a preprocessed dataset (nnU-Net's recipe by default)."""
    from voxseg.training import ModelConfig, apply_recipe, train_fold
    from voxseg.training.budget import format_duration, parse_duration
    from voxseg.workspace import Workspace

    fold_list = collect_folds(folds, ctx) or [fold]
    if nproc_per_node > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        _relaunch_with_torchrun(nproc_per_node)
        return
    started = time.monotonic()
    ws = Workspace.from_env(home)
    root = ws.dataset_dir(dataset)
    name = root.name
    where = {"dataset": name, "dataset_path": str(root)}
    if config_file is not None:
        cfg = load_model(ModelConfig, config_file)
        cfg = cfg.model_copy(update=where)
    else:
        cfg = ModelConfig(**where, plan=plan, configuration=config, model_name=model)
    if recipe is not None:
        cfg = apply_recipe(cfg, recipe)
    budget_settings = []
    if time_budget is not None:
        budget_settings.append(f"training.time_budget={parse_duration(time_budget)}")
    shortcuts = {
        "training.epochs": epochs,
        "training.iterations_per_epoch": iterations,
        "optimizer.lr": lr,
        "network.name": network,
        "training.device": device,
    }
    overrides = [f"{k}={v}" for k, v in shortcuts.items() if v is not None] + list(settings)
    cfg = apply_overrides(cfg, budget_settings + overrides)
    _advise(cfg, recipe)
    per_fold = cfg.training.time_budget
    if per_fold is not None and len(fold_list) > 1:
        per_fold = per_fold / len(fold_list)
        cfg = apply_overrides(cfg, [f"training.time_budget={per_fold}"])
        console.print(f"time budget: {format_duration(per_fold)} per fold")
    for i, f in enumerate(fold_list):
        console.print(f"[bold]training[/] {name} / {cfg.plan} / {cfg.configuration} / fold {f}")
        folder = train_fold(
            cfg,
            f,
            home=ws.root,
            resume=resume,
            force=force,
            pretrained=pretrained,
            started=started if i == 0 else None,
        )
        console.print(f"model written to {folder}")
        summary = folder / VALIDATION / SUMMARY
        if summary.is_file():
            from voxseg.config import read_json
            from voxseg.evaluation import summary_table

            console.print(summary_table(read_json(summary)))


def _advise(cfg, recipe: str | None) -> None:
    """On a CPU, a run without a budget on nnU-Net's schedule takes hours to days: say so
    before it starts (the trainer prints its measured estimate after a few steps)."""
    from voxseg.devices import pick_device

    t = cfg.training
    if t.time_budget is not None or pick_device(t.device).type != "cpu":
        return
    if recipe is None and t.epochs >= 1000:
        console.print(
            f"[yellow]note:[/] {t.epochs} epochs of nnU-Net's recipe on a CPU take hours to days; "
            "for a CPU run try [bold]--time-budget 30m[/] (fits the epochs to the time) and "
            "[bold]--recipe adamw[/], or [bold]voxseg auto DATASET --time-budget 30m[/]",
            highlight=False,
        )


def _relaunch_with_torchrun(nproc: int) -> None:
    """``voxseg train`` again in ``nproc`` processes through torch's elastic launcher (as
    ``torchrun --standalone``); an error that stops them is reported once."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = [a for a in sys.argv[1:]]
    cleaned, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == "--nproc-per-node":
            skip = True
            continue
        if a.startswith("--nproc-per-node="):
            continue
        cleaned.append(a)
    launch = parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "voxseg.cli", *cleaned])
    with tempfile.TemporaryDirectory(prefix="voxseg_ranks_") as errors:
        os.environ[ERROR_DIR_ENV] = errors
        # torch's launcher logs how it stops the processes and each failed one with its
        # traceback file: the error written by the processes says it in one line (-v shows
        # torch's account too)
        elastic = logging.getLogger("torch.distributed.elastic")
        propagate = elastic.propagate
        drop = logging.NullHandler()
        if not verbose():
            elastic.addHandler(drop)
            elastic.propagate = False
        try:
            run(launch)
        except SignalException as exc:  # the launcher stopped the processes on Ctrl-C/SIGTERM
            raise (Terminated() if exc.sigval == signal.SIGTERM else KeyboardInterrupt()) from None
        except ChildFailedError as exc:
            said = sorted(Path(errors).glob("rank*.txt"), key=lambda f: int(f.stem[4:]))
            if said:
                raise VoxsegError(said[0].read_text()) from None
            codes = sorted({f.exitcode for f in exc.failures.values()})
            raise VoxsegError(
                f"distributed training failed (exit code {', '.join(map(str, codes))}); "
                "the processes' output above says why"
            ) from None
        finally:
            elastic.removeHandler(drop)
            elastic.propagate = propagate
            os.environ.pop(ERROR_DIR_ENV, None)
