"""Where tracing should win: large trees and a clinical-size CTA-like field, tracing beside a
global model trained for the same wall time.

    .venv/bin/python benchmarks/vessels_large.py                     # 256³ trees + 300×512×512
    .venv/bin/python benchmarks/vessels_large.py --quick             # tiny sizes, 1 min each

What runs, in a private workspace ``benchmarks/_work/vessels_large/home`` (``VOXSEG_HOME``),
every step as the ``voxseg`` command a user types:

1. ``voxseg synth vessels`` writes ``--num-train`` training trees and ``--num-test``
   held-out trees of ``--shape`` (256³; ``--levels`` of bifurcation, so the distal branches
   are a few voxels across), and one CTA-like field of ``--field`` (300×512×512) holding a
   target tree (its label, centerline and inlet seed), ``--other-trees`` unlabelled vessel
   trees that never touch it and ``--bright-structures`` bone-like plates and
   contrast-filled chambers (``distractors/``).
2. Tracing: the README's recipe — ``voxseg pipeline init vessels`` (the local patch rule)
   and ``voxseg pipeline train`` (centerline patches → plan → preprocess → train).
3. Global: ``voxseg plan --device cpu`` → ``voxseg preprocess -c 3d_fullres`` →
   ``voxseg train -c 3d_fullres --fold all --recipe adamw``.
   Both trainings get ``--train-minutes`` of wall time (the trainer's time budget,
   ``training.time_budget``), the adamw recipe and no validation; data preparation is
   timed apart.
4. Each held-out tree and the field: ``voxseg pipeline predict`` from the case's seed file
   (at the inlet: two radii into the trunk where it enters the image) and ``voxseg predict``
   (sliding window over the whole image), one fresh process per case and system, TTA as
   ``--tta`` says (off by default) for both. Measured per process: wall seconds (the whole
   command: start, read, predict or trace, write) and the peak memory of its process tree
   (RSS, polled every 50 ms; PSS every second), and its CPU seconds (user + system, from
   ``getrusage``: on a shared machine the comparable figure).
5. Scored against the target tree only: Dice; centerline overlap (share of the analytic
   centerline inside the prediction); distal branch recall
   (:func:`voxseg.vessels.distal_recall`: the share of the centerline length of the
   branches beyond the second bifurcation from the inlet — depth ≥ 2 in the branch graph —
   inside the prediction); false positives outside the tree: predicted voxels farther than
   ``FP_MARGIN_MM`` from the target's mask (mL), and the share of them on distractors
   (other vessels, plates, chambers, blobs) where the case has a distractor map.

One table prints both systems side by side (each cell ``tracing / global``); the targets of
issue 24 are checked below it; ``results.json`` and ``results.md`` go to ``--work``.
``--reuse`` keeps the data and models of the last run and redoes the predictions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from _common import WORK, format_table, machine_info, run_measured

TREES = "Dataset611_VesselsLarge"
FIELD = "Dataset612_VesselsCTA"
CONFIG = "3d_fullres"
GLOBAL_MODEL = "global"
FP_MARGIN_MM = 2.0  # a predicted voxel farther than this from the target tree is a false positive
TARGETS = {"overlap": 0.95, "memory_ratio": 1 / 3}  # issue 24 (its 128³ Dice gap: vessels.py)
QUICK = {
    "shape": [64, 64, 64],
    "field": [80, 160, 160],
    "levels": [2, 3],
    "num_train": 3,
    "num_test": 1,
    "other_trees": 2,
    "bright_structures": 4,
    "train_minutes": 1.0,
    "max_steps": 150,  # a 1-minute local model wanders; keep the smoke run short
}


@dataclass
class Case:
    """A case to predict and its references."""

    name: str  # the case id
    kind: str  # "tree" (held out) or "field" (the CTA-like field of view)
    image: Path
    label: Path
    centerline_vtp: Path
    centerline_json: Path
    seeds: Path  # the seed folder
    distractors: Path | None


@dataclass
class Scored:
    """One system on one case."""

    system: str
    case: str
    kind: str
    dice: float
    centerline_overlap: float
    distal_recall: float
    distal_length_mm: float
    fp_outside_ml: float
    fp_on_distractors: float  # share of the outside false positives on distractors (nan: no map)
    seconds: float  # wall seconds of the command
    cpu_seconds: float  # its CPU seconds (user + system; comparable on a loaded machine)
    peak_rss_mb: float
    peak_pss_mb: float | None
    shape: list[int]
    error: str | None = None  # why the command failed (scored as an empty prediction)


# --------------------------------------------------------------------------- commands


def voxseg(*args: object, log: Path, env: dict[str, str], check: bool = True):
    """Run ``voxseg ARGS`` (output to ``log``); the :class:`_common.Measured` result."""
    cmd = [sys.executable, "-m", "voxseg.cli", *map(str, args)]
    print("  $ voxseg " + " ".join(map(str, args)), flush=True)
    return run_measured(cmd, env=env, log=log, check=check)


def make_data(args: argparse.Namespace, home: Path, env: dict[str, str]) -> dict[str, float]:
    """The training and held-out trees, and the CTA-like field; seconds per step."""
    logs = home.parent / "logs"
    levels = f"levels=[{args.levels[0]},{args.levels[1]}]"
    trees = voxseg(
        "synth", "vessels", home / "raw" / TREES, "--num-train", args.num_train,
        "--num-test", args.num_test, "--shape", *args.shape, "--seed", args.seed,
        "--workers", args.processes, "--set", levels, log=logs / "synth_trees.log", env=env,
    )  # fmt: skip
    field = voxseg(
        "synth", "vessels", home / "raw" / FIELD, "--num-train", 1, "--num-test", 0,
        "--shape", *args.field, "--seed", args.seed + 1, "--set", levels,
        "--set", f"other_trees={args.other_trees}",
        "--set", f"bright_structures={args.bright_structures}",
        log=logs / "synth_field.log", env=env,
    )  # fmt: skip
    return {"synth_trees": trees.wall_s, "synth_field": field.wall_s}


def cases(home: Path) -> list[Case]:
    """The held-out trees, then the field."""
    out = []
    for kind, dataset, split in (("tree", TREES, "Ts"), ("field", FIELD, "Tr")):
        raw = home / "raw" / dataset
        for label in sorted((raw / f"labels{split}").glob("*.nii.gz")):
            case = label.name[: -len(".nii.gz")]
            distractors = raw / "distractors" / label.name
            out.append(
                Case(
                    case if kind == "tree" else "field",
                    kind,
                    raw / f"images{split}" / f"{case}_0000.nii.gz",
                    label,
                    raw / "centerlines" / f"{case}.vtp",
                    raw / "centerlines" / f"{case}.json",
                    raw / "seeds",
                    distractors if distractors.is_file() else None,
                )
            )
    return out


def budget_record(fold: Path) -> dict:
    """What the trainer's budget spent (``budget.json`` of a fold)."""
    path = fold / "budget.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; the training did not run with a time budget")
    record = json.loads(path.read_text())
    plans = json.loads((fold.parent / "plans.json").read_text())["configurations"][CONFIG]
    record["patch_size"] = plans["patch_size"]
    record["spacing"] = plans["spacing"]
    return record


