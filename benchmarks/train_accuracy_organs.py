"""Accuracy on a CPU budget: train on ``voxseg synth organs`` for a fixed wall-clock budget,
then predict the held-out phantoms and report per-class Dice (target: mean foreground Dice
≥ 0.85 after 15 minutes on 2 CPU cores with ≥ 20 training cases).

    python benchmarks/train_accuracy_organs.py [--minutes 15] [--num-train 25] [--num-test 6]
                                               [--recipe adamw|nnunet] [--seed 0]

By default it trains what `voxseg plan --device cpu` plans for a CPU: the 3d_lowres stage,
which holds the whole median image in one patch, with the ``adamw`` training recipe
(``--recipe nnunet``: nnU-Net's SGD + poly, which learns the small organs far later).
The budget holds the training epochs with their validation patches and checkpoints; the
fold's full-case validation afterwards (and post-processing chosen on it) is not counted.

Writes the learning curve (validation-patch Dice against time) and the held-out metrics to
``benchmarks/_work/organs_accuracy/``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from _common import prepare_organs

WORK = Path(__file__).resolve().parent / "_work" / "organs_accuracy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training wall-clock budget")
    parser.add_argument("--num-train", type=int, default=25, help="fold 0 trains on 80%%")
    parser.add_argument("--num-test", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=50, help="iterations per epoch")
    parser.add_argument("--tta", action="store_true", help="flip TTA at prediction")
    parser.add_argument(
        "--configuration", default="3d_lowres", help="planned configuration to train"
    )
    parser.add_argument(
        "--cpu-gflops", type=float, default=5.0, help="CPU plan budget per iteration (GFLOP)"
    )
    parser.add_argument(
        "--cpu-lowres-gflops", type=float, default=None, help="budget of the whole-image 3d_lowres"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument(
        "--recipe", default="adamw", help="training recipe (adamw, or nnunet: SGD + poly)"
    )
    parser.add_argument("--base-features", type=int, default=None, help="plan override")
    parser.add_argument(
        "--spacing", type=float, nargs=3, default=None, help="plan override of the 3D spacing"
    )
    parser.add_argument(
        "--patch-size", type=int, nargs="+", default=None, help="plan override (3 or 2 values)"
    )
    parser.add_argument(
        "--no-postprocessing", action="store_true", help="skip `postprocess determine`"
    )
    parser.add_argument("--set", nargs="*", default=[], help="extra training overrides a.b=v")
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()

    import torch

    from voxseg.config import apply_overrides
    from voxseg.evaluation import evaluate_folder, summary_table
    from voxseg.inference import Predictor, predict_folder
    from voxseg.planning import PlannerOptions
    from voxseg.postprocess import determine_postprocessing
    from voxseg.training import ModelConfig, apply_recipe, train_fold

    torch.set_num_threads(2)
    options = PlannerOptions(
        device="cpu",
        cpu_gflops_per_iteration=args.cpu_gflops,
        cpu_lowres_gflops_per_iteration=args.cpu_lowres_gflops,
        base_features=args.base_features,
        patch_size=args.patch_size,
        spacing=args.spacing,
    )
    ws, ds, plans = prepare_organs(
        args.work, args.configuration, options, num_train=args.num_train, num_test=args.num_test
    )
    raw = ds.root
    cfg = plans.configuration(args.configuration)
    base = [
        f"training.iterations_per_epoch={args.iterations}",
        "training.val_iterations=5",
        "training.device=cpu",
        "logging.snapshots=false",
        f"training.seed={args.seed}",
        *args.set,
    ]

    # measure seconds per epoch (validation patches included), then fit the epochs
    def model(**names) -> ModelConfig:
        return apply_recipe(ModelConfig(dataset=ds.name, **names), args.recipe)

    probe = apply_overrides(
        model(configuration=args.configuration, model_name="probe"),
        [*base, "training.epochs=3"],
    )
    train_fold(probe, "all", home=ws.root, force=True)
    with open(ws.model_dir(ds.name, "default", "probe", "all") / "training_log.csv") as f:
        seconds_per_epoch = float(list(csv.DictReader(f))[-1]["epoch_seconds"])
    epochs = max(1, int(args.minutes * 60 / (seconds_per_epoch * 1.05)))
    print(
        f"{seconds_per_epoch / args.iterations:.2f} s per iteration → {epochs} epochs of "
        f"{args.iterations} iterations in {args.minutes:g} minutes"
    )

    config = apply_overrides(
        model(configuration=args.configuration),
        [*base, f"training.epochs={epochs}"],
    )
    tic = time.perf_counter()
    folder = train_fold(config, 0, home=ws.root, force=True)
    total_minutes = (time.perf_counter() - tic) / 60
    with open(folder / "training_log.csv") as f:
        epoch_minutes = sum(float(r["epoch_seconds"]) for r in csv.DictReader(f)) / 60
    # nnU-Net's last step: post-processing chosen on the fold's validation cases (the
    # full-case predictions training wrote), saved in the model folder, applied by predict
    steps = []
    if args.no_postprocessing:
        (folder.parent / "postprocessing.json").unlink(missing_ok=True)
    else:
        steps = determine_postprocessing(
            folder / "validation", raw / "labelsTr", dataset=raw, output_dir=folder.parent
        )
    predictions = args.work / "predictions"
    tic = time.perf_counter()
    predictor = Predictor(folder.parent, folds=["0"], device="cpu", tta=args.tta)
    predict_folder(predictor, raw / "imagesTs", predictions, overwrite=True)
    predict_seconds = (time.perf_counter() - tic) / args.num_test
    summary = evaluate_folder(predictions, raw / "labelsTs", dataset=raw)

    from rich.console import Console

    Console().print(summary_table(summary))
    dice = {k: v["dice"] for k, v in summary["mean"].items()}
    result = {
        "machine": f"{torch.get_num_threads()} CPU threads",
        "train_cases": len(ds.case_ids()),
        "test_cases": args.num_test,
        "budget_minutes": args.minutes,
        "epoch_minutes_incl_validation_patches": round(epoch_minutes, 1),
        "minutes_incl_full_case_validation": round(total_minutes, 1),
        "seed": args.seed,
        "recipe": args.recipe,
        "batch_dice": cfg.batch_dice if config.loss.batch_dice is None else config.loss.batch_dice,
        "epochs": epochs,
        "iterations_per_epoch": args.iterations,
        "seconds_per_iteration_incl_validation": round(seconds_per_epoch / args.iterations, 3),
        "configuration": args.configuration,
        "patch": cfg.patch_size,
        "spacing": [round(s, 3) for s in cfg.spacing],
        "features": cfg.topology.features_per_stage,
        "batch_size": cfg.batch_size,
        "mirror_axes": cfg.mirror_axes,
        "overrides": args.set,
        "postprocessing": steps,
        "dice_per_class": dice,
        "mean_foreground_dice": summary["foreground_mean"]["dice"],
        "predict_seconds_per_case": round(predict_seconds, 1),
        "tta": args.tta,
    }
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "result.json").write_text(json.dumps(result, indent=2))
    _plot_curve(folder / "training_log.csv", args.work / "curve.png")
    print(json.dumps(result, indent=2))
    met = result["mean_foreground_dice"] >= 0.85
    print(f"target mean foreground Dice ≥ 0.85: {'met' if met else 'NOT met'}")


def _plot_curve(log: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log) as f:
        rows = list(csv.DictReader(f))
    t = [0.0]
    for r in rows:
        t.append(t[-1] + float(r["epoch_seconds"]) / 60)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(t[1:], [float(r["val_dice"]) for r in rows], ":", label="validation patches")
    ax.plot(t[1:], [float(r["val_dice_ema"]) for r in rows], label="EMA")
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("mean foreground Dice")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    main()
