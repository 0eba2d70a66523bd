"""What the quality control adds to a fold's final validation (CPU seconds per case).

A fold trained for a few iterations on organ phantoms (mirroring on every axis, so its
test-time flips make 8 members) predicts its validation cases as the final validation does,
alternately without and with the flips' agreement and the QC record
(``Predictor.predict(..., agreement=True)`` + ``QualityControl.case``), in one process,
after a warm-up case. Prints CPU and wall seconds per case and their ratio.

    python benchmarks/validation_qc_cost.py                       # 48 x 96 x 96 phantoms
    python benchmarks/validation_qc_cost.py --shape 64 160 160 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build_fold(work: Path, shape: tuple[int, int, int], cases: int) -> Path:
    """A workspace with one barely trained fold (its weights do not matter for timing)."""
    from voxseg.config import apply_overrides
    from voxseg.data import Dataset
    from voxseg.data.fingerprint import load_or_compute_fingerprint
    from voxseg.planning import PlannerOptions, plan_dataset, write_plans
    from voxseg.preprocessing.preprocessor import preprocess_dataset
    from voxseg.synth import generate
    from voxseg.training import ModelConfig, train_fold

    raw = generate(
        "organs", work / "raw" / "Dataset001_Organs", num_train=cases, num_test=0, shape=shape
    )
    ds = Dataset(raw)
    pre = work / "preprocessed" / ds.name
    plans = plan_dataset(
        load_or_compute_fingerprint(ds, pre), ds.info, PlannerOptions(device="cpu")
    )
    write_plans(plans, pre)
    preprocess_dataset(ds, plans, "3d_fullres", pre / "default" / "3d_fullres")
    cfg = apply_overrides(
        ModelConfig(dataset="Organs"),
        [
            "training.epochs=1",
            "training.iterations_per_epoch=1",
            "training.val_iterations=0",
            "training.num_workers=0",
            "training.device=cpu",
            "logging.snapshots=false",
            "augmentation.mirror.axes=[0,1,2]",
        ],
    )
    return train_fold(cfg, 0, home=work)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[48, 96, 96])
    ap.add_argument("--cases", type=int, default=5, help="training cases (fold 0 validates 1)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "validation_qc_cost")
    args = ap.parse_args()
    from voxseg.data import Dataset
    from voxseg.inference.model import ModelFolder
    from voxseg.inference.predictor import Predictor
    from voxseg.inference.qc import QualityControl

    shape = tuple(args.shape)
    work = args.work / "x".join(map(str, shape))
    fold = work / "models" / "Dataset001_Organs" / "default" / "3d_fullres" / "fold_0"
    if not (fold / "validation" / "summary.json").is_file():
        shutil.rmtree(work, ignore_errors=True)
        fold = build_fold(work, shape, args.cases)
    os.environ["VOXSEG_HOME"] = str(work)
    model = ModelFolder.load(fold.parent, folds=["0"])
    predictor = Predictor(model, device="cpu", postprocess=False)
    ds = Dataset(work / "raw" / "Dataset001_Organs")
    case_ids = sorted(
        p.name.removesuffix(".nii.gz") for p in (fold / "validation").glob("*.nii.gz")
    )
    images = [ds.load_case(ds.case(c))[0] for c in case_ids]
    quality = QualityControl(predictor, work / "qc_out")
    print(f"{len(images)} validation case(s) of {shape}, {predictor.members} members (flips)")

    def plain(i: int) -> None:
        predictor.predict(images[i])

    def with_qc(i: int) -> None:
        pred = predictor.predict(images[i], agreement=True)
        quality.case(case_ids[i], pred.segmentation, pred.agreement)

    plain(0)
    with_qc(0)
    times: dict[str, list[tuple[float, float]]] = {"validation": [], "validation + QC": []}
    for _ in range(args.rounds):
        for name, fn in (("validation", plain), ("validation + QC", with_qc)):
            for i in range(len(images)):
                c0, w0 = time.process_time(), time.perf_counter()
                fn(i)
                times[name].append((time.process_time() - c0, time.perf_counter() - w0))
    print(f"load average (1 min): {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| predict | CPU s per case (mean) | wall s per case (mean) | runs |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        cpu = sum(t[0] for t in ts) / len(ts)
        wall = sum(t[1] for t in ts) / len(ts)
        print(f"| {name} | {cpu:.2f} | {wall:.2f} | {len(ts)} |")
    base, qc = (sum(t[0] for t in ts) for ts in times.values())
    print(f"CPU ratio with QC / without: {qc / base:.3f}")


if __name__ == "__main__":
    main()