def set_max_steps(pipe: Path, max_steps: int | None) -> None:
    """The tracer's step limit in the stage's tracing settings (``pipeline.json``)."""
    spec = json.loads((pipe / "pipeline.json").read_text())
    tracing = spec["stages"][0]["input"]["tracing"]
    if max_steps is None:
        tracing.pop("max_steps", None)
    else:
        tracing["max_steps"] = max_steps
    (pipe / "pipeline.json").write_text(json.dumps(spec, indent=2))


def recipe_settings(name: str) -> list[str]:
    """A training recipe (:data:`voxseg.training.recipes.RECIPES`) as ``--set`` values, for
    the pipeline's stage (``pipeline init`` has no ``--recipe``): what it changes from the
    defaults, so the global model's ``--recipe`` and the stage train alike."""
    from voxseg.training.recipes import RECIPES

    optimizer, schedule = RECIPES[name]
    return [
        f"{section}.{key}={json.dumps(value)}"
        for section, config in (("optimizer", optimizer), ("schedule", schedule))
        for key, value in config.model_dump(exclude_defaults=True).items()
    ]


def train_both(args: argparse.Namespace, home: Path, env: dict[str, str]) -> dict:
    """Tracing (the vessels recipe) and the global model, each with the same time budget."""
    logs = home.parent / "logs"
    raw = home / "raw" / TREES
    budget = round(60 * args.train_minutes)
    pipe = home.parent / "pipeline"
    common = [
        f"training.time_budget={budget}",
        "training.val_iterations=0",
        *recipe_settings("adamw"),
    ]
    print("2. tracing: voxseg pipeline init vessels + pipeline train", flush=True)
    sets = [x for s in common for x in ("--set", s)]
    voxseg(
        "pipeline", "init", "vessels", raw, pipe, "--device", args.device, *sets, "--force",
        log=logs / "pipeline_init.log", env=env,
    )  # fmt: skip
    tracing = voxseg(
        "pipeline", "train", pipe, raw, "--device", args.device,
        log=logs / "pipeline_train.log", env=env,
    )  # fmt: skip
    print("3. global: voxseg plan, preprocess, train --recipe adamw", flush=True)
    plan = voxseg(
        "plan", raw, "--device", args.device, "-p", args.processes, log=logs / "plan.log", env=env
    )
    pre = voxseg(
        "preprocess", raw, "-c", CONFIG, "-p", args.processes, log=logs / "preprocess.log", env=env
    )
    train = voxseg(
        "train", raw, "-c", CONFIG, "--fold", "all", "--model", GLOBAL_MODEL, "--recipe", "adamw",
        "--time-budget", f"{budget}s", "--device", args.device,
        "--set", "training.val_iterations=0", "--force", log=logs / "train_global.log", env=env,
    )  # fmt: skip
    tracing_fold = pipe / "stages" / "vessel" / "fold_all"
    global_fold = home / "models" / TREES / "default" / GLOBAL_MODEL / "fold_all"
    t, g = budget_record(tracing_fold), budget_record(global_fold)
    t["prepare_and_train_wall_s"] = tracing.wall_s
    t["peak_rss_mb"] = tracing.peak_rss_bytes / 2**20
    g["prepare_wall_s"] = plan.wall_s + pre.wall_s
    g["train_wall_s"] = train.wall_s
    g["peak_rss_mb"] = train.peak_rss_bytes / 2**20
    return {
        "budget_seconds": budget,
        "tracing": t,
        "global": g,
        "models": {"tracing": str(pipe), "global": str(global_fold.parent)},
    }


