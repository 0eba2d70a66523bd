"""Better models per minute on real anatomy: ``voxseg auto`` beside nnU-Net v2 at equal
training wall time, on tasks built from real MR images and labels that no phantom generator made.

    pip install --no-deps nilearn        # ships the images inside its wheel; nothing is downloaded
    python benchmarks/real_anatomy.py                         # 2D and 3D task, 5 and 15 minutes
    python benchmarks/real_anatomy.py --task 2d --minutes 5   # one point

The source: the ICBM 2009a symmetric MNI152 T1 template with its grey- and white-matter
probability maps (McConnell Brain Imaging Centre), as the ``nilearn`` wheel ships them
(``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``, 1 mm,
197 × 233 × 189, the head with skull and neck). The label of a voxel is grey matter (1) where
the grey-matter probability is at least 0.5 and not below the white-matter one, white matter
(2) likewise, background (0) elsewhere: two tissue classes at every level of the brain. The
test cases come from levels of the anatomy that the training cases never show, so a model
has to generalise from one part of the brain to another, as a user's model meets patients
unlike its training set:

* ``2d`` (``Dataset611_BrainSlices2d``): axial slices, 1 mm, 233 × 197. Training: 40 slices
  from the upper brain (z = 70 … 148 mm above the template's lowest slice: centrum semiovale,
  cortex, ventricles' roofs). Test: 10 slices from the lower brain (z = 22 … 58: temporal
  lobes, basal ganglia' floor, brainstem, cerebellum), each a single-slice NIfTI (nnU-Net's
  and voxseg's 2D convention for medical images).
* ``3d`` (``Dataset612_BrainSlabs3d``): axial slabs 40 mm thick. Training: 8 slabs at
  1.5 mm isotropic from the upper brain (lower faces at z = 70, 78, … 126). Test: 4 slabs
  from the lower brain (lower faces at z = 10, 22, 34, 46) acquired differently: 1 mm in
  plane and 3 mm thick slices, each slice the average of the 1 mm slices it covers (partial
  volume, as a thick-slice clinical acquisition). Images and probability maps are resampled
  with linear interpolation (scipy ``map_coordinates``), labels derived after resampling.

One subject (a population template): the shift is between levels of the anatomy (and, in
3D, resolution), not between subjects. Each run is ``auto_vs_nnunet.py``'s: ``voxseg auto
RAW --time-budget M`` (everything inside the budget), then ``voxseg predict``; nnU-Net v2 with
its own plan (``2d`` resp. ``3d_fullres``) and its default trainer given the epoch count
that fits M minutes from the start of its planning (see that file's docstring); both scored by
``voxseg.evaluation.evaluate_folder`` on ``labelsTs``. Writes
``benchmarks/_work/real_anatomy/results.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

from _common import WORK, ensure_nnunet_venv, machine_info
from auto_vs_nnunet import _write_json, curve_table, run_nnunet, run_voxseg, table

OUT = WORK / "real_anatomy"
TASKS = {
    # key: (nnU-Net id, dataset name, nnU-Net configuration)
    "2d": (611, "Dataset611_BrainSlices2d", "2d"),
    "3d": (612, "Dataset612_BrainSlabs3d", "3d_fullres"),
}
LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2}
TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def _log(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, flush=True)


def _done(row: dict) -> None:
    _log(f"  wall {row['wall_seconds'] / 60:.2f} min, held-out mean Dice {row['mean_dice']:.3f}")


def template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1, grey-matter, white-matter probability), each (x, y, z) at 1 mm, from nilearn's wheel."""
    import nibabel as nib

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "this benchmark reads nilearn's bundled template: pip install --no-deps nilearn"
        )
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    arrays = []
    for kind in ("t1", "gm", "wm"):
        image = nib.load(data / TEMPLATE.format(kind))
        if image.shape != (197, 233, 189) or not np.allclose(image.header.get_zooms(), 1.0):
            raise SystemExit(f"{image.get_filename()}: unexpected grid {image.shape}")
        arrays.append(np.asarray(image.dataobj, dtype=np.float32))
    t1, gm, wm = arrays
    return t1, gm / 255.0, wm / 255.0


