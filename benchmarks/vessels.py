"""Vessel tracing (SeqSeg) vs a global 3D model trained with the same budget (CPU).

    .venv/bin/python benchmarks/vessels.py                      # 16 train / 4 test trees, 128³
    .venv/bin/python benchmarks/vessels.py --budget-minutes 1 --num-train 4 --num-test 2 \
        --shape 64 64 64                                        # a smoke run (minutes)

What runs, in a private workspace ``benchmarks/_work/vessels/home`` (``VOXSEG_HOME``):

1. ``voxseg synth vessels`` writes ``--num-train`` training trees and ``--num-test``
   held-out trees (``imagesTs``/``labelsTs`` with their analytic centerlines and seeds).
2. Tracing: ``voxseg vessels sample`` (training trees only) → patch dataset →
   ``voxseg plan --device cpu`` (on a patch dataset it gives the local model the patch of
   the README's radius rule) → ``voxseg preprocess`` → ``voxseg train --fold all`` for
   the wall-clock budget → :func:`voxseg.vessels.trace` with a
   :class:`~voxseg.vessels.PredictorSegmenter` from each held-out tree's seeds.
3. Global baseline: plan/preprocess/train a normal 3D model on the full training volumes
   with the same budget → predict the held-out volumes with ``predict_folder`` (the code
   of ``voxseg predict``), one case at a time so each case is timed.
4. Per case and mean: Dice and HD95 (:mod:`voxseg.evaluation`), centerline overlap and
   distance (:func:`voxseg.vessels.centerline_metrics` against the analytic centerline),
   and seconds per case, beside the targets (tracing: overlap ≥ 0.9, Dice ≥ 0.85, ≤ 2 min
   per 128³ case on 2 CPU cores). Printed, and written to ``results.json`` /
   ``results.md`` in ``benchmarks/_work/vessels/``.

The training budget: a short calibration run (``--calibration-iterations`` × 2 epochs, not
counted) measures the seconds per iteration and the start-up overhead of ``voxseg train``;
the real run's schedule (epochs of ``--iterations-per-epoch``, nnU-Net's poly learning
rate) holds ``--schedule-margin`` (1.5) times the iterations that should fit, and the run
is stopped at the budget, keeping its last checkpoint (saved every epoch) — on a shared
CPU the speed varies too much for a schedule to end on time. Both models get the same
treatment; validation during training is off (``--fold all``,
``training.val_iterations=0``). Inference runs in this
process with ``--threads`` torch threads (2: the target), TTA off for both unless ``--tta``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import WORK, format_table, machine_info, run_measured

SOURCE = "Dataset601_VesselBench"
PATCHES = "Dataset602_VesselBenchPatches"
CONFIG = "3d_fullres"
TARGETS = {"centerline_overlap": 0.9, "dice": 0.85, "seconds_128": 120.0}


@dataclass
class CaseResult:
    """Metrics of one method on one held-out case."""

    method: str
    case: str
    dice: float
    hd95_mm: float
    centerline_overlap: float
    centerline_distance_mm: float
    centerline_length_mm: float
    seconds: float
    steps: int | None = None
    branches: int | None = None


# --------------------------------------------------------------------------- commands


def voxseg(*args: object, log: Path, env: dict[str, str]) -> float:
    """Run ``voxseg ARGS`` (output to ``log``); its wall time in seconds."""
    cmd = [sys.executable, "-m", "voxseg.cli", *map(str, args)]
    print("  $ voxseg " + " ".join(map(str, args)), flush=True)
    return run_measured(cmd, env=env, log=log).wall_s


def run_with_deadline(cmd: list[str], env: dict[str, str], log: Path, deadline_s: float) -> tuple:
    """Run ``cmd``; stop its process group at ``deadline_s``. ``(wall_s, stopped)``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            proc.wait(timeout=deadline_s)
            stopped = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            stopped = True
    wall = time.perf_counter() - start
    if proc.returncode and not stopped:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}), log {log}:\n{tail}")
    return wall, stopped