# --------------------------------------------------------------------------- prediction


def predict(system: str, case: Case, models: dict, out: Path, args, env) -> tuple:
    """One case with one system in a fresh process: ``(label map path or None, Measured,
    CPU seconds, error or None)``."""
    logs = out.parent / "logs"
    tta = "--tta" if args.tta else "--no-tta"
    if system == "tracing":
        cmd = [
            "pipeline", "predict", models["tracing"], case.image, out / system,
            "--seeds", case.seeds, "--device", args.device, tta, "--allow-short", "--overwrite",
        ]  # fmt: skip
    else:
        cmd = [
            "predict", "-i", case.image, "-o", out / system, "-m", models["global"],
            "--folds", "all", "--device", args.device, tta, "--overwrite",
        ]  # fmt: skip
    log = logs / f"predict_{system}_{case.name}.log"
    before = _children_cpu()
    measured = voxseg(*cmd, log=log, env=env, check=False)
    cpu_s = _children_cpu() - before
    stem = case.image.name[: -len("_0000.nii.gz")]
    prediction = out / system / f"{stem}.nii.gz"
    if measured.returncode:  # a failed case is scored as an empty prediction, with its reason
        lines = log.read_text(errors="replace").strip().splitlines()
        print(f"  {system} failed on {case.name} (exit {measured.returncode}), log {log}")
        return None, measured, cpu_s, lines[-1] if lines else f"exit {measured.returncode}"
    return prediction, measured, cpu_s, None


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def score(
    system: str, case: Case, prediction: Path | None, measured, cpu_s: float, error=None
) -> Scored:
    """Dice, centerline overlap, distal recall and false positives against the target tree
    (a failed case, ``prediction`` None, as an empty prediction)."""
    import numpy as np
    from scipy import ndimage

    from voxseg.io import read_image, read_vtp
    from voxseg.vessels import centerline_overlap, distal_recall, read_centerline_json

    truth_img = read_image(case.label)
    truth = np.asarray(truth_img.array) == 1
    if prediction is None:
        pred_img = truth_img.with_array(np.zeros(truth.shape, np.uint8))
    else:
        pred_img = read_image(prediction)
    pred = np.asarray(pred_img.array) > 0
    if pred.shape != truth.shape:
        raise SystemExit(f"{prediction}: shape {pred.shape} differs from {case.label}")
    dice = 2.0 * (pred & truth).sum() / max(pred.sum() + truth.sum(), 1)
    overlap = centerline_overlap(pred_img, read_vtp(case.centerline_vtp))
    distal = distal_recall(pred_img, read_centerline_json(case.centerline_json))
    outside = far_from(truth, truth_img.spacing, FP_MARGIN_MM, ndimage) & pred
    voxel_ml = float(np.prod(truth_img.spacing)) / 1000.0
    on_distractors = float("nan")
    if case.distractors is not None and outside.any():
        d = np.asarray(read_image(case.distractors).array) > 0
        on_distractors = float((outside & d).sum() / outside.sum())
    elif case.distractors is not None:
        on_distractors = 0.0
    pss = measured.peak_pss_bytes
    return Scored(
        system,
        case.name,
        case.kind,
        float(dice),
        overlap,
        distal["distal_recall"],
        distal["distal_length_mm"],
        float(outside.sum()) * voxel_ml,
        on_distractors,
        measured.wall_s,
        cpu_s,
        measured.peak_rss_bytes / 2**20,
        None if pss is None else pss / 2**20,
        list(truth.shape),
        error,
    )


