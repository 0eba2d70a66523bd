"""Benchmark: ``voxseg predict`` on a CT series with and without
``--output-type dicom-seg rtstruct`` (what the DICOM outputs add to a prediction's time).

What runs: a small model is trained for a few iterations on synthetic organ phantoms (its
quality does not matter; its plan, spacing about 2.5 x 0.85 x 0.85 mm, makes the prediction
a realistic amount of work); a CT series (default 200 x 512 x 512, 1.25 x 0.7 x 0.7 mm, one
pydicom file per slice) is written; then ``voxseg predict --device cpu`` runs on it, the
plain run and the run with both DICOM outputs alternating, ``--repeat`` times each. Measured
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
    "training.epochs=1",
    "training.iterations_per_epoch=2",
    "training.val_iterations=0",
    "training.num_workers=0",
    "training.device=cpu",
    "logging.snapshots=false",
]


def train_model(home: Path) -> Path:
    """A model folder trained for two iterations on 4 organ phantoms (fold ``all``)."""
    from voxseg.config import apply_overrides
    from voxseg.data import Dataset
    from voxseg.data.fingerprint import load_or_compute_fingerprint
    from voxseg.planning import PlannerOptions, plan_dataset, write_plans
    from voxseg.preprocessing.preprocessor import preprocess_dataset
    from voxseg.synth import generate
    from voxseg.training import ModelConfig, train_fold

    raw = generate(
        "organs", home / "raw" / "Dataset001_Organs", num_train=4, num_test=1, shape=(24, 96, 96)
    )
    ds = Dataset(raw)
    pre = home / "preprocessed" / ds.name
    plans = plan_dataset(
        load_or_compute_fingerprint(ds, pre),
        ds.info,
        PlannerOptions(device="cpu", patch_size=[16, 64, 64]),
    )
    write_plans(plans, pre)
    preprocess_dataset(ds, plans, "3d_fullres", pre / "default" / "3d_fullres")
    cfg = apply_overrides(ModelConfig(dataset="Organs"), TRAINING)
    return train_fold(cfg, "all", home=home).parent


def write_series(folder: Path, shape: tuple[int, int, int]) -> None:
    """A CT-like series: three organs of the DICOM-output benchmark on noisy soft tissue."""
    from voxseg.synth.dicom import series_datasets, write_datasets

    lab = label_map(shape)
    noise = np.random.default_rng(1).normal(0, 15, shape).astype(np.int16)
    values = np.where(lab > 0, 60, 0).astype(np.int16) + noise
    datasets = series_datasets(
        values, spacing=(1.25, 0.7, 0.7), first_position=(-180, -180, 0), intercept=-1024
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
    model = train_model(work / "home")
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
    (work / "result.json").write_text(
        json.dumps({"shape": shape, "runs": runs, "machine": machine_info()}, indent=2)
    )


def _children_cpu() -> float:
    """User + system seconds of every finished (waited-for) descendant process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