def labels_of(gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    label = np.zeros(gm.shape, np.uint8)
    label[(gm >= 0.5) & (gm >= wm)] = LABELS["grey_matter"]
    label[(wm >= 0.5) & (wm > gm)] = LABELS["white_matter"]
    return label


def sample(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    z0: float,
    depth: float,
    thick: bool = False,
) -> np.ndarray:
    """``volume`` (1 mm, x y z) on a grid of ``spacing`` mm covering the whole x-y field and z in
    [z0, z0 + depth) mm; ``thick``: each output slice is the mean over its slice thickness."""
    from scipy.ndimage import map_coordinates, uniform_filter1d

    if thick:
        volume = uniform_filter1d(volume, size=round(spacing[2]), axis=2, mode="nearest")
    axes = [
        np.arange(0, volume.shape[0] - 1 + 1e-6, spacing[0]),
        np.arange(0, volume.shape[1] - 1 + 1e-6, spacing[1]),
        z0 + (spacing[2] - 1) / 2 + np.arange(round(depth / spacing[2])) * spacing[2],
    ]
    grid = np.meshgrid(*axes, indexing="ij")
    return map_coordinates(volume, grid, order=1, mode="nearest").astype(np.float32)


def _save(array: np.ndarray, spacing, z0: float, path: Path, dtype) -> None:
    import nibabel as nib

    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-98.0, -134.0, -72.0 + z0)  # the template's origin (mm)
    image = nib.Nifti1Image(array.astype(dtype), affine)
    image.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)


def build(key: str, raw: Path) -> None:
    """Write the nnU-Net v2 raw dataset ``key`` into ``raw``."""
    t1, gm, wm = template()
    if key == "2d":
        train = [(f"upper_z{z:03d}", (1.0, 1.0, 1.0), z, 1.0, False) for z in range(70, 150, 2)]
        test = [(f"lower_z{z:03d}", (1.0, 1.0, 1.0), z, 1.0, False) for z in range(22, 59, 4)]
    else:
        train = [(f"upper_z{z:03d}", (1.5, 1.5, 1.5), z, 40.0, False) for z in range(70, 127, 8)]
        test = [(f"lower_z{z:03d}", (1.0, 1.0, 3.0), z, 40.0, True) for z in (10, 22, 34, 46)]
    for split, cases in (("Tr", train), ("Ts", test)):
        for name, spacing, z0, depth, thick in cases:
            image = sample(t1, spacing, z0, depth, thick)
            label = labels_of(
                sample(gm, spacing, z0, depth, thick), sample(wm, spacing, z0, depth, thick)
            )
            _save(image, spacing, z0, raw / f"images{split}" / f"{name}_0000.nii.gz", np.float32)
            _save(label, spacing, z0, raw / f"labels{split}" / f"{name}.nii.gz", np.uint8)
    dataset = {
        "channel_names": {"0": "T1"},
        "labels": LABELS,
        "numTraining": len(train),
        "file_ending": ".nii.gz",
        "name": raw.name,
        "description": __doc__.split("\n\n")[2].replace("\n", " "),
    }
    (raw / "dataset.json").write_text(json.dumps(dataset, indent=2))


def prepare(key: str) -> Path:
    raw = OUT / "data" / "nnUNet_raw" / TASKS[key][1]
    if not (raw / "dataset.json").is_file():
        _log(f"{key}: building {raw}")
        build(key, raw)
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=["2d", "3d", "both"], default="both")
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 15.0], help="budgets")
    parser.add_argument("--processes", type=int, default=None, help="see auto_vs_nnunet.py")
    parser.add_argument("--nnunet-da-workers", type=int, default=None, help="nnUNet_n_proc_DA")
    parser.add_argument("--smoke-iterations", type=int, default=None, help="script check only")
    parser.add_argument("--build-only", action="store_true", help="write the datasets and stop")
    parser.add_argument("--only", choices=["voxseg", "nnunet"], default=None, help="one side")
    args = parser.parse_args()

    keys = ["2d", "3d"] if args.task == "both" else [args.task]
    raws = {key: prepare(key) for key in keys}
    if args.build_only:
        print("\n".join(map(str, raws.values())))
        return
    ensure_nnunet_venv()
    results: dict = {
        "command": " ".join(["python", "benchmarks/real_anatomy.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "settings": vars(args),
        "runs": [],
    }
    out = OUT / ("results.json" if args.only is None else f"results_{args.only}.json")
    tables = []
    for key, raw in raws.items():
        for minutes in args.minutes:
            work = OUT / "runs" / f"{key}_{minutes:g}min"
            rows = []
            if args.only != "nnunet":
                _log(f"{key}, {minutes:g} min: voxseg auto ...")
                rows.append(run_voxseg(raw, minutes, work, args.processes))
                _done(rows[-1])
            if args.only != "voxseg":
                _log(f"{key}, {minutes:g} min: nnU-Net ...")
                rows.append(run_nnunet(TASKS[key], raw, minutes, work, args))
                _done(rows[-1])
            results["runs"].append({"task": key, "minutes": minutes, "results": rows})
            _write_json(out, results)
            if len(rows) == 2:
                tables.append(table(key, minutes, rows))
                print(tables[-1], flush=True)
    pairs = [r for r in results["runs"] if len(r["results"]) == 2]
    if len(pairs) > 1:
        print("\n" + curve_table(pairs, "task"))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