def far_from(mask, spacing, margin_mm: float, ndimage):
    """Voxels farther than ``margin_mm`` from ``mask``: the distance transform runs on the
    mask's bounding box grown by the margin only (everything beyond it is far)."""
    import numpy as np

    far = np.ones(mask.shape, bool)
    if not mask.any():
        return far
    grow = [int(math.ceil(margin_mm / s)) + 1 for s in spacing]
    where = np.argwhere(mask)
    lo = np.maximum(where.min(0) - grow, 0)
    hi = np.minimum(where.max(0) + 1 + grow, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    far[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing) > margin_mm
    return far


# --------------------------------------------------------------------------- report

COLUMNS = [  # key, header, format
    ("dice", "Dice", "{:.3f}"),
    ("centerline_overlap", "CL overlap", "{:.3f}"),
    ("distal_recall", "distal recall", "{:.3f}"),
    ("fp_outside_ml", f"FP > {FP_MARGIN_MM:g} mm (mL)", "{:.2f}"),
    ("fp_on_distractors", "FP on distractors", "{:.0%}"),
    ("seconds", "s / case", "{:.0f}"),
    ("cpu_seconds", "CPU s / case", "{:.0f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def _fmt(fmt: str, value) -> str:
    return "n/a" if value is None or not math.isfinite(value) else fmt.format(value)


def table(results: list[Scored]) -> tuple[list[str], list[list[str]]]:
    """Rows per case (held-out trees, their mean, the field); cells ``tracing / global``."""
    by = {(r.system, r.case): r for r in results}
    names = list(dict.fromkeys(r.case for r in results))
    trees = [n for n in names if by[("tracing", n)].kind == "tree"]
    rows = []

    def row(label: str, pick) -> list[str]:
        cells = [label]
        for key, _, fmt in COLUMNS:
            cells.append(" / ".join(_fmt(fmt, pick(system, key)) for system in SYSTEMS))
        return cells

    for n in names:
        shape = "×".join(map(str, by[("tracing", n)].shape))
        rows.append(row(f"{n} ({shape})", lambda s, k, n=n: getattr(by[(s, n)], k)))
        if n == trees[-1] and len(trees) > 1:
            rows.append(
                row(
                    f"mean of {len(trees)} trees",
                    lambda s, k: _mean([getattr(by[(s, t)], k) for t in trees]),
                )
            )
    headers = ["case (tracing / global)", *(h for _, h, _ in COLUMNS)]
    return headers, rows


SYSTEMS = ("tracing", "global")


def verdict(results: list[Scored]) -> dict[str, object]:
    """Issue 24's targets: tracing's overlap from inlet seeds ≥ 0.95, distal recall ≥ the
    global model's, ≤ 1/3 of its peak memory on the field."""
    by = {(r.system, r.case): r for r in results}
    t_overlap = _mean([r.centerline_overlap for r in results if r.system == "tracing"])
    t_distal = _mean([r.distal_recall for r in results if r.system == "tracing"])
    g_distal = _mean([r.distal_recall for r in results if r.system == "global"])
    out: dict[str, object] = {
        "tracing_overlap_mean": t_overlap,
        "overlap_met": t_overlap >= TARGETS["overlap"],
        "distal_recall_tracing_global": [t_distal, g_distal],
        "distal_met": t_distal >= g_distal,
    }
    if ("tracing", "field") in by:
        ratio = by[("tracing", "field")].peak_rss_mb / by[("global", "field")].peak_rss_mb
        out["field_memory_ratio"] = ratio
        out["memory_met"] = ratio <= TARGETS["memory_ratio"]
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-minutes", type=float, default=8.0, help="training wall time each")
    p.add_argument("--num-train", type=int, default=6)
    p.add_argument("--num-test", type=int, default=2)
    p.add_argument("--shape", type=int, nargs=3, default=[256, 256, 256], metavar=("Z", "Y", "X"))
    p.add_argument("--field", type=int, nargs=3, default=[300, 512, 512], metavar=("Z", "Y", "X"))
    p.add_argument(
        "--levels", type=int, nargs=2, default=[4, 5], metavar=("LO", "HI"),
        help="levels of bifurcation of every tree (the generator stops at 1.3 voxels of radius)",
    )  # fmt: skip
    p.add_argument("--other-trees", type=int, default=4, help="unlabelled trees in the field")
    p.add_argument("--bright-structures", type=int, default=8, help="plates and chambers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads per process")
    p.add_argument("--processes", type=int, default=2, help="synth/plan/preprocess workers")
    p.add_argument("--device", default="cpu", help="cpu (the target) or cuda: plan, train, predict")
    p.add_argument("--tta", action="store_true", help="mirror TTA for both systems")
    p.add_argument(
        "--max-steps", type=int, default=None,
        help="the tracer's step limit (default: TracingConfig's); --quick: 150",
    )  # fmt: skip
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes and 1 minute each (a smoke run)"
    )
    p.add_argument("--work", type=Path, default=None, help="default benchmarks/_work/vessels_large")
    p.add_argument("--reuse", action="store_true", help="keep data and models; predict again")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.work is None:
        args.work = WORK / ("vessels_large_quick" if args.quick else "vessels_large")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    work: Path = args.work.resolve()
    home = work / "home"
    env = {**os.environ, "VOXSEG_HOME": str(home), "OMP_NUM_THREADS": str(args.threads)}
    env.pop("VOXSEG_PREPROCESSED", None)
    params = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    info = machine_info()
    state = work / "training.json"
    if args.reuse:
        if not state.is_file():
            raise SystemExit(f"--reuse: no {state}; run once without")
        previous = json.loads(state.read_text())
        stages, training = previous["stages_s"], previous["training"]
    else:
        if work.exists():
            shutil.rmtree(work)
        (work / "logs").mkdir(parents=True)
        print(f"1. synth vessels: trees {'×'.join(map(str, args.shape))}, field "
              f"{'×'.join(map(str, args.field))}", flush=True)  # fmt: skip
        stages = make_data(args, home, env)
        training = train_both(args, home, env)
        state.write_text(json.dumps({"params": params, "stages_s": stages, "training": training}))

    set_max_steps(Path(training["models"]["tracing"]), args.max_steps)
    print("4. predict each case in a fresh process", flush=True)
    out = work / "predictions"
    results = []
    for case in cases(home):
        for system in SYSTEMS:
            prediction, measured, cpu_s, error = predict(
                system, case, training["models"], out, args, env
            )
            r = score(system, case, prediction, measured, cpu_s, error)
            print(
                f"  {system:7s} {case.name}: Dice {r.dice:.3f}, overlap {r.centerline_overlap:.3f}"
                f", distal {r.distal_recall:.3f}, FP {r.fp_outside_ml:.2f} mL, {r.seconds:.0f} s "
                f"({r.cpu_seconds:.0f} CPU s), "
                f"peak {r.peak_rss_mb:.0f} MB",
                flush=True,
            )
            results.append(r)

    headers, rows = table(results)
    met = verdict(results)
    text = format_table(headers, rows)
    cmd = "python benchmarks/vessels_large.py " + " ".join(sys.argv[1:] if argv is None else argv)
    t, g = training["tracing"], training["global"]
    notes = [
        f"training budget {training['budget_seconds']} s each: tracing spent "
        f"{t['spent_seconds']:.0f} s ({t['epochs']} epochs × {t['iterations_per_epoch']}, patch "
        f"{'×'.join(map(str, t['patch_size']))}), global {g['spent_seconds']:.0f} s "
        f"({g['epochs']} epochs × {g['iterations_per_epoch']}, patch "
        f"{'×'.join(map(str, g['patch_size']))})",
        f"data preparation: tracing's patches + plan + preprocess + training "
        f"{t['prepare_and_train_wall_s']:.0f} s in all; global plan + preprocess "
        f"{g['prepare_wall_s']:.0f} s",
        f"{info['cpus']} CPUs, load {info['load_average_1m_at_start']:.1f} at start, "
        f"{args.threads} threads per process, TTA {'on' if args.tta else 'off'}",
        "targets (tracing): overlap ≥ 0.95 "
        f"{'met' if met['overlap_met'] else 'missed'}, distal recall ≥ global's "
        f"{'met' if met['distal_met'] else 'missed'}"
        + (
            f", field peak memory ratio {met['field_memory_ratio']:.2f} (≤ 0.33 "
            f"{'met' if met['memory_met'] else 'missed'})"
            if "field_memory_ratio" in met
            else ""
        ),
    ]
    notes += [f"{r.system} failed on {r.case}: {r.error}" for r in results if r.error]
    report = {
        "command": cmd,
        "params": params,
        "machine": info,
        "stages_s": stages,
        "training": training,
        "targets": TARGETS,
        "verdict": met,
        "cases": [asdict(r) for r in results],
    }
    (work / "results.json").write_text(json.dumps(report, indent=2))
    md_rows = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    md_rows += ["| " + " | ".join(r) + " |" for r in rows]
    (work / "results.md").write_text("\n".join([f"`{cmd}`", "", *md_rows, "", *notes, ""]))
    print()
    print(text)
    print()
    print("\n".join(notes))
    print(f"written to {work / 'results.json'} and {work / 'results.md'}")
    return report


if __name__ == "__main__":
    main()
