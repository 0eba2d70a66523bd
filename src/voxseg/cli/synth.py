"""``voxseg synth KIND OUT``: write a seeded synthetic raw dataset (phantoms)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from voxseg.cli._app import app, console, user_errors
from voxseg.config import parse_overrides


@app.command("synth")
@user_errors
def synth(
    kind: str = typer.Argument(..., help="Phantom kind: organs, vessels, cord, spine or rgb2d."),
    out: Path = typer.Argument(..., help="Dataset folder to create (e.g. raw/Dataset001_Organs)."),
    num_train: int | None = typer.Option(None, "--num-train", help="Training cases."),
    num_test: int | None = typer.Option(None, "--num-test", help="Held-out cases (imagesTs)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same arrays."),
    shape: tuple[int, int, int] | None = typer.Option(
        None, "--shape", help="Array shape Z Y X of every case (rgb2d: 1 Y X)."
    ),
    scale: float | None = typer.Option(None, "--scale", help="Multiply the default shape."),
    inplane_spacing: tuple[float, float] | None = typer.Option(
        None, "--inplane-spacing", help="In-plane spacing range LO HI in mm (organs/cord/spine)."
    ),
    slice_spacing: tuple[float, float] | None = typer.Option(
        None, "--slice-spacing", help="Slice spacing range LO HI in mm (organs/cord/spine)."
    ),
    orientation: str | None = typer.Option(
        None, "--orientation", help="vary or fixed (organs, cord): vary flips/permutes/tilts."
    ),
    target: str | None = typer.Option(None, "--target", help="cord: lesion, cord or both."),
    multiclass: bool = typer.Option(False, "--multiclass", help="spine: a label per vertebra."),
    lesions: bool = typer.Option(
        False, "--lesions", help="organs: liver lesions of 4-10 mm with their own label 4."
    ),
    raw_folder: bool = typer.Option(
        False, "--raw-folder", help="rgb2d: plain images/ + masks/ folder instead of nnU-Net."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset."),
    workers: int = typer.Option(1, "--workers", help="Processes generating cases in parallel."),
    set_: list[str] | None = typer.Option(
        None, "--set", help="Any other option as key=value (JSON values), e.g. levels=[2,3]."
    ),
) -> None:
    """Write a seeded synthetic dataset in nnU-Net v2 raw format (train and held-out cases)."""
    from voxseg.synth import generate

    options: dict[str, Any] = {
        "num_train": num_train,
        "num_test": num_test,
        "shape": shape,
        "scale": scale,
        "inplane_spacing": inplane_spacing,
        "slice_spacing": slice_spacing,
        "orientation": orientation,
        "target": target,
    }
    options = {k: v for k, v in options.items() if v is not None}
    options.update(
        {
            k: True
            for k, v in [
                ("multiclass", multiclass),
                ("lesions", lesions),
                ("raw_folder", raw_folder),
                ("overwrite", overwrite),
            ]
            if v
        }
    )
    options.update(parse_overrides(set_))
    start = time.perf_counter()
    root = generate(kind, out, workers=workers, seed=seed, **options)
    console.print(f"synth {kind}: wrote {root} in {time.perf_counter() - start:.1f} s")