def train_args(dataset: str, model: str, epochs: int, iterations: int) -> list[str]:
    """``voxseg train`` arguments: every case, no validation, CPU."""
    return [
        "train", dataset, "-c", CONFIG, "--fold", "all", "--model", model,
        "--epochs", str(epochs), "--iterations", str(iterations), "--device", "cpu",
        "--set", "training.val_iterations=0", "--force",
    ]  # fmt: skip


def epoch_seconds(folder: Path) -> list[float]:
    """``epoch_seconds`` of every row of a fold's ``training_log.csv``."""
    with open(folder / "training_log.csv") as f:
        return [float(row["epoch_seconds"]) for row in csv.DictReader(f)]


@dataclass
class Training:
    """How one model's budget was spent."""

    dataset: str
    seconds_per_iteration: float
    startup_s: float
    calibration_s: float
    epochs: int
    iterations_per_epoch: int
    wall_s: float
    stopped_at_deadline: bool
    epochs_done: int
    checkpoint: str
    patch_size: list[int]
    features: list[int]


def train_for_budget(
    home: Path, dataset: str, budget_s: float, args: argparse.Namespace, env: dict[str, str]
) -> Training:
    """Calibrate the seconds per iteration, then train for ``budget_s`` of wall time."""
    logs = home.parent / "logs"
    models = home / "models" / dataset / "default"
    n_cal = args.calibration_iterations
    cal = run_measured(
        [sys.executable, "-m", "voxseg.cli", *train_args(dataset, "calibration", 2, n_cal)],
        env=env,
        log=logs / f"train_{dataset}_calibration.log",
    )
    # the faster epoch (the first also starts the loader's workers; other users of a shared
    # CPU slow either one): an optimistic speed, so the schedule outlasts the budget
    per_it = min(epoch_seconds(models / "calibration" / "fold_all")) / n_cal
    startup = max(cal.wall_s - 2 * per_it * n_cal, 0.0)
    total = max(1, int(args.schedule_margin * (budget_s - startup) / per_it))
    per_epoch = min(args.iterations_per_epoch, total)
    epochs = max(1, math.ceil(total / per_epoch))
    print(
        f"  {dataset}: {per_it:.2f} s/iteration, start-up {startup:.0f} s → schedule of "
        f"{epochs} epochs × {per_epoch} iterations, stopped at {budget_s / 60:.1f} min",
        flush=True,
    )
    cmd = [sys.executable, "-m", "voxseg.cli", *train_args(dataset, "budget", epochs, per_epoch)]
    print("  $ voxseg " + " ".join(cmd[3:]), flush=True)
    wall, stopped = run_with_deadline(cmd, env, logs / f"train_{dataset}.log", budget_s)
    fold = models / "budget" / "fold_all"
    checkpoint = "final" if (fold / "weights.safetensors").is_file() else "last"
    if not (fold / "checkpoint_last.safetensors").is_file() and checkpoint == "last":
        raise SystemExit(f"{fold}: training stopped before its first epoch ended; raise the budget")
    done = len(epoch_seconds(fold))
    plan = json.loads((fold.parent / "plans.json").read_text())["configurations"][CONFIG]
    return Training(
        dataset, per_it, startup, cal.wall_s, epochs, per_epoch, wall, stopped, done, checkpoint,
        plan["patch_size"], plan["topology"]["features_per_stage"],
    )  # fmt: skip


# --------------------------------------------------------------------------- evaluation


def evaluate(method: str, case: str, pred, ref, centerline, seconds: float, **extra) -> CaseResult:
    """Dice, HD95 and the centerline metrics of ``pred`` against ``ref`` (label 1)."""
    import numpy as np

    from voxseg.evaluation.metrics import binary_metrics
    from voxseg.vessels import centerline_metrics

    p = np.asarray(pred.array) > 0
    r = np.asarray(ref.array) == 1
    m = binary_metrics(p, r, pred.spacing, threads=1)
    cl = centerline_metrics(pred.with_array(p.astype(np.uint8)), centerline)
    return CaseResult(
        method,
        case,
        float(m["dice"]),
        float(m["hd95"]),
        cl["centerline_overlap"],
        cl["centerline_distance_mm"],
        cl["centerline_length_mm"],
        seconds,
        **extra,
    )


