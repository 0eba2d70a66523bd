"""Benchmark: ``voxseg predict`` on a CT series with and without
``--output-type dicom-seg rtstruct`` (what the DICOM outputs add to a prediction's time).

What runs: a small model is trained for 500 iterations (``adamw`` recipe) on images of the
series' kind (its plan, spacing 2.5 x 0.85 x 0.85 mm, makes the prediction a realistic amount
of work; the RTSTRUCT's cost grows with the number of contours, so the script prints how many
the prediction has beside the clean label map's, and its Dice); a CT series (default
200 x 512 x 512, 1.25 x 0.7 x 0.7 mm, one pydicom file per slice) is written; then
``voxseg predict --device cpu`` runs on it, the plain run and the run with both DICOM outputs
alternating, ``--repeat`` times each. Measured
per run: wall time of the command, CPU time of its process tree (user + system), peak RSS.

    python benchmarks/dicom_predict_outputs.py            # 200 x 512 x 512, 2 runs each
    python benchmarks/dicom_predict_outputs.py --quick    # 100 x 256 x 256, 1 run each
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, format_table, machine_info, run_measured  # noqa: E402
from dicom_outputs import label_map  # noqa: E402

TRAINING = [
    "training.epochs=20",
    "training.iterations_per_epoch=25",
    "training.val_iterations=0",
    "sampling.foreground_fraction=1.0",
    "training.num_workers=0",
    "training.device=cpu",
    "logging.snapshots=false",
]


#: Mean HU of background soft tissue and of the three organs of ``label_map`` (σ 15 HU noise
#: on all): distinct, so that a briefly trained model predicts clean organs, as a usable
#: model does (an untrained one's speckle makes tens of thousands of contours per series).
TISSUE_HU = np.array([0, 60, 160, 110], dtype=np.int16)
#: The label values of ``label_map``.
LABELS = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3}
SERIES_SPACING, TRAIN_SPACING = (1.25, 0.7, 0.7), (2.5, 0.85, 0.85)


def ct_values(lab: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 15, lab.shape)
    return (TISSUE_HU[lab] + noise).astype(np.int16)


def write_training_data(raw: Path, series_shape: tuple[int, int, int], cases: int = 3) -> None:
    """``cases`` images of the series' kind (the same organs, other outlines, the same field
    of view on the model's grid) as a raw dataset."""
    from voxseg.data import write_dataset_json
    from voxseg.io import Image, write_image

    for i in range(cases):
        shape = tuple(
            round(n * a / b)
            for n, a, b in zip(series_shape, SERIES_SPACING, TRAIN_SPACING, strict=True)
        )
        lab = label_map(shape, seed=10 + i)
        image = ct_values(lab, 100 + i)
        write_image(Image(image, TRAIN_SPACING), raw / "imagesTr" / f"c{i:02d}_0000.nii.gz")
        write_image(Image(lab, TRAIN_SPACING), raw / "labelsTr" / f"c{i:02d}.nii.gz")
    write_dataset_json(raw, {0: "CT"}, LABELS, cases)


def train_model(home: Path, series_shape: tuple[int, int, int]) -> Path:
    """A model folder (fold ``all``, 500 iterations of the ``adamw`` recipe) trained on images
    of the same kind as the series."""
    from voxseg.config import apply_overrides
    from voxseg.data import Dataset
    from voxseg.data.fingerprint import load_or_compute_fingerprint
    from voxseg.planning import PlannerOptions, plan_dataset, write_plans
    from voxseg.preprocessing.preprocessor import preprocess_dataset
    from voxseg.training import ModelConfig, train_fold
    from voxseg.training.recipes import apply_recipe

    raw = home / "raw" / "Dataset001_Organs"
    write_training_data(raw, series_shape)
    ds = Dataset(raw)
    pre = home / "preprocessed" / ds.name
    plans = plan_dataset(
        load_or_compute_fingerprint(ds, pre),
        ds.info,
        PlannerOptions(device="cpu", patch_size=[16, 64, 64]),
    )
    write_plans(plans, pre)
    preprocess_dataset(ds, plans, "3d_fullres", pre / "default" / "3d_fullres")
    cfg = apply_overrides(apply_recipe(ModelConfig(dataset="Organs"), "adamw"), TRAINING)
    return train_fold(cfg, "all", home=home).parent


