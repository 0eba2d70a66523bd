"""What loses generalisation on short budgets: voxseg's CPU training step of ``voxseg auto``
(plan for the CPU, ``--recipe adamw``, ``--time-budget``, fold 0) with one change at a time, on
``real_anatomy.py``'s tasks, scored on their held-out cases.

    python benchmarks/real_anatomy_variants.py --task 2d --train-seconds 240 \\
        --variants control base16 base32

Every variant gets the same training wall time (``--train-seconds``, the time ``voxseg auto
--time-budget 5m`` gives its training on these tasks) on the same cores; planning and
preprocessing are not timed here. On a shared machine, where wall time is not a fair
measure, ``--epochs E --iterations N`` trains every variant for the same fixed schedule
instead (e.g. the epochs × iterations a ``voxseg auto`` run fixed from its budget), and
``--lowres-gflops G`` plans the whole-image stage as ``auto`` did for that training time.
``control`` is what ``voxseg auto`` trains today; the others change one thing (``VARIANTS``:
extra ``voxseg plan`` flags, extra ``voxseg train --set`` overrides). Writes
``benchmarks/_work/real_anatomy/variants_<task>.json``; each run's logs are under
``benchmarks/_work/real_anatomy/variants/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import format_table, machine_info, run_measured
from auto_vs_nnunet import _fmt, _fresh, _voxseg, _write_json, score
from real_anatomy import OUT, TASKS, prepare

#: name: (voxseg plan flags, voxseg train --set overrides, what it tests)
VARIANTS: dict[str, tuple[list[str], list[str], str]] = {
    "control": ([], [], "voxseg auto's training today"),
    # a wider network at the planner's FLOP budget also gets a smaller patch
    "base16": (["--base-features", "16"], [], "2x wider network (16 first-stage features)"),
    "base32": (["--base-features", "32"], [], "4x wider network (nnU-Net's 32 features)"),
    "patch96": (["--patch-size", "96x80"], [], "base16's smaller patch at the default width"),
    "base16full": (
        ["--base-features", "16", "--patch-size", "160x160"],
        [],
        "16 features at the default patch (4x the FLOPs per iteration)",
    ),
    "lowres10": (["--cpu-lowres-gflops", "10"], [], "3D: whole-image stage at 10 GFLOP/it"),
    "lowres5": (["--cpu-lowres-gflops", "5"], [], "3D: whole-image stage at 5 GFLOP/it"),
    "lowres40": (["--cpu-lowres-gflops", "40"], [], "3D: whole-image stage at 40 GFLOP/it"),
    "fullres20": (
        ["--cpu-gflops", "20"],
        [],
        "3D: 3d_fullres patches at 20 GFLOP/it instead of the whole image at 3d_lowres",
    ),
    "nodecay": ([], ["optimizer.weight_decay=0"], "no weight decay"),
    "wd1e-2": ([], ["optimizer.weight_decay=0.01"], "weight decay 1e-2 (AdamW's usual)"),
    "spatial05": (
        [],
        ["augmentation.rotation.p=0.5", "augmentation.scaling.p=0.5"],
        "rotation and scaling on half the samples (nnU-Net: 0.2 each)",
    ),
    "elastic": ([], ["augmentation.elastic.p=0.2"], "elastic deformation, p 0.2"),
    "strongaug": (
        [],
        [
            "augmentation.rotation.p=0.5",
            "augmentation.scaling.p=0.5",
            "augmentation.elastic.p=0.2",
        ],
        "rotation and scaling on half the samples, elastic on a fifth",
    ),
    "swa25": (
        [],
        ["training.average_last=0.25"],
        "export the mean weights of the last 25 % of epochs",
    ),
    "nods": ([], ["network.deep_supervision=false"], "no deep supervision"),
    "nott": ([], ["prediction.tta=false"], "no flip test-time augmentation"),
    # a fixed peak: the short-run rule (the adamw recipe's schedule.short_run_iterations)
    # would otherwise raise an explicit lr too
    "lr1e-3": (
        [],
        ["schedule.short_run_iterations=null"],
        "AdamW peak 1e-3 whatever the run's length (the recipe before the short-run rule)",
    ),
    "lr2e-3": (
        [],
        ["optimizer.lr=0.002", "schedule.short_run_iterations=null"],
        "AdamW peak learning rate 2e-3",
    ),
    "lr3e-3": (
        [],
        ["optimizer.lr=0.003", "schedule.short_run_iterations=null"],
        "AdamW peak learning rate 3e-3",
    ),
    "batchdice": ([], ["loss.batch_dice=true"], "Dice over the batch (nnU-Net's 3d_fullres)"),
    "nospatial": (
        [],
        ["augmentation.rotation.p=0", "augmentation.scaling.p=0"],
        "no rotation or scaling",
    ),
}
#: variants that train another configuration than the task's (``configuration`` in main)
CONFIGURATION = {"fullres20": "3d_fullres"}


def _log(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, flush=True)


def run_variant(
    configuration: str,
    name: str,
    raw: Path,
    seconds: float,
    work: Path,
    schedule: tuple[int, int] | None = None,
    lowres_gflops: float | None = None,
) -> dict:
    """One variant; ``schedule`` (epochs, iterations) replaces the time budget."""
    plan_flags, sets, _ = VARIANTS[name]
    if lowres_gflops is not None and "--cpu-lowres-gflops" not in plan_flags:
        plan_flags = [*plan_flags, "--cpu-lowres-gflops", f"{lowres_gflops:g}"]
    home = work / "voxseg_home"
    logs = _fresh(work / name / "logs")
    plan = f"v_{name}"
    common = ["--home", home]
    run_measured(
        [*_voxseg(), "plan", raw, "--device", "cpu", "--plan-name", plan, *plan_flags, "--force"]
        + common,
        log=logs / "plan.log",
    )
    run_measured(
        [*_voxseg(), "preprocess", raw, "--plan", plan, "-c", configuration, *common],
        log=logs / "preprocess.log",
    )
    train = [*_voxseg(), "train", raw, "-c", configuration, "-p", plan, "--fold", "0"]
    train += ["--recipe", "adamw", "--device", "cpu", "--force"]
    if schedule is None:
        train += ["--time-budget", f"{seconds:g}s"]
    else:
        train += ["--epochs", str(schedule[0]), "--iterations", str(schedule[1])]
    for s in sets:
        train += ["--set", s]
    trained = run_measured(train + common, log=logs / "train.log")
    model = home / "models" / raw.name / plan / configuration
    pred = _fresh(work / name / "pred")
    predicted = run_measured(
        [*_voxseg(), "predict", "-i", raw / "imagesTs", "-o", pred, "-m", model, "--device", "cpu"],
        log=logs / "predict.log",
    )
    if schedule is None:
        budget = json.loads((model / "fold_0" / "budget.json").read_text())
    else:
        budget = {"epochs": schedule[0], "iterations_per_epoch": schedule[1]}
    return {
        "variant": name,
        "train_seconds": trained.wall_s,
        "predict_seconds": predicted.wall_s,
        "budget": budget,
        **score(pred, raw),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=list(TASKS), default="2d")
    parser.add_argument(
        "--raw",
        type=Path,
        default=None,
        help="another raw dataset instead of --task's (e.g. a phantom set, for the check that"
        " a change does not regress there); --task then names only its kind (2d or 3d)",
    )
    parser.add_argument("--train-seconds", type=float, default=240.0)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["control"])
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="with --iterations: a fixed schedule for every variant instead of --train-seconds",
    )
    parser.add_argument("--iterations", type=int, default=None, help="iterations per epoch")
    parser.add_argument(
        "--lowres-gflops",
        type=float,
        default=None,
        help="plan the whole-image 3d_lowres at this many GFLOP per iteration (what auto chose)",
    )
    args = parser.parse_args()
    if (args.epochs is None) != (args.iterations is None):
        parser.error("--epochs and --iterations go together")
    schedule = (args.epochs, args.iterations) if args.epochs is not None else None
    raw = args.raw.resolve() if args.raw else prepare(args.task)
    configuration = "2d" if args.task == "2d" else "3d_lowres"  # what auto trains on a CPU
    tag = args.task if args.raw is None else raw.name
    length = f"{args.train_seconds:g}s" if schedule is None else f"{schedule[0]}x{schedule[1]}it"
    work = OUT / "variants" / f"{tag}_{length}"
    out = OUT / f"variants_{tag}.json"
    results = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    results.update(machine=machine_info())
    command = " ".join(["python", "benchmarks/real_anatomy_variants.py", *sys.argv[1:]])
    rows = []
    for name in args.variants:
        _log(f"{args.task}: {name} ({VARIANTS[name][2]}) ...")
        r = run_variant(
            CONFIGURATION.get(name, configuration),
            name,
            raw,
            args.train_seconds,
            work,
            schedule,
            args.lowres_gflops,
        )
        r.update(command=command, task=tag, when=time.strftime("%Y-%m-%d %H:%M"))
        results["runs"].append(r)
        _write_json(out, results)
        _log(f"  mean Dice {r['mean_dice']:.3f}")
        rows.append(r)
    labels = list(rows[0]["dice"])
    head = ["variant", "train s", "epochs × it", "mean Dice", *labels, "what"]
    body = [
        [
            r["variant"],
            _fmt(r["train_seconds"], 0),
            f"{r['budget'].get('epochs')} × {r['budget'].get('iterations_per_epoch')}",
            _fmt(r["mean_dice"]),
            *(_fmt(r["dice"].get(lab)) for lab in labels),
            VARIANTS[r["variant"]][2],
        ]
        for r in rows
    ]
    what = f"{args.train_seconds:g} s" if schedule is None else f"{schedule[0]} × {schedule[1]} it"
    print(f"\n{tag}, {what} of training\n" + format_table(head, body))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
