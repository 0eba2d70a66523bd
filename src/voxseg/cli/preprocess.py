"""``voxseg preprocess``: write the preprocessed store of each planned configuration."""

from __future__ import annotations

import typer

from voxseg.cli._app import HomeOption, app, console, user_errors
from voxseg.cli.plan import default_processes
from voxseg.errors import VoxsegError


@app.command()
@user_errors
def preprocess(
    dataset: str = typer.Argument(..., help="Dataset folder, or its name in $VOXSEG_HOME/raw."),
    plan_name: str = typer.Option("default", "--plan", help="Plan written by 'voxseg plan'."),
    configs: list[str] | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Configuration(s) to preprocess (default: every one the plan has).",
    ),
    num_processes: int = typer.Option(default_processes(), "--num-processes", "-p"),
    dtype: str = typer.Option("float32", "--dtype", help="Image dtype: float16 or float32."),
    storage: str = typer.Option("blosc2", "--storage", help="blosc2 (compressed) or raw (.npy)."),
    continue_on_error: bool = typer.Option(
        False, "--continue-on-error", help="Preprocess the other cases when one fails."
    ),
    home: str | None = HomeOption,
) -> None:
    """Crop, normalise, resample and store every training case; finished cases are skipped."""
    from voxseg.data.dataset import Dataset
    from voxseg.planning import read_plans
    from voxseg.preprocessing import preprocess_dataset
    from voxseg.workspace import Workspace

    if dtype not in ("float16", "float32"):
        raise VoxsegError(f"--dtype {dtype!r}: choose float16 or float32")
    if storage not in ("blosc2", "raw"):
        raise VoxsegError(f"--storage {storage!r}: choose blosc2 or raw")
    ws = Workspace.from_env(home)
    ds = Dataset(ws.dataset_dir(dataset))
    plans = read_plans(ws.preprocessed_dataset_dir(ds.name), plan_name)
    names = configs or list(plans.configurations)
    done: set[str] = set()
    for name in names:
        cfg = plans.configuration(name)
        if cfg.data_from in done:
            continue
        folder = ws.preprocessed_dir(ds.name, plan_name, cfg.data_from)
        store = preprocess_dataset(
            ds,
            plans,
            cfg.data_from,
            folder,
            num_processes=num_processes,
            dtype=dtype,  # type: ignore[arg-type]
            storage=storage,  # type: ignore[arg-type]
            continue_on_error=continue_on_error,
        )
        done.add(cfg.data_from)
        console.print(f"{cfg.data_from}: {len(store.case_ids())} cases in {folder}")