def write_series(folder: Path, shape: tuple[int, int, int]) -> None:
    """A CT-like series: the three organs of the DICOM-output benchmark on noisy soft tissue."""
    from voxseg.synth.dicom import series_datasets, write_datasets

    values = ct_values(label_map(shape), 1)
    datasets = series_datasets(
        values, spacing=SERIES_SPACING, first_position=(-180, -180, 0), intercept=-1024
    )
    write_datasets(datasets, folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=None)
    ap.add_argument("--repeat", type=int, default=None, help="Runs of each variant.")
    ap.add_argument("--quick", action="store_true", help="100 x 256 x 256, one run each.")
    ap.add_argument("--work", type=Path, default=WORK / "dicom_predict_outputs")
    args = ap.parse_args()
    shape = tuple(args.shape or ((100, 256, 256) if args.quick else (200, 512, 512)))
    repeat = args.repeat or (1 if args.quick else 2)
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    t = time.perf_counter()
    model = train_model(work / "home", shape)
    write_series(work / "inputs" / "patient", shape)
    print(f"model and {shape} series ready in {time.perf_counter() - t:.0f} s", flush=True)

    voxseg = Path(sys.executable).parent / "voxseg"
    variants = {
        "NIfTI only": [],
        "+ dicom-seg rtstruct": ["--output-type", "dicom-seg", "rtstruct"],
    }
    runs: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    for r in range(repeat):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            out = work / f"out_{r}_{len(variants[name])}"
            before = _children_cpu()
            m = run_measured(
                [voxseg, "predict", "-i", work / "inputs", "-o", out, "-m", model,
                 "--device", "cpu", *variants[name]],
                log=work / f"predict_{r}_{len(variants[name])}.log",
            )  # fmt: skip
            runs[name].append((m.wall_s, _children_cpu() - before, m.peak_rss_bytes / 2**20))
            print(f"run {r + 1} {name}: wall {m.wall_s:.1f} s", flush=True)
    rows = []
    base_wall = statistics.median(w for w, _, _ in runs["NIfTI only"])
    base_cpu = statistics.median(c for _, c, _ in runs["NIfTI only"])
    for name, values in runs.items():
        wall = statistics.median(w for w, _, _ in values)
        cpu = statistics.median(c for _, c, _ in values)
        rows.append(
            [name, f"{wall:.1f}", f"{cpu:.1f}", f"{max(m for _, _, m in values):.0f}",
             f"{100 * (wall / base_wall - 1):+.1f} %", f"{100 * (cpu / base_cpu - 1):+.1f} %"]
        )  # fmt: skip
    print(f"{shape[0]}x{shape[1]}x{shape[2]} CT series, {repeat} run(s) each (medians); "
          f"machine {machine_info()}")  # fmt: skip
    print(format_table(["voxseg predict", "wall s", "CPU s", "peak RSS MiB", "wall added",
                        "CPU added"], rows))  # fmt: skip
    quality = describe_prediction(work / "out_0_3", shape)
    print(
        f"the prediction: {quality['contours']} RTSTRUCT contours (the generating label map: "
        f"{quality['true_contours']}); Dice vs that map "
        + ", ".join(f"{k} {v:.3f}" for k, v in quality["dice"].items())
    )
    (work / "result.json").write_text(
        json.dumps(
            {"shape": shape, "runs": runs, "prediction": quality, "machine": machine_info()},
            indent=2,
        )
    )


def describe_prediction(out: Path, shape: tuple[int, int, int]) -> dict:
    """How clean the timed prediction is: the RTSTRUCT's cost grows with its contours."""
    from voxseg.evaluation.metrics import overlap_metrics
    from voxseg.io import read_image
    from voxseg.io.contours import mask_to_contours
    from voxseg.io.dicom import read_dicom_folder
    from voxseg.io.rtstruct import read_rtstruct

    pred = read_image(out / "patient.nii.gz").array
    truth = label_map(shape)
    _, series = read_dicom_folder(out.parent / "inputs" / "patient")
    organs = {name: v for name, v in LABELS.items() if v}
    dice = {
        name: overlap_metrics(pred == v, truth == v, series.geometry.spacing)["dice"]
        for name, v in organs.items()
    }
    true_contours = sum(len(mask_to_contours(truth == v, series.geometry)) for v in organs.values())
    contours = sum(len(r.contours) for r in read_rtstruct(out / "patient_RTSTRUCT.dcm").rois)
    return {"contours": contours, "true_contours": true_contours, "dice": dice}


def _children_cpu() -> float:
    """User + system seconds of every finished (waited-for) descendant process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
