"""Benchmark: a DICOM archive with RTSTRUCTs → masks, voxseg beside dcmrtstruct2nii.

The archive: N patients, each a CT series (shuffled file names, alternating head-first and
feet-first) with an RTSTRUCT of 5 ellipsoidal ROIs (96-point contours per slice), plus
distractor objects per patient (an RTPLAN-like object, a key-object note, a JSON file).
voxseg runs ``voxseg dataset import dicom`` (CT and label maps as NIfTI, dataset check
included) with ``-p`` worker processes; dcmrtstruct2nii converts each patient's RTSTRUCT
and CT (its documented use, one patient at a time, one process). Both run in their own
subprocess; wall time, CPU time (user + system of the whole process tree, which a busy or
paused machine does not inflate as it does wall time) and the peak memory of the process
tree are measured, and every ROI mask of dcmrtstruct2nii is compared with voxseg's label map
(Dice).

    python benchmarks/dicom_import.py                          # 20 patients x 150 x 512 x 512
    python benchmarks/dicom_import.py --patients 4 --size 128  # quick check
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, format_table, machine_info, run_measured  # noqa: E402

ROIS = {  # name: (centre u, v in fractions of the field, radii u, v in fractions, slices)
    "Liver": (0.35, 0.45, 0.16, 0.13, (0.2, 0.75)),
    "Kidney_L": (0.70, 0.60, 0.06, 0.08, (0.35, 0.6)),
    "Kidney_R": (0.30, 0.70, 0.06, 0.08, (0.35, 0.6)),
    "Spleen": (0.72, 0.35, 0.08, 0.07, (0.3, 0.55)),
    "SpinalCord": (0.50, 0.85, 0.02, 0.02, (0.0, 1.0)),
}
LABELS = {"liver": "Liver", "kidney_l": "Kidney_L", "kidney_r": "Kidney_R",
          "spleen": "Spleen", "cord": "SpinalCord"}  # fmt: skip


def make_archive(root: Path, patients: int, slices: int, size: int, seed: int = 0) -> None:
    """The synthetic archive described in the module docstring."""
    import pydicom

    from voxseg.synth.dicom import (
        orientation_axes,
        rtstruct_dataset,
        series_datasets,
        write_datasets,
    )

    rng = np.random.default_rng(seed)
    spacing = (2.0, 500.0 / size * 0.8, 500.0 / size * 0.8)
    first = (-200.0, -200.0, -150.0)
    t = np.linspace(0, 2 * np.pi, 97)[:-1]
    for p in range(patients):
        orientation = "HFS" if p % 2 == 0 else "FFS"
        values = _ct(rng, slices, size)
        datasets = series_datasets(
            values, spacing=spacing, first_position=first, orientation=orientation,
            patient_id=f"BENCH{p:03d}", intercept=-1024,
        )  # fmt: skip
        folder = root / f"export_{p:03d}"
        write_datasets(datasets, folder / "series")
        row, col, normal = orientation_axes(orientation)
        extent = (size - 1) * spacing[1]
        rois = {}
        for name, (cu, cv, ru, rv, (z0, z1)) in ROIS.items():
            contours = []
            for k in range(int(z0 * slices), int(z1 * slices)):
                u = (cu + ru * np.cos(t)) * extent
                v = (cv + rv * np.sin(t)) * extent
                contours.append(
                    np.asarray(first) + np.outer(u, row) + np.outer(v, col)
                    + k * spacing[0] * normal
                )  # fmt: skip
            rois[name] = contours
        rtstruct_dataset(datasets, rois).save_as(folder / "RS.dcm", enforce_file_format=True)
        for modality in ("RTPLAN", "KO"):
            other = pydicom.dcmread(next((folder / "series").iterdir()), stop_before_pixels=True)
            other.Modality = modality
            other.SOPInstanceUID = pydicom.uid.generate_uid()
            other.SeriesInstanceUID = pydicom.uid.generate_uid()
            for key in ("Rows", "Columns", "ImagePositionPatient"):
                if key in other:
                    delattr(other, key)
            other.save_as(folder / f"{modality.lower()}_object", enforce_file_format=True)
        (folder / "manifest.json").write_text("{}")


def _ct(rng: np.random.Generator, slices: int, size: int) -> np.ndarray:
    """A CT-like volume: air, a body ellipse of soft tissue, brighter organs, noise σ 15 HU."""
    y, x = (g / (size - 1) for g in np.ogrid[:size, :size])
    body = ((x - 0.5) / 0.42) ** 2 + ((y - 0.55) / 0.35) ** 2 < 1
    plane = np.where(body, 40, -1000).astype(np.int16)
    for cu, cv, ru, rv, _ in ROIS.values():
        plane[((x - cu) / ru) ** 2 + ((y - cv) / rv) ** 2 < 1] += 30
    noise = rng.normal(0, 15, size=(slices, size, size)).astype(np.int16)
    return plane[None] + noise


_DCMRTSTRUCT2NII = """
import sys, time, json
from pathlib import Path
import pydicom
pydicom.read_file = pydicom.dcmread  # dcmrtstruct2nii 5 predates pydicom 3
from dcmrtstruct2nii import dcmrtstruct2nii
root, out = Path(sys.argv[1]), Path(sys.argv[2])
times = {}
for p in sorted(root.iterdir()):
    t = time.perf_counter()
    dcmrtstruct2nii(str(p / "RS.dcm"), str(p / "series"), str(out / p.name))
    times[p.name] = time.perf_counter() - t
