"""A model in M minutes: ``voxseg auto --time-budget M`` beside nnU-Net v2 given the same
wall-clock budget on the same cores, both scored on the same held-out cases.

    python benchmarks/auto_vs_nnunet.py                                  # both datasets, 15 min
    python benchmarks/auto_vs_nnunet.py --minutes 5 15 45 --dataset organs   # the curve
    python benchmarks/auto_vs_nnunet.py --minutes 2 --num-train 6 --num-test 2 \\
        --shape 16 48 48 --shape-2d 64 64 --smoke-iterations 5           # a check of the script

Datasets (``--dataset organs|2d|both``), generated once by ``voxseg synth`` in nnU-Net v2 raw
format and read by both tools from the same folder (``nnUNet_raw``; no conversion is needed,
and nnU-Net's ``--verify_dataset_integrity`` checks it):

* ``organs``: ``voxseg synth organs``, 24 training + 6 held-out phantoms (CT-like, three
  organs, varying spacing and orientation), default shape 48×96×96 (``--shape``).
* ``2d``: ``voxseg synth rgb2d``, 40 + 10 RGB PNG images of thin curvilinear structures,
  256×256 (``--shape-2d``), nnU-Net's natural-image 2D convention.

For each dataset and each budget M (``--minutes``, several values print the curve), the two
systems run one after the other on the machine's cores, each from a fresh workspace:

* **voxseg**: ``voxseg auto RAW --time-budget M --device cpu --home WORK`` (check, plan,
  preprocess, train, model selection and post-processing, all inside its budget), then
  ``voxseg predict -i RAW/imagesTs -m WORK/models/<dataset>/auto --device cpu``.
* **nnU-Net v2** (in ``benchmarks/.venv-nnunet``): its clock starts with
  ``nnUNetv2_plan_and_preprocess -d ID -c C --verify_dataset_integrity`` (C = ``3d_fullres``
  for 3D, ``2d`` for 2D: nnU-Net's default configuration; its planning counts, as
  voxseg's does), then trains fold 0 of its own 5-fold split (80 % of the training cases,
  as voxseg's held-out split) with its default plan and its default ``nnUNetTrainer`` (SGD
  + poly, 250 iterations per epoch, its augmentation and data loading) until the deadline,
  then ``nnUNetv2_predict -d ID -c C -f 0 -device cpu`` on ``imagesTs`` (its defaults: mirroring
  TTA on).

How nnU-Net's training is fitted to the budget (the driver ``_nnunet_train`` below, run by
the nnU-Net environment's Python through nnU-Net's public API; nothing of nnU-Net is
modified or copied). nnU-Net has no time budget; its own short-training variants
(``nnUNetTrainer_5epochs``, ``_10epochs``, ...) only lower ``num_epochs``, and the poly
learning rate then decays over that many epochs. The driver does the same with the epoch
count that fits:

1. An ``nnUNetTrainer`` built as ``nnUNetv2_train D C 0 -device cpu`` builds it
   (``nnunetv2.run.run_training.get_trainer_from_args``: its plans and dataset.json), with
   ``num_epochs = 1``, runs its first epoch (``run_training``), which is measured: start-up
   (dataset, loader workers) and the epoch with its validation iterations and checkpoint.
2. With the time left, ``N = 1 + ⌊(left - start-up) / epoch⌋`` epochs fit. A second
   ``nnUNetTrainer`` with ``num_epochs = N`` continues from the first one's
   ``checkpoint_final.pth`` (``maybe_load_checkpoint``, the path of ``nnUNetv2_train --c``:
   weights, optimizer state, epoch counter), so its poly schedule runs over all N epochs and
   reaches zero at the end. The first epoch is the same as in an N-epoch run (poly's
   learning rate at epoch 0 is the initial one for every N); only the data loader workers
   are started afresh.
3. A guard stops training at the deadline if an epoch runs longer than measured (or the
   first epoch alone does not fit: on a CPU one 250-iteration 3D epoch can outlast a
   short budget); the weights at that step are saved as ``checkpoint_final.pth`` by the
   trainer's own ``on_train_end``. The JSON says how many epochs and iterations were run
   and whether the guard stopped it.

nnU-Net's full-case validation of the fold (``perform_actual_validation``) is skipped: it
serves only its post-processing and configuration selection, which the single-fold default
run does not use, and skipping it leaves nnU-Net more of the budget. Torch threads: the
machine's cores, as ``nnUNetv2_train -device cpu`` sets them; augmentation workers:
nnU-Net's default (``nnUNet_n_proc_DA``, capped at the cores) unless ``--nnunet-da-workers``.
Planning and preprocessing processes: each tool's default (nnU-Net: 8 for the fingerprint,
4 for ``3d_fullres``, 8 for ``2d``, whatever the cores) unless ``--processes N`` gives both N.

Scoring: both prediction folders are evaluated by ``voxseg.evaluation.evaluate_folder``
against ``RAW/labelsTs`` (the same references and labels), foreground mean Dice and Dice per
label. Prediction time is reported but not counted in the budget (for either system). The
table per dataset and budget: wall time of the budgeted part (voxseg: the whole ``auto``
command; nnU-Net: planning + training), the setup inside it (voxseg: check, plan and
preprocess; nnU-Net: ``plan_and_preprocess``), the Dice, prediction seconds for the held-out
cases and what was trained; then the differences and ratios. With several budgets a last
table gives the curve.

Writes ``benchmarks/_work/auto_vs_nnunet/results.json`` (and every run's logs and outputs
under ``benchmarks/_work/auto_vs_nnunet/``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from _common import (  # benchmarks/_common.py (the script's folder)
    VENV,
    WORK,
    ensure_nnunet_venv,
    format_table,
    machine_info,
    nnunet_env,
    run_measured,
)

OUT = WORK / "auto_vs_nnunet"
HERE = Path(__file__).resolve()
DATASETS = {
    # key: (synth kind, nnU-Net id, dataset name, nnU-Net configuration)
    "organs": ("organs", 601, "Dataset601_Organs", "3d_fullres"),
    "2d": ("rgb2d", 602, "Dataset602_Rgb2d", "2d"),
}
DEFAULT_CASES = {"organs": (24, 6), "2d": (40, 10)}


# ------------------------------------------------------------------ runs inside nnU-Net's venv


class _Deadline(Exception):
    """Raised by the guard inside a training or validation step once the deadline passed."""


def _nnunet_train(argv: list[str]) -> None:
    """(nnU-Net venv) Train fold ``--fold`` with nnU-Net's default trainer until ``--deadline``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--configuration", required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--deadline", type=float, required=True, help="time.time() to stop at")
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--iterations-per-epoch", type=int, default=None)
    args = parser.parse_args(argv)

    import torch
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    torch.set_num_threads(os.cpu_count() or 1)  # what nnUNetv2_train -device cpu does
    stats: dict = {"threads": torch.get_num_threads(), "phases": []}
    steps = {"train": 0, "val": 0}

    def trainer(num_epochs: int, continue_training: bool) -> nnUNetTrainer:
        """``nnUNetTrainer`` built as ``nnUNetv2_train`` builds it (plans, dataset.json),
        with ``num_epochs`` set before its optimizer and poly schedule are made."""
        t = get_trainer_from_args(
            args.dataset,
            args.configuration,
            args.fold,
            "nnUNetTrainer",
            "nnUNetPlans",
            continue_training,
            device=torch.device("cpu"),
        )
        assert type(t) is nnUNetTrainer
        t.num_epochs = num_epochs
        if args.iterations_per_epoch:  # smoke tests of this script only
            t.num_iterations_per_epoch = args.iterations_per_epoch
            t.num_val_iterations_per_epoch = max(1, args.iterations_per_epoch // 5)
        for name, key in (("train_step", "train"), ("validation_step", "val")):
            step = getattr(t, name)

            def guarded(batch, step=step, key=key):
                if time.time() >= args.deadline:
                    raise _Deadline
                steps[key] += 1
                return step(batch)

            setattr(t, name, guarded)  # this instance only
        return t

    def run(t: nnUNetTrainer) -> bool:
        """``run_training``; True when the guard stopped it (weights saved as final)."""
        try:
            t.run_training()
            return False
        except _Deadline:
            t.on_train_end()  # saves checkpoint_final.pth, stops the loader workers
            return True

    def write() -> None:
        stats["iterations"] = steps["train"]
        stats["validation_iterations"] = steps["val"]
        args.stats.write_text(json.dumps(stats, indent=2))

    tic = time.time()
    first = trainer(1, continue_training=False)
    stats["iterations_per_epoch"] = first.num_iterations_per_epoch
    stats["validation_iterations_per_epoch"] = first.num_val_iterations_per_epoch
    stopped = run(first)
    toc = time.time()
    started = first.logger.get_checkpoint().get("epoch_start_timestamps") or [toc]
    startup = started[0] - tic
    epoch = toc - started[0]
    stats["phases"].append({"num_epochs": 1, "seconds": toc - tic, "stopped_at_deadline": stopped})
    stats.update(startup_seconds=startup, stopped_at_deadline=stopped)
    if not stopped:
        stats["first_epoch_seconds"] = epoch
    epochs = 1 if not stopped else 0
    if not stopped:
        fit = int((args.deadline - time.time() - startup) // epoch)
        stats["epochs_that_fit"] = 1 + max(fit, 0)
        if fit >= 1:
            second = trainer(1 + fit, continue_training=True)
            maybe_load_checkpoint(second, True, False)  # nnUNetv2_train --c: checkpoint_final
            tic = time.time()
            stopped = run(second)
            epochs = second.current_epoch
            stats["phases"].append(
                {
                    "num_epochs": 1 + fit,
                    "seconds": time.time() - tic,
                    "stopped_at_deadline": stopped,
                }
            )
            stats["stopped_at_deadline"] = stopped
    stats["epochs_completed"] = epochs
    write()


# ------------------------------------------------------------------ runs in voxseg's env


def _log(text: str) -> None:
    print(text, flush=True)


def _write_json(path: Path, data: object) -> None:
    """Atomic JSON write (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def prepare(key: str, args: argparse.Namespace) -> Path:
    """The raw dataset folder for ``key`` (generated once per setting, reused after)."""
    kind, _, name, _ = DATASETS[key]
    num_train = args.num_train or DEFAULT_CASES[key][0]
    num_test = args.num_test or DEFAULT_CASES[key][1]
    shape = args.shape if key == "organs" else ([1, *args.shape_2d] if args.shape_2d else None)
    tag = f"{key}_{num_train}+{num_test}" + (f"_{'x'.join(map(str, shape))}" if shape else "")
    tag += f"_seed{args.seed}" if args.seed else ""
    nn_raw = OUT / "data" / tag
    raw = nn_raw / name
    if (raw / "dataset.json").is_file():
        _log(f"{key}: reusing {raw}")
        return raw
    cmd = [
        *_voxseg(),
        "synth",
        kind,
        raw,
        "--num-train",
        num_train,
        "--num-test",
        num_test,
        "--seed",
        args.seed,
        "--overwrite",
    ]
    if shape:
        cmd += ["--shape", *shape]
    _log(f"{key}: generating {num_train} + {num_test} cases in {raw}")
    run_measured(cmd, log=nn_raw / "synth.log")
    return raw


def _voxseg() -> list[str]:
    return [str(Path(sys.executable).with_name("voxseg"))]


def score(pred: Path, raw: Path) -> dict:
    """Foreground mean Dice and Dice per label of ``pred`` against ``raw/labelsTs``."""
    from voxseg.evaluation import evaluate_folder

    summary = evaluate_folder(pred, raw / "labelsTs", dataset=raw, surface=False)
    if summary.get("references_without_prediction"):
        missing = ", ".join(summary["references_without_prediction"])
        raise SystemExit(f"{pred}: no prediction for {missing}")
    return {
        "mean_dice": summary["foreground_mean"]["dice"],
        "dice": {label: m["dice"] for label, m in summary["mean"].items()},
        "cases": summary["num_cases"],
    }


def run_voxseg(raw: Path, minutes: float, work: Path, processes: int | None) -> dict:
    home = _fresh(work / "voxseg_home")
    logs = work / "logs"
    budget = f"{round(minutes * 60)}s"
    auto = [*_voxseg(), "auto", raw, "--time-budget", budget, "--device", "cpu", "--home", home]
    if processes is not None:
        auto += ["--num-processes", processes]
    auto = run_measured(auto, log=logs / "voxseg_auto.log")
    model = home / "models" / raw.name / "auto"
    pred = _fresh(work / "voxseg_pred")
    predict = run_measured(
        [*_voxseg(), "predict", "-i", raw / "imagesTs", "-o", pred, "-m", model, "--device", "cpu"],
        log=logs / "voxseg_predict.log",
    )
    summary = json.loads((model / "summary.json").read_text())
    return {
        "system": "voxseg auto",
        "wall_seconds": auto.wall_s,
        "predict_seconds": predict.wall_s,
        "peak_rss_bytes": auto.peak_rss_bytes,
        "auto_summary": summary,
        **score(pred, raw),
    }


def run_nnunet(
    spec: tuple[int, str, str], raw: Path, minutes: float, work: Path, args: argparse.Namespace
) -> dict:
    """nnU-Net v2 on ``raw`` for ``minutes``; ``spec``: (dataset id, dataset name, configuration).

    ``args`` gives ``processes``, ``nnunet_da_workers`` and ``smoke_iterations``."""
    dataset_id, name, configuration = spec
    base = _fresh(work / "nnunet")
    env = nnunet_env(raw.parent, base / "preprocessed", base / "results")
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    if args.nnunet_da_workers is not None:
        env["nnUNet_n_proc_DA"] = str(args.nnunet_da_workers)
    logs = work / "logs"
    start = time.time()
    deadline = start + minutes * 60
    plan = run_measured(
        [
            VENV / "bin" / "nnUNetv2_plan_and_preprocess",
            "-d",
            dataset_id,
            "-c",
            configuration,
            "--verify_dataset_integrity",
            *([] if args.processes is None else ["-np", args.processes, "-npfp", args.processes]),
        ],
        env=env,
        log=logs / "nnunet_plan_and_preprocess.log",
    )
    stats_file = base / "train_stats.json"
    train = run_measured(
        [
            VENV / "bin" / "python",
            HERE,
            "_nnunet_train",
            "--dataset",
            name,
            "--configuration",
            configuration,
            "--deadline",
            repr(deadline),
            "--stats",
            stats_file,
            *(["--iterations-per-epoch", args.smoke_iterations] if args.smoke_iterations else []),
        ],
        env=env,
        log=logs / "nnunet_train.log",
    )
    wall = time.time() - start
    pred = _fresh(work / "nnunet_pred")
    predict = run_measured(
        [
            VENV / "bin" / "nnUNetv2_predict",
            "-i",
            raw / "imagesTs",
            "-o",
            pred,
            "-d",
            dataset_id,
            "-c",
            configuration,
            "-f",
            "0",
            "-device",
            "cpu",
        ],
        env=env,
        log=logs / "nnunet_predict.log",
    )
    return {
        "system": f"nnU-Net v2 {configuration}",
        "wall_seconds": wall,
        "plan_and_preprocess_seconds": plan.wall_s,
        "train_seconds": train.wall_s,
        "predict_seconds": predict.wall_s,
        "peak_rss_bytes": max(plan.peak_rss_bytes, train.peak_rss_bytes),
        "training": json.loads(stats_file.read_text()),
        **score(pred, raw),
    }


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _auto_run(run: dict) -> str:
    """``3d_lowres 12 ep / 600 it`` for one run of ``voxseg auto``'s summary."""
    b = run.get("budget") or {}
    if "epochs" not in b:
        return str(run.get("configuration"))
    iterations = b["epochs"] * b.get("iterations_per_epoch", 0)
    return f"{run.get('configuration')} {b['epochs']} ep / {iterations} it"


def table(key: str, minutes: float, rows: list[dict]) -> str:
    labels = list(rows[0]["dice"])
    head = ["system", "budget min", "wall min", "setup min", "mean Dice", *labels, "predict s"]
    head.append("trained")
    body, setups = [], []
    for r in rows:
        if "training" in r:
            t = r["training"]
            trained = f"{t['epochs_completed']} ep / {t['iterations']} it"
            if t.get("stopped_at_deadline"):
                trained += " (deadline)"
            setup = r["plan_and_preprocess_seconds"]
        else:
            trained = ", ".join(map(_auto_run, r["auto_summary"].get("runs", [])))
            setup = r["auto_summary"].get("steps_seconds", {}).get("preprocess")
        setups.append(setup)
        body.append(
            [
                r["system"],
                f"{minutes:g}",
                _fmt(r["wall_seconds"] / 60, 2),
                _fmt(setup and setup / 60, 2),
                _fmt(r["mean_dice"]),
                *(_fmt(r["dice"].get(label)) for label in labels),
                _fmt(r["predict_seconds"], 1),
                trained,
            ]
        )
    v, n = rows
    body.append(
        [
            "voxseg − nnU-Net",
            "",
            "",
            "",
            f"{v['mean_dice'] - n['mean_dice']:+.3f}",
            *(f"{v['dice'][lab] - n['dice'][lab]:+.3f}" for lab in labels),
            "",
            "",
        ]
    )
    setup_ratio = _fmt(setups[0] / setups[1], 2) if all(setups) else "-"
    body.append(
        [
            "ratio voxseg / nnU-Net",
            "",
            _fmt(v["wall_seconds"] / n["wall_seconds"], 2),
            setup_ratio,
            _fmt(v["mean_dice"] / n["mean_dice"], 2) if n["mean_dice"] else "-",
            *("" for _ in labels),
            _fmt(v["predict_seconds"] / n["predict_seconds"], 2),
            "",
        ]
    )
    return f"\n{key}, {minutes:g} min\n" + format_table(head, body)


def curve_table(runs: list[dict], key: str) -> str:
    """Every (voxseg, nnU-Net) pair of ``runs``, one row per ``key`` and budget."""
    curve = [
        [
            r[key],
            f"{r['minutes']:g}",
            _fmt(r["results"][0]["mean_dice"]),
            _fmt(r["results"][1]["mean_dice"]),
            f"{r['results'][0]['mean_dice'] - r['results'][1]['mean_dice']:+.3f}",
        ]
        for r in runs
    ]
    heads = [key, "budget min", "voxseg Dice", "nnU-Net Dice", "difference"]
    return "all runs (held-out foreground mean Dice)\n" + format_table(heads, curve)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_nnunet_train":
        _nnunet_train(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["organs", "2d", "both"], default="both")
    parser.add_argument("--minutes", type=float, nargs="+", default=[15.0], help="budgets")
    parser.add_argument("--num-train", type=int, default=None, help="default: organs 24, 2d 40")
    parser.add_argument("--num-test", type=int, default=None, help="default: organs 6, 2d 10")
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="organs Z Y X")
    parser.add_argument("--shape-2d", type=int, nargs=2, default=None, help="2d Y X")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed")
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="planning/preprocessing processes of both (voxseg auto -p, nnU-Net -np and -npfp;"
        " default: each tool's own)",
    )
    parser.add_argument(
        "--nnunet-da-workers", type=int, default=None, help="nnUNet_n_proc_DA (default: its own)"
    )
    parser.add_argument(
        "--smoke-iterations",
        type=int,
        default=None,
        help="testing this script only: nnU-Net epochs of this many iterations instead of its"
        " default 250 (the results are then not nnU-Net's default trainer)",
    )
    args = parser.parse_args()

    ensure_nnunet_venv()
    keys = ["organs", "2d"] if args.dataset == "both" else [args.dataset]
    results: dict = {
        "command": " ".join(["python", "benchmarks/auto_vs_nnunet.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "settings": vars(args),
        "runs": [],
    }
    tables = []
    for key in keys:
        raw = prepare(key, args)
        for minutes in args.minutes:
            work = OUT / "runs" / f"{raw.parent.name}_{minutes:g}min"
            _log(f"{key}, {minutes:g} min: voxseg auto ...")
            v = run_voxseg(raw, minutes, work, args.processes)
            _log(f"  wall {v['wall_seconds'] / 60:.2f} min, mean Dice {v['mean_dice']:.3f}")
            _log(f"{key}, {minutes:g} min: nnU-Net ...")
            n = run_nnunet(DATASETS[key][1:], raw, minutes, work, args)
            _log(f"  wall {n['wall_seconds'] / 60:.2f} min, mean Dice {n['mean_dice']:.3f}")
            results["runs"].append(
                {"dataset": key, "raw": str(raw), "minutes": minutes, "results": [v, n]}
            )
            _write_json(OUT / "results.json", results)
            tables.append(table(key, minutes, [v, n]))
            print(tables[-1], flush=True)
    if len(results["runs"]) > 1:
        print("\n" + curve_table(results["runs"], "dataset"))
    print(f"\nresults: {OUT / 'results.json'}")


if __name__ == "__main__":
    main()
