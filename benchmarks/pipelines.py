"""Two-stage pipelines vs a single full-image model with the same training budget.

On ``voxseg synth cord`` (cord-lesion recipe) and ``voxseg synth spine`` (spine recipe):
the pipeline trains each of its two stages for ``--epochs`` × ``--iterations``; the single
model (one stage on the whole image, every label, the dataset's own plan) trains for the
same total number of iterations (2 × epochs). Both are evaluated end to end on the held-out
cases: Dice per label, lesion-wise sensitivity / precision (cord), seconds per case.

    python benchmarks/pipelines.py --kind both --epochs 20 --iterations 50
    python benchmarks/pipelines.py --kind cord --epochs 1 --iterations 2   # smoke run
    python benchmarks/pipelines.py --kind cord --workdir W --evaluate-only  # re-time W's models
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from voxseg.data import Dataset
from voxseg.pipelines import (
    FullInput,
    PipelineSpec,
    PlanSettings,
    StageSpec,
    evaluate_pipeline,
    init_pipeline,
    train_pipeline,
    write_spec,
)
from voxseg.pipelines.recipes import LESION_SETTINGS
from voxseg.synth import generate

#: Default phantom shapes. Cord: 16 axial slices of 160×160 pixels at 0.5–0.9 mm, an
#: 80–144 mm field of view around a cord about 10 mm across, where the neck around the
#: canal is in view; the lesion windows do not grow with it, the single model's whole image
#: does. ``--shape 16 64 64`` is the 32–58 mm field of view of earlier runs.
SHAPES = {"cord": (16, 160, 160), "spine": (32, 96, 96)}


def settings(epochs: int, iterations: int) -> list[str]:
    """Training settings of every stage of both methods."""
    return [
        f"training.epochs={epochs}",
        f"training.iterations_per_epoch={iterations}",
        "training.val_iterations=0",
        "training.num_workers=0",
        "prediction.tta=false",
        "logging.snapshots=false",
    ]


def single_model(ds: Dataset, out: Path, sets: list[str], lesions: list[str]) -> None:
    """One full-image stage over every label (the baseline)."""
    labels = {k: int(v) for k, v in ds.info.foreground_labels.items()}
    spec = PipelineSpec(
        name=f"{ds.name}-single",
        recipe="single",
        dataset=str(ds.root),
        channel_names=dict(ds.info.channel_names),
        labels={"background": 0, **labels},
        lesion_labels=lesions,
        stages=[
            StageSpec(
                name="single",
                labels={k: [v] for k, v in labels.items()},
                input=FullInput(),
                plan=PlanSettings(device="cpu"),
                settings=sets,
                output={k: k_v for k, k_v in labels.items()},
            )
        ],
    )
    write_spec(spec, out)


def run(kind: str, args: argparse.Namespace, work: Path) -> list[tuple[str, dict, float]]:
    ds_root = work / f"Dataset_{kind}"
    pipe, single = work / f"{kind}_pipeline", work / f"{kind}_single"
    if not args.evaluate_only:
        prepare(kind, args, ds_root, pipe, single)
    rows = []
    for name, folder in (("pipeline", pipe), ("single model", single)):
        train_s = float("nan")
        if not args.evaluate_only:
            tic = time.perf_counter()
            train_pipeline(folder, ds_root, device="cpu")
            train_s = time.perf_counter() - tic
        report = evaluate_pipeline(folder, ds_root, folder / "eval", device="cpu", tta=False)
        rows.append((name, report, train_s))
    return rows


def prepare(kind: str, args: argparse.Namespace, ds_root: Path, pipe: Path, single: Path) -> None:
    """Generate the phantoms and write both pipeline folders."""
    shape = SHAPES[kind]
    generate(
        kind,
        ds_root,
        num_train=args.num_train,
        num_test=args.num_test,
        shape=tuple(args.shape or shape),
        seed=args.seed,
    )
    ds = Dataset(ds_root)
    sets = settings(args.epochs, args.iterations)
    if kind == "cord":
        init_pipeline("cord-lesion", ds_root, pipe, device="cpu", settings=sets)
    else:
        init_pipeline("spine", ds_root, pipe, device="cpu", settings=sets)
    single_sets = settings(2 * args.epochs, args.iterations)
    if kind == "cord":  # the lesion stage's oversampling, so the baseline gets it too
        single_sets += list(LESION_SETTINGS)
    single_model(ds, single, single_sets, ["lesion"] * (kind == "cord"))


def table(kind: str, rows: list[tuple[str, dict, float]]) -> Table:
    labels = list(rows[0][1]["dice"])
    t = Table(title=f"{kind}: pipeline vs single model (same training iterations)")
    t.add_column("method")
    for label in labels:
        t.add_column(f"Dice {label}", justify="right")
    lesion = "lesion" in rows[0][1]["lesions"]
    if lesion:
        t.add_column("lesion sens.", justify="right")
        t.add_column("lesion prec.", justify="right")
    t.add_column("s / case", justify="right")
    t.add_column("train s", justify="right")
    for name, report, train_s in rows:
        cells = [_f(report["dice"][label]) for label in labels]
        if lesion:
            les = report["lesions"]["lesion"]
            cells += [_f(les["sensitivity"]), _f(les["precision"])]
        cells += [
            f"{report['seconds_per_case']:.2f}",
            _f(train_s, ".0f"),
        ]
        t.add_row(name, *cells)
    return t


def _f(v: float, fmt: str = ".3f") -> str:
    return "–" if v != v else format(v, fmt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["cord", "spine", "both"], default="both")
    parser.add_argument("--num-train", type=int, default=12)
    parser.add_argument("--num-test", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=None)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="kept when given")
    parser.add_argument(
        "--evaluate-only",
        action="store_true",
        help="evaluate the models already trained in --workdir (no data generation, no training)",
    )
    args = parser.parse_args()
    if args.evaluate_only and args.workdir is None:
        parser.error("--evaluate-only needs the --workdir of an earlier run")
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="voxseg_pipelines_"))
    work.mkdir(parents=True, exist_ok=True)
    console = Console()
    try:
        for kind in ("cord", "spine") if args.kind == "both" else (args.kind,):
            console.print(table(kind, run(kind, args, work)))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