print(json.dumps(times))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("-p", "--processes", type=int, default=2)
    ap.add_argument("--work", type=Path, default=WORK / "dicom_import")
    ap.add_argument(
        "--reuse-archive", action="store_true",
        help="Keep WORK/archive (same --slices/--size) and convert its first --patients.",
    )  # fmt: skip
    args = ap.parse_args()
    work = args.work
    archive = work / "archive"
    if args.reuse_archive and archive.is_dir():
        for sub in ("voxseg", "dcmrtstruct2nii", "subset"):
            shutil.rmtree(work / sub, ignore_errors=True)
        patients = sorted(archive.iterdir())[: args.patients]
        (work / "subset").mkdir()
        for p in patients:  # hard links: the same files, no copy
            shutil.copytree(p, work / "subset" / p.name, copy_function=os.link)
        archive = work / "subset"
        print(f"archive: first {len(patients)} patients of {work / 'archive'}", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
        t = time.perf_counter()
        make_archive(archive, args.patients, args.slices, args.size)
        print(f"archive: {args.patients} patients x {args.slices} x {args.size}^2 "
              f"({time.perf_counter() - t:.0f} s to write)", flush=True)  # fmt: skip

    voxseg = Path(sys.executable).parent / "voxseg"
    rois = [f"--roi={k}={v}" for k, v in LABELS.items()]
    cpu0 = _children_cpu()
    ours = run_measured(
        [voxseg, "dataset", "import", "dicom", archive, work / "voxseg", *rois, "-p",
         args.processes],
        log=work / "voxseg.log",
    )  # fmt: skip
    cpu1 = _children_cpu()
    theirs = run_measured(
        [sys.executable, "-c", _DCMRTSTRUCT2NII, archive, work / "dcmrtstruct2nii"],
        log=work / "dcmrtstruct2nii.log",
    )
    ours_cpu, theirs_cpu = cpu1 - cpu0, _children_cpu() - cpu1

    from voxseg.io import read_image

    dice = []
    with open(work / "voxseg" / "case_map.csv") as f:
        cases = {row["PatientID"]: row["case"] for row in csv.DictReader(f)}
    for p in range(args.patients):
        lab = read_image(work / "voxseg" / "labelsTr" / f"{cases[f'BENCH{p:03d}']}.nii.gz").array
        for value, roi in enumerate(LABELS.values(), start=1):
            other = read_image(work / "dcmrtstruct2nii" / f"export_{p:03d}" / f"mask_{roi}.nii.gz")
            a, b = lab == value, other.array > 0
            dice.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    n = args.patients
    rows = [
        ["voxseg import dicom", f"{ours.wall_s:.1f}", f"{ours.wall_s / n:.2f}",
         f"{ours_cpu:.1f}", f"{ours.peak_rss_bytes / 2**20:.0f}", "1.00", "1.00"],
        ["dcmrtstruct2nii", f"{theirs.wall_s:.1f}", f"{theirs.wall_s / n:.2f}",
         f"{theirs_cpu:.1f}", f"{theirs.peak_rss_bytes / 2**20:.0f}",
         f"{theirs.wall_s / ours.wall_s:.2f}", f"{theirs_cpu / ours_cpu:.2f}"],
    ]  # fmt: skip
    print(format_table(["", "total s", "s / patient", "CPU s", "peak RSS MiB",
                        "time vs voxseg", "CPU vs voxseg"], rows))  # fmt: skip
    print(f"voxseg / dcmrtstruct2nii: wall {ours.wall_s / theirs.wall_s:.2f}, "
          f"CPU {ours_cpu / theirs_cpu:.2f}")  # fmt: skip
    print(f"Dice voxseg vs dcmrtstruct2nii over {len(dice)} ROI masks: "
          f"min {min(dice):.4f}, mean {np.mean(dice):.4f}")  # fmt: skip
    result = {
        "machine": machine_info(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "voxseg": {**ours.to_dict(), "cpu_s": ours_cpu},
        "dcmrtstruct2nii": {**theirs.to_dict(), "cpu_s": theirs_cpu},
        "dice_min": float(min(dice)),
        "dice_mean": float(np.mean(dice)),
    }
    (work / "result.json").write_text(json.dumps(result, indent=2))


def _children_cpu() -> float:
    """User + system seconds of every finished (waited-for) descendant process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