def load_image(path: Path):
    """One channel file as ``[1, z, y, x]``."""
    from voxseg.io import read_image

    img = read_image(path)
    return img.with_array(img.array[None].astype("float32")) if img.array.ndim == 3 else img


def run_tracing(
    raw: Path, model: Path, checkpoint: str, out: Path, tta: bool, overrides: list[str]
) -> list[CaseResult]:
    """Trace every held-out case from its seeds (``trace`` timed, outputs written after);
    evaluate each."""
    from voxseg.config import apply_overrides
    from voxseg.inference import Predictor
    from voxseg.io import read_image, read_vtp
    from voxseg.vessels import PredictorSegmenter, TracingConfig, read_seeds, trace

    config = apply_overrides(TracingConfig(), overrides)
    predictor = Predictor(model, folds=["all"], device="cpu", tta=tta, checkpoint=checkpoint)
    results = []
    for label_path in sorted((raw / "labelsTs").glob("*.nii.gz")):
        case = label_path.name[: -len(".nii.gz")]
        image = load_image(raw / "imagesTs" / f"{case}_0000.nii.gz")
        seeds = read_seeds(raw / "seeds" / f"{case}.json")
        segmenter = PredictorSegmenter(predictor)
        start = time.perf_counter()
        result = trace(image, seeds, segmenter, config)
        seconds = time.perf_counter() - start
        result.write(out / case, ".nii.gz", image=image)
        r = evaluate(
            "tracing",
            case,
            result.segmentation,
            read_image(label_path),
            read_vtp(raw / "centerlines" / f"{case}.vtp"),
            seconds,
            steps=len(result.steps),
            branches=result.num_branches,
        )
        print(f"  tracing {case}: {_short(r)}", flush=True)
        results.append(r)
    return results


def run_global(raw: Path, model: Path, checkpoint: str, out: Path, tta: bool) -> list[CaseResult]:
    """Predict every held-out case with the global model (``Predictor.predict``, the code
    of ``voxseg predict``: sliding window, export to the input geometry, post-processing)."""
    from voxseg.inference import Predictor
    from voxseg.io import read_image, read_vtp, write_image

    predictor = Predictor(model, folds=["all"], device="cpu", tta=tta, checkpoint=checkpoint)
    results = []
    for label_path in sorted((raw / "labelsTs").glob("*.nii.gz")):
        case = label_path.name[: -len(".nii.gz")]
        image = load_image(raw / "imagesTs" / f"{case}_0000.nii.gz")
        start = time.perf_counter()
        segmentation = predictor.predict(image).segmentation
        seconds = time.perf_counter() - start
        write_image(segmentation, out / f"{case}.nii.gz")
        r = evaluate(
            "global",
            case,
            segmentation,
            read_image(label_path),
            read_vtp(raw / "centerlines" / f"{case}.vtp"),
            seconds,
        )
        print(f"  global  {case}: {_short(r)}", flush=True)
        results.append(r)
    return results


def _short(r: CaseResult) -> str:
    return (
        f"Dice {r.dice:.3f}, HD95 {r.hd95_mm:.2f} mm, overlap {r.centerline_overlap:.3f}, "
        f"distance {r.centerline_distance_mm:.2f} mm, {r.seconds:.1f} s"
    )


# --------------------------------------------------------------------------- report

COLUMNS = [
    ("dice", "Dice", "{:.3f}"),
    ("hd95_mm", "HD95 mm", "{:.2f}"),
    ("centerline_overlap", "CL overlap", "{:.3f}"),
    ("centerline_distance_mm", "CL dist mm", "{:.2f}"),
    ("seconds", "s/case", "{:.1f}"),
]


def mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def summarise(results: list[CaseResult]) -> dict[str, dict[str, float]]:
    """Per method the mean of every column (finite values)."""
    out = {}
    for method in dict.fromkeys(r.method for r in results):
        rows = [r for r in results if r.method == method]
        out[method] = {key: mean([getattr(r, key) for r in rows]) for key, _, _ in COLUMNS}
        out[method]["cases"] = len(rows)
    return out


def target_seconds(shape: tuple[int, int, int]) -> float:
    """The 2-minute target scaled from 128³ to ``shape`` by the voxel count."""
    return TARGETS["seconds_128"] * math.prod(shape) / 128**3


def table_rows(results: list[CaseResult], summary: dict, shape) -> list[list[str]]:
    rows = []
    for r in results:
        rows.append([f"{r.method} {r.case}", *(f.format(getattr(r, k)) for k, _, f in COLUMNS)])
    for method, m in summary.items():
        rows.append([f"{method} mean", *(f.format(m[k]) for k, _, f in COLUMNS)])
    rows.append(
        [
            "target (tracing)",
            f"≥ {TARGETS['dice']}",
            "-",
            f"≥ {TARGETS['centerline_overlap']}",
            "-",
            f"≤ {target_seconds(shape):.0f}",
        ]
    )
    return rows


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(summary: dict, shape) -> dict[str, bool]:
    t = summary.get("tracing", {})
    return {
        "centerline_overlap": t.get("centerline_overlap", 0) >= TARGETS["centerline_overlap"],
        "dice": t.get("dice", 0) >= TARGETS["dice"],
        "seconds": t.get("seconds", math.inf) <= target_seconds(shape),
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget-minutes", type=float, default=30.0, help="training per model")
    p.add_argument("--num-train", type=int, default=16)
    p.add_argument("--num-test", type=int, default=4)
    p.add_argument("--shape", type=int, nargs=3, default=[128, 128, 128], metavar=("Z", "Y", "X"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads (target: 2)")
    p.add_argument("--processes", type=int, default=2, help="synth/sample/preprocess workers")
    p.add_argument("--calibration-iterations", type=int, default=10)
    p.add_argument("--iterations-per-epoch", type=int, default=25)
    p.add_argument(
        "--schedule-margin",
        type=float,
        default=1.5,
        help="the schedule holds this many times the iterations the calibration predicts; "
        "training stops at the budget (the CPU is shared: the speed varies)",
    )
    p.add_argument("--tta", action="store_true", help="mirror TTA for both methods")
    p.add_argument(
        "--trace-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="TracingConfig override, e.g. --trace-set max_steps=300 (repeatable)",
    )
    p.add_argument("--work", type=Path, default=WORK / "vessels")
    p.add_argument(
        "--reuse-models",
        action="store_true",
        help="keep the data and models of the last run (its training.json); redo inference",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    work: Path = args.work.resolve()
    home = work / "home"
    logs = work / "logs"
    raw = home / "raw" / SOURCE
    env = {**os.environ, "VOXSEG_HOME": str(home), "OMP_NUM_THREADS": str(args.threads)}
    env.pop("VOXSEG_PREPROCESSED", None)
    shape = tuple(args.shape)
    budget_s = 60.0 * args.budget_minutes
    params = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    info = machine_info()
    stages: dict[str, float] = {}
    trainings: dict[str, dict] = {}

    if args.reuse_models:
        if not (work / "training.json").is_file():
            raise SystemExit(f"--reuse-models: no {work / 'training.json'}; run once without")
        previous = json.loads((work / "training.json").read_text())
        trainings, stages = previous["training"], previous["stages_s"]
    else:
        if work.exists():
            shutil.rmtree(work)
        logs.mkdir(parents=True)
        print(f"1. synth vessels → {raw}", flush=True)
        stages["synth"] = voxseg(
            "synth", "vessels", raw, "--num-train", args.num_train, "--num-test", args.num_test,
            "--shape", *shape, "--seed", args.seed, "--workers", args.processes,
            log=logs / "synth.log", env=env,
        )  # fmt: skip
        print("2. tracing: patches, plan, preprocess, train", flush=True)
        patches = home / "raw" / PATCHES
        stages["sample"] = voxseg(
            "vessels", "sample", raw, "-o", patches, "--num-processes", args.processes,
            log=logs / "sample.log", env=env,
        )  # fmt: skip
        for name, dataset in (("tracing", PATCHES), ("global", SOURCE)):
            if name == "global":
                print("3. global: plan, preprocess, train", flush=True)
            stages[f"plan_{name}"] = voxseg(
                "plan", dataset, "--device", "cpu", "-p", args.processes,
                log=logs / f"plan_{dataset}.log", env=env,
            )  # fmt: skip
            stages[f"preprocess_{name}"] = voxseg(
                "preprocess", dataset, "-c", CONFIG, "-p", args.processes,
                log=logs / f"preprocess_{dataset}.log", env=env,
            )  # fmt: skip
            t = train_for_budget(home, dataset, budget_s, args, env)
            trainings[name] = asdict(t)
            stages[f"train_{name}"] = t.calibration_s + t.wall_s
        (work / "training.json").write_text(
            json.dumps({"params": params, "training": trainings, "stages_s": stages}, indent=2)
        )

    models = home / "models"
    print("4. inference on the held-out trees", flush=True)
    start = time.perf_counter()
    results = run_tracing(
        raw,
        models / PATCHES / "default" / "budget",
        trainings["tracing"]["checkpoint"],
        work / "traced",
        args.tta,
        args.trace_set,
    )
    stages["infer_tracing"] = time.perf_counter() - start
    start = time.perf_counter()
    results += run_global(
        raw,
        models / SOURCE / "default" / "budget",
        trainings["global"]["checkpoint"],
        work / "global",
        args.tta,
    )
    stages["infer_global"] = time.perf_counter() - start

    summary = summarise(results)
    headers = ["method / case", *(h for _, h, _ in COLUMNS)]
    rows = table_rows(results, summary, shape)
    met = verdict(summary, shape)
    report = {
        "params": params,
        "machine": info,
        "training": trainings,
        "stages_s": stages,
        "targets": {**TARGETS, "seconds_this_shape": target_seconds(shape)},
        "tracing_meets": met,
        "summary": summary,
        "cases": [asdict(r) for r in results],
    }
    (work / "results.json").write_text(json.dumps(report, indent=2))
    cmd = "python benchmarks/vessels.py " + " ".join(sys.argv[1:] if argv is None else argv)
    training_lines = [
        f"- {name}: {t['epochs_done']}/{t['epochs']} epochs × {t['iterations_per_epoch']} "
        f"iterations ({t['seconds_per_iteration']:.2f} s/iteration) in {t['wall_s']:.0f} s, "
        f"patch {'×'.join(map(str, t['patch_size']))}, features {t['features']}"
        + (" (stopped at the deadline)" if t["stopped_at_deadline"] else "")
        for name, t in trainings.items()
    ]
    md = "\n".join(
        [
            f"## Vessel tracing vs global 3D model ({args.num_train} train / {args.num_test} "
            f"held-out trees, {'×'.join(map(str, shape))}, {args.budget_minutes:g} min "
            "training each)",
            "",
            f"`{cmd}`, {info['cpus']} CPUs (load {info['load_average_1m_at_start']:.1f} at "
            f"start), {args.threads} threads for inference, TTA {'on' if args.tta else 'off'}.",
            "",
            markdown(headers, rows),
            "",
            *training_lines,
            "",
            "Tracing meets: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in met.items()),
            "",
        ]
    )
    (work / "results.md").write_text(md)
    print()
    print(format_table(headers, rows))
    print()
    print("\n".join(training_lines))
    print("tracing meets: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in met.items()))
    print(f"written to {work / 'results.json'} and {work / 'results.md'}")


if __name__ == "__main__":
    main()
