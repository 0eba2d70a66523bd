"""``voxseg plan``: fingerprint a raw dataset and write a named plan."""

from __future__ import annotations

import os
import re

import typer
from rich.table import Table

from voxseg.cli._app import HomeOption, app, console, user_errors
from voxseg.errors import VoxsegError


def default_processes() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def parse_ints(text: str | None, what: str) -> list[int] | None:
    """``"128x128x64"``, ``"128,128,64"`` or ``"128 128 64"`` → ``[128, 128, 64]``."""
    if text is None:
        return None
    parts = [p for p in re.split(r"[x,\s]+", text.strip()) if p]
    try:
        return [int(p) for p in parts]
    except ValueError as exc:
        raise VoxsegError(f"{what} {text!r}: expected integers such as 128x128x64") from exc


@app.command()
@user_errors
def plan(
    dataset: str = typer.Argument(..., help="Dataset folder, or its name in $VOXSEG_HOME/raw."),
    plan_name: str = typer.Option("default", "--plan-name", help="Name of the plan to write."),
    orientation: str | None = typer.Option(
        None, "--orientation", help="Reorient every case first (e.g. RAS, LPS, sct:RPI)."
    ),
    gpu_memory_gb: float = typer.Option(8.0, "--gpu-memory-gb", help="GPU memory budget."),
    device: str | None = typer.Option(
        None, "--device", help="cuda or cpu (default: cuda when available, else cpu)."
    ),
    cpu_gflops: float = typer.Option(
        5.0,
        "--cpu-gflops",
        help="CPU plans: GFLOPs per training iteration at batch 2 (≈ 0.17 s on 2 cores).",
    ),
    cpu_lowres_gflops: float | None = typer.Option(
        None,
        "--cpu-lowres-gflops",
        help="CPU plans: the budget of the whole-image 3d_lowres (default: a multiple of "
        "--cpu-gflops, one for CPUs with hardware bf16 and one for float32; the plan's "
        "explanation of the 3d_lowres spacing names the factor used).",
    ),
    base_features: int | None = typer.Option(
        None, "--base-features", help="First-stage features (default: 32 GPU, 8 CPU)."
    ),
    spacing: tuple[float, float, float] | None = typer.Option(
        None, "--spacing", help="Target spacing Z Y X in mm (overrides the rule)."
    ),
    patch_size: str | None = typer.Option(
        None, "--patch-size", help="Patch size: ZxYxX for 3D or YxX for 2D (overrides)."
    ),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Override a plan value, e.g. configurations.3d_fullres.batch_size=4."
    ),
    num_processes: int = typer.Option(default_processes(), "--num-processes", "-p"),
    force: bool = typer.Option(False, "--force", help="Recompute the fingerprint."),
    home: str | None = HomeOption,
) -> None:
    """Fingerprint DATASET and plan 2d / 3d_fullres / 3d_lowres / cascade configurations."""
    from voxseg.config import apply_overrides
    from voxseg.data.dataset import Dataset
    from voxseg.data.fingerprint import load_or_compute_fingerprint
    from voxseg.pipelines.vessels import local_model_options
    from voxseg.planning import PlannerOptions, default_device, plan_dataset, write_plans
    from voxseg.workspace import Workspace

    ws = Workspace.from_env(home)
    ds = Dataset(ws.dataset_dir(dataset))
    if device not in (None, "cuda", "cpu"):
        raise VoxsegError(f"--device {device!r}: choose cuda or cpu")
    out_dir = ws.preprocessed_dataset_dir(ds.name)
    fingerprint = load_or_compute_fingerprint(ds, out_dir, force=force, num_processes=num_processes)
    options = PlannerOptions(
        plan_name=plan_name,
        device=device or default_device(),
        gpu_memory_gb=gpu_memory_gb,
        cpu_gflops_per_iteration=cpu_gflops,
        cpu_lowres_gflops_per_iteration=cpu_lowres_gflops,
        base_features=base_features,
        orientation=orientation,
        spacing=list(spacing) if spacing else None,
        patch_size=parse_ints(patch_size, "--patch-size"),
    )
    options, note = local_model_options(fingerprint, ds.info, options, ds.root)
    plans = apply_overrides(plan_dataset(fingerprint, ds.info, options), overrides)
    path = write_plans(plans, out_dir)
    print_plans(plans)
    if note:
        console.print(note)
    console.print(f"plan written to {path}")


def print_plans(plans) -> None:
    """One row per configuration (GB: estimated GPU memory; GFLOP: per training iteration)."""
    table = Table(title=f"{plans.dataset} · plan {plans.plan_name!r} · {plans.device}")
    table.add_column("config", no_wrap=True, min_width=18)
    for col in ("spacing", "median", "patch", "batch", "stages", "features"):
        table.add_column(col)
    table.add_column("GB", justify="right")
    table.add_column("GFLOP", justify="right")
    for name, c in plans.configurations.items():
        table.add_row(
            name,
            "×".join(f"{s:.3g}" for s in c.spacing),
            "×".join(str(s) for s in c.median_shape),
            "×".join(str(s) for s in c.patch_size),
            str(c.batch_size),
            str(c.topology.n_stages),
            f"{c.topology.features_per_stage[0]}–{c.topology.features_per_stage[-1]}",
            f"{c.estimated_gpu_memory_gb:.1f}",
            f"{c.estimated_training_gflops:.0f}",
        )
    console.print(table)
    norms = ", ".join(f"{n.channel_name}→{n.scheme}" for n in plans.normalization)
    console.print(f"normalisation: {norms}")
