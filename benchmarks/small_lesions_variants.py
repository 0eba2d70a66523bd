"""The small-structure stage with one change at a time: retrain only the ``small`` stage of a
``small_lesions.py`` run, keep its whole-image stage, score the held-out cases.

    python benchmarks/small_lesions.py --minutes 15            # once: the run to vary
    python benchmarks/small_lesions_variants.py control
    python benchmarks/small_lesions_variants.py anywhere --set sampling.placement=anywhere

Each variant copies the run's model folder (``auto``, a pipeline) to
``benchmarks/_work/small_lesions/variants/<name>/``, trains its small stage again on the
prepared stage data for ``--seconds`` (the small stage's share of ``auto``'s 15-minute budget:
7 min 31 s) with ``voxseg auto``'s settings plus the ``--set`` overrides, and predicts and
scores the held-out cases as ``small_lesions.py`` does (``score``: Dice per label, pooled
lesion Dice, lesion-wise sensitivity and precision, sensitivity by lesion size). ``--split
Tr`` scores the training cases instead (what the stage memorised). A finished variant is
only scored again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import WORK, machine_info
from small_lesions import generate, score
from small_lesions import parse_args as small_lesions_args


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", help="the variant's folder name")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], help="training overrides")
    p.add_argument("--seconds", type=float, default=451.0, help="the small stage's training time")
    p.add_argument("--run", type=Path, help="the small_lesions.py run folder to vary")
    p.add_argument("--num-test", type=int, default=30)
    p.add_argument("--split", choices=["Ts", "Tr"], default="Ts")
    p.add_argument("--work", type=Path, default=WORK / "small_lesions")
    return p.parse_args()


def main() -> None:
    from voxseg.config import apply_overrides
    from voxseg.modelfolder import ModelLayout
    from voxseg.pipelines.auto import RECIPE, SMALL_STAGE
    from voxseg.pipelines.spec import stage_dir
    from voxseg.pipelines.train import install_model, prepare_stage
    from voxseg.training import apply_recipe, train_fold

    args = parse_args()
    # small_lesions.py's own defaults, with this run's test cases and work folder
    raw = generate(small_lesions_args(["--num-test", str(args.num_test), "--work", str(args.work)]))
    run = args.run or args.work / f"auto_15min_{raw.parent.name}"
    source = run / "home" / "models" / raw.name / "auto"
    if not (source / "pipeline.json").is_file():
        sys.exit(f"{source}: no small_lesions.py pipeline here; run small_lesions.py first")
    out = args.work / "variants" / args.name
    model = out / "auto"
    if not model.is_dir():
        shutil.copytree(source, model)
    prepared = prepare_stage(model, SMALL_STAGE, raw, device="cpu")
    fold_dir = ModelLayout(prepared.model_dir).fold_dir("0")
    record = out / "trained.json"
    if not record.is_file():
        shutil.rmtree(fold_dir, ignore_errors=True)
        cfg = apply_overrides(
            apply_recipe(prepared.config, RECIPE),
            [
                f"training.time_budget={args.seconds}",
                "training.iterations_per_epoch=auto",
                "training.device=cpu",
                *args.overrides,
            ],
        )
        tic = time.perf_counter()
        train_fold(cfg, "0", home=prepared.home, force=True)
        seconds = round(time.perf_counter() - tic, 1)
        record.write_text(json.dumps({"seconds": seconds, "overrides": args.overrides}))
    install_model(prepared.model_dir, stage_dir(model, SMALL_STAGE))
    pred_dir = out / f"predictions_{args.split}"
    subprocess.run(
        [sys.executable, "-m", "voxseg.cli", "predict", "-i", raw / f"images{args.split}"]
        + ["-o", pred_dir, "-m", model, "--device", "cpu"],
        check=True,
    )
    scores = score(pred_dir, raw, split=args.split)
    result = {
        "machine": machine_info(),
        "variant": args.name,
        **json.loads(record.read_text()),
        "scores": scores,
    }
    (out / f"results_{args.split}.json").write_text(json.dumps(result, indent=2))
    d = scores["dice"]
    print(
        f"{args.name} ({' '.join(args.overrides) or 'no change'}): "
        + ", ".join(f"{k} {v:.3f}" for k, v in d.items())
        + f"; lesion Dice pooled {scores['lesion_dice_pooled']:.3f}, sensitivity "
        f"{scores['lesion_sensitivity']:.3f} ({scores['detected_lesions']}/"
        f"{scores['reference_lesions']}), precision {scores['lesion_precision']:.3f}, by size "
        + ", ".join(f"{k} {a}/{b}" for k, (a, b) in scores["detected_by_diameter"].items())
        + "; by visibility "
        + ", ".join(f"{k} {a}/{b}" for k, (a, b) in scores["detected_by_visibility"].items())
        + f"; searching observer at the same false positives {scores['observer_detected_lesions']}"
    )


if __name__ == "__main__":
    main()
