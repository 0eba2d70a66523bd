"""The end-to-end demo behind ``voxseg demo`` (also usable from Python)."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class DemoSettings:
    output: Path = Path("demo_output")
    num_train: int = 16
    num_test: int = 4
    shape: tuple[int, int, int] = (48, 96, 96)
    time_budget: float = 240.0
    device: str = "auto"
    seed: int = 0


@contextmanager
def _step(text: str):
    tic = time.perf_counter()
    log.info(f"▶ {text}")
    yield
    log.info(f"  done in {time.perf_counter() - tic:.1f} s")


def run_demo(s: DemoSettings) -> dict:
    """Generate phantoms, run ``voxseg auto`` on them within ``s.time_budget`` seconds, then
    predict and evaluate the held-out cases; return the evaluation summary. Each step is
    logged (INFO) as it starts and ends."""
    from voxseg.evaluation import evaluate_folder
    from voxseg.inference import Predictor, predict_folder
    from voxseg.pipelines.auto import run_auto
    from voxseg.synth import generate
    from voxseg.training.budget import format_duration
    from voxseg.workspace import Workspace

    ws = Workspace.from_env(s.output / "home").ensure()
    raw = ws.raw / "Dataset001_Organs"
    text = f"synth organs: {s.num_train} training + {s.num_test} test phantoms"
    with _step(text):
        if (raw / "dataset.json").is_file():
            log.info(f"  reusing the phantoms in {raw}")
        else:
            generate(
                "organs",
                raw,
                num_train=s.num_train,
                num_test=s.num_test,
                shape=s.shape,
                seed=s.seed,
            )
    text = f"voxseg auto {raw.name} --time-budget {format_duration(s.time_budget)}"
    with _step(text):
        folder = run_auto(
            raw,
            s.time_budget,
            device=s.device,
            home=ws.root,
            log=lambda line: log.info(f"  {line}"),
        )
    predictions = s.output / "predictions"
    with _step("predict the held-out cases (with overlays)"):
        predictor = Predictor(folder, device=s.device)
        predict_folder(predictor, raw / "imagesTs", predictions, overlays=True, overwrite=True)
    with _step("evaluate against the held-out references"):
        return evaluate_folder(predictions, raw / "labelsTs", dataset=raw)
