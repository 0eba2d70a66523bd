"""The end-to-end demo behind ``voxseg demo`` (also usable from Python)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class DemoSettings:
    output: Path = Path("demo_output")
    num_train: int = 12
    num_test: int = 4
    shape: tuple[int, int, int] = (32, 64, 64)
    epochs: int = 30
    iterations: int = 25
    device: str = "auto"
    seed: int = 0
    recipe: str = "adamw"


@contextmanager
def _step(console: Any, text: str):
    tic = time.perf_counter()
    console.print(f"[bold cyan]▶ {text}[/]")
    yield
    console.print(f"  done in {time.perf_counter() - tic:.1f} s")


def run_demo(s: DemoSettings, console: Any) -> dict:
    """Run every step of the flow into ``s.output``; return the held-out evaluation summary."""
    from voxseg.config import apply_overrides
    from voxseg.data import Dataset, ensure_valid
    from voxseg.data.fingerprint import load_or_compute_fingerprint
    from voxseg.evaluation import evaluate_folder
    from voxseg.inference import Predictor, predict_folder
    from voxseg.planning import PlannerOptions, default_device, plan_dataset, write_plans
    from voxseg.preprocessing.preprocessor import preprocess_dataset
    from voxseg.synth import generate
    from voxseg.training import ModelConfig, apply_recipe, train_fold
    from voxseg.workspace import Workspace

    ws = Workspace.from_env(s.output / "home").ensure()
    raw = ws.raw / "Dataset001_Organs"
    with _step(console, f"synth organs: {s.num_train} training + {s.num_test} test phantoms"):
        if not (raw / "dataset.json").is_file():
            generate(
                "organs",
                raw,
                num_train=s.num_train,
                num_test=s.num_test,
                shape=s.shape,
                seed=s.seed,
            )
    ds = Dataset(raw)
    with _step(console, "dataset check"):
        report = ensure_valid(raw)
        console.print(f"  {report.num_cases} cases, no errors")
    device = s.device if s.device != "auto" else default_device()
    planner_device = "cuda" if device.startswith("cuda") else "cpu"
    pre = ws.plans_dir(ds.name)
    with _step(console, f"plan (for {planner_device})"):
        fingerprint = load_or_compute_fingerprint(ds, pre, progress=False)
        plans = plan_dataset(fingerprint, ds.info, PlannerOptions(device=planner_device))
        write_plans(plans, pre)
        c = plans.configuration("3d_fullres")
        console.print(
            f"  3d_fullres: spacing {tuple(round(v, 2) for v in c.spacing)}, patch "
            f"{tuple(c.patch_size)}, batch {c.batch_size}, features "
            f"{c.topology.features_per_stage}"
        )
    with _step(console, "preprocess 3d_fullres"):
        preprocess_dataset(
            ds,
            plans,
            "3d_fullres",
            ws.preprocessed_dir(ds.name, "default", "3d_fullres"),
            progress=False,
        )
    config = apply_overrides(
        apply_recipe(ModelConfig(dataset=ds.name), s.recipe),
        [
            f"training.epochs={s.epochs}",
            f"training.iterations_per_epoch={s.iterations}",
            "training.val_iterations=4",
            f"training.device={device}",
            f"training.seed={s.seed}",
        ],
    )
    with _step(
        console,
        f"train on all cases: {s.epochs} epochs × {s.iterations} iterations, {s.recipe} recipe",
    ):
        folder = train_fold(config, "all", home=ws.root, force=True)
    predictions = s.output / "predictions"
    with _step(console, "predict the held-out cases (with overlays)"):
        predictor = Predictor(folder.parent, folds=["all"], device=device, tta=False)
        predict_folder(
            predictor, raw / "imagesTs", predictions, overlays=True, overwrite=True, quiet=True
        )
    with _step(console, "evaluate against the held-out references"):
        return evaluate_folder(predictions, raw / "labelsTs", dataset=raw)
