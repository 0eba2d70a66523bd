"""Planning + preprocessing of one dataset: voxseg vs nnU-Net v2 (time, memory, accuracy).

    python benchmarks/preprocess_vs_nnunet.py                      # 6 cases 150x512x512, 2 procs
    python benchmarks/preprocess_vs_nnunet.py --cases 2 --shape 40 128 128   # quick check

1. ``voxseg synth organs`` writes ``--cases`` CT-like phantoms (in-plane spacing 0.6-0.9 mm,
   slices 1.5-3 mm, so every case is resampled) as ``Dataset500_Bench`` in an nnU-Net raw
   folder under ``benchmarks/_work/preprocess_vs_nnunet/<size>/`` (reused when it exists).
2. nnU-Net: ``nnUNetv2_plan_and_preprocess -d 500 -c 3d_fullres -np P -npfp P
   --verify_dataset_integrity`` in its own environment (``benchmarks/.venv-nnunet``, made on
   first use). The integrity check is on because ``voxseg plan`` always validates the dataset
   (reading every voxel) before fingerprinting: like is compared with like.
3. voxseg: ``voxseg plan --device cpu -p P --spacing <nnU-Net's 3d_fullres spacing>`` then
   ``voxseg preprocess -c 3d_fullres -p P`` in a fresh ``VOXSEG_HOME``, so both write arrays
   of the same spacing. (voxseg's own spacing choice is recorded afterwards, untimed.)

Each command is timed (wall clock) and its whole process tree polled every 50 ms for the
peak of the summed RSS (and every second for PSS, which splits pages shared between forked
workers). voxseg's
figures are plan + preprocess: time summed, memory the larger peak. No thread limits are
imposed: each tool runs with its own defaults (voxseg gives each worker cpu_count / P torch
threads; nnU-Net's workers are mostly single-threaded NumPy/SciPy, blosc2 with 4 threads).

Accuracy: per case, a float64 reference is computed independently of both tools from the raw
image: crop to the nonzero box (any channel != 0, holes filled: nnU-Net's rule), clip to the
tool's CT percentiles and z-score with the tool's mean/std (each tool's own fingerprint
statistics, so only the resampling differs), then ``scipy.ndimage.zoom(order=3,
mode="nearest", grid_mode=True)`` to the tool's output shape. Mean and max absolute error of
each tool's stored image against it, over every voxel of every case (in units of the
normalised intensity, i.e. foreground standard deviations). Both tools resample z with
nearest neighbour when the spacing anisotropy exceeds 3 (nnU-Net's separate-z rule), which
dominates their error against an all-cubic reference. Both also clip the result to the input
range (skimage ``resize``'s default; nnU-Net per slice, voxseg per volume) where the reference
does not. Label maps are compared between the two tools (voxel agreement).

Prints the table and writes it with every raw figure to ``<work>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from _common import WORK, ensure_nnunet_venv, format_table, machine_info, nnunet_env, run_measured

DATASET_ID = 500
DATASET = f"Dataset{DATASET_ID:03d}_Bench"
CONFIG = "3d_fullres"
TARGETS = {"time": 1 / 5, "rss": 1 / 2, "err": 1.0}


def voxseg_exe() -> str:
    """The ``voxseg`` entry point of the environment running this script."""
    exe = Path(sys.executable).with_name("voxseg")
    if not exe.exists():
        raise SystemExit(f"{exe} not found: run this script with the project's .venv/bin/python")
    return str(exe)


# ---------------------------------------------------------------- dataset


def make_dataset(args: argparse.Namespace, raw: Path, logs: Path) -> Path:
    """The benchmark dataset in ``raw/Dataset500_Bench`` (generated once per parameter set)."""
    root = raw / DATASET
    stamp = raw.parent / "dataset_stamp.json"
    wanted = {"cases": args.cases, "shape": args.shape, "seed": args.seed}
    if (root / "dataset.json").is_file() and stamp.is_file():
        if json.loads(stamp.read_text()) == wanted:
            print(f"reusing {root}")
            return root
    shutil.rmtree(root, ignore_errors=True)
    print(f"writing {args.cases} cases {'x'.join(map(str, args.shape))} to {root} ...", flush=True)
    cmd = [voxseg_exe(), "synth", "organs", root, "--num-train", args.cases, "--num-test", 0]
    cmd += ["--shape", *args.shape, "--inplane-spacing", 0.6, 0.9, "--slice-spacing", 1.5, 3.0]
    cmd += ["--orientation", "fixed", "--seed", args.seed, "--workers", args.processes]
    run_measured(cmd, log=logs / "synth.log")
    stamp.write_text(json.dumps(wanted))
    return root


# ---------------------------------------------------------------- the two runs


def run_nnunet(args: argparse.Namespace, work: Path, logs: Path) -> dict:
    """``nnUNetv2_plan_and_preprocess`` measured; the saved measurement with --reuse-nnunet."""
    pre, res = work / "nnunet_preprocessed", work / "nnunet_results"
    saved = work / "nnunet_run.json"
    if args.reuse_nnunet and saved.is_file() and (pre / DATASET / "nnUNetPlans.json").is_file():
        print(f"reusing nnU-Net's run from {saved}")
        return json.loads(saved.read_text())
    python = ensure_nnunet_venv()
    shutil.rmtree(pre, ignore_errors=True)
    shutil.rmtree(res, ignore_errors=True)
    pre.mkdir(parents=True)
    res.mkdir(parents=True)
    exe = python.with_name("nnUNetv2_plan_and_preprocess")
    cmd = [exe, "-d", DATASET_ID, "-c", CONFIG, "-np", args.processes, "-npfp", args.processes]
    cmd += ["--verify_dataset_integrity"]
    print("nnU-Net: " + " ".join(map(str, cmd[1:])), flush=True)
    env = nnunet_env(work / "raw", pre, res)
    m = run_measured(cmd, env=env, log=logs / "nnunet_plan_and_preprocess.log").to_dict()
    m["steps"] = {"plan_and_preprocess": dict(m)}
    saved.write_text(json.dumps(m, indent=2))
    return m


def nnunet_plans(work: Path) -> dict:
    return json.loads((work / "nnunet_preprocessed" / DATASET / "nnUNetPlans.json").read_text())


def nnunet_spacing(plans: dict) -> list[float]:
    """nnU-Net's 3d_fullres target spacing in the raw array's axis order (z, y, x)."""
    spacing = plans["configurations"][CONFIG]["spacing"]
    return [float(spacing[i]) for i in plans["transpose_backward"]]


def run_voxseg(args: argparse.Namespace, dataset: Path, home: Path, logs: Path, spacing) -> dict:
    """``voxseg plan`` + ``voxseg preprocess`` in a fresh home, each measured."""
    import os

    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {**os.environ, "VOXSEG_HOME": str(home)}
    exe, p = voxseg_exe(), str(args.processes)
    plan_cmd = [exe, "plan", dataset, "--device", "cpu", "-p", p]
    if spacing is not None:
        plan_cmd += ["--spacing", *spacing]
    prep_cmd = [exe, "preprocess", dataset, "-c", CONFIG, "-p", p]
    steps = {}
    for name, cmd in (("plan", plan_cmd), ("preprocess", prep_cmd)):
        print(f"voxseg: {' '.join(map(str, cmd[1:]))}", flush=True)
        steps[name] = run_measured(cmd, env=env, log=logs / f"voxseg_{name}.log").to_dict()
    return {
        "wall_s": sum(s["wall_s"] for s in steps.values()),
        "peak_rss_bytes": max(s["peak_rss_bytes"] for s in steps.values()),
        "peak_pss_bytes": max((s["peak_pss_bytes"] or 0) for s in steps.values()) or None,
        "steps": steps,
    }


def voxseg_own_spacing(dataset: Path, home: Path, logs: Path, processes: int) -> list[float]:
    """The 3d_fullres spacing voxseg's own rule picks (fingerprint cached: not timed)."""
    import os

    from voxseg.planning import read_plans

    env = {**os.environ, "VOXSEG_HOME": str(home)}
    cmd = [voxseg_exe(), "plan", dataset, "--device", "cpu", "-p", processes]
    run_measured([*cmd, "--plan-name", "own"], env=env, log=logs / "voxseg_plan_own.log")
    plans = read_plans(home / "preprocessed" / DATASET, "own")
    return [float(s) for s in plans.configuration(CONFIG).spacing]


# ---------------------------------------------------------------- accuracy


def read_raw_case(dataset: Path, case: str, channels: int) -> np.ndarray:
    """``[c, z, y, x]`` float64 raw image (SimpleITK, independent of both tools)."""
    import SimpleITK as sitk

    ending = json.loads((dataset / "dataset.json").read_text())["file_ending"]
    arrays = []
    for c in range(channels):
        path = dataset / "imagesTr" / f"{case}_{c:04d}{ending}"
        arrays.append(sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float64))
    return np.stack(arrays)


def crop_nonzero(data: np.ndarray) -> np.ndarray:
    """Crop ``[c, z, y, x]`` to the box of (any channel != 0, holes filled)."""
    from scipy.ndimage import binary_fill_holes

    mask = binary_fill_holes(np.any(data != 0, axis=0))
    if not mask.any():
        return data
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return data[(slice(None), *box)]


def reference(channel: np.ndarray, ct: dict, shape: tuple[int, ...], cache: dict) -> np.ndarray:
    """float64 clip → z-score → cubic zoom of one channel to ``shape`` (zoom cached per clip)."""
    from scipy import ndimage

    key = (ct["lower"], ct["upper"], tuple(shape))
    if key not in cache:
        cache.clear()  # one case at a time: keep at most the two tools' references
        clipped = np.clip(channel, ct["lower"], ct["upper"])
        zoom = [n / o for n, o in zip(shape, clipped.shape, strict=True)]
        cache[key] = ndimage.zoom(clipped, zoom, order=3, mode="nearest", grid_mode=True)
    zoomed = cache[key]
    if zoomed.shape != tuple(shape):
        raise RuntimeError(f"scipy zoom gave {zoomed.shape}, wanted {shape}")
    return (zoomed - ct["mean"]) / max(ct["std"], 1e-8)


class ErrorSum:
    """Running mean / max of absolute errors over many arrays."""

    def __init__(self) -> None:
        self.total, self.count, self.max = 0.0, 0, 0.0

    def add(self, out: np.ndarray, ref: np.ndarray) -> None:
        err = np.abs(out.astype(np.float64) - ref)
        self.total += float(err.sum())
        self.count += err.size
        self.max = max(self.max, float(err.max()))

    def result(self) -> dict:
        return {"mean_abs_err": self.total / max(self.count, 1), "max_abs_err": self.max}


def accuracy(dataset: Path, work: Path, home: Path) -> dict:
    """Errors of both tools' stored images against the float64 order-3 reference."""
    import blosc2

    from voxseg.planning import read_plans
    from voxseg.preprocessing import PreprocessedStore

    nn_plans = nnunet_plans(work)
    nn_dir = work / "nnunet_preprocessed" / DATASET
    nn_dir = nn_dir / nn_plans["configurations"][CONFIG]["data_identifier"]
    back = [0, *(i + 1 for i in nn_plans["transpose_backward"])]
    nn_props = nn_plans["foreground_intensity_properties_per_channel"]
    vx_plans = read_plans(home / "preprocessed" / DATASET, "default")
    store = PreprocessedStore(home / "preprocessed" / DATASET / "default" / CONFIG)
    channels = len(vx_plans.normalization)
    nn_ct = [
        {
            "lower": nn_props[str(c)]["percentile_00_5"],
            "upper": nn_props[str(c)]["percentile_99_5"],
            "mean": nn_props[str(c)]["mean"],
            "std": nn_props[str(c)]["std"],
        }
        for c in range(channels)
    ]
    vx_ct = [dict(n.params) for n in vx_plans.normalization]
    if any(n.scheme != "ct" for n in vx_plans.normalization):
        raise SystemExit("the accuracy check assumes CT normalisation on every channel")
    errors = {"nnunet": ErrorSum(), "voxseg": ErrorSum()}
    cases, label_agree, label_total = {}, 0, 0
    for case in store.case_ids():
        raw = crop_nonzero(read_raw_case(dataset, case, channels))
        nn_img = np.asarray(blosc2.open(str(nn_dir / f"{case}.b2nd"), mode="r")[...])
        nn_img = nn_img.transpose(back)
        nn_seg = np.asarray(blosc2.open(str(nn_dir / f"{case}_seg.b2nd"), mode="r")[...])
        nn_seg = np.maximum(nn_seg.transpose(back), 0)  # nnU-Net marks outside-mask with -1
        vx_img, vx_seg, meta = store.open(case)
        vx_img, vx_seg = np.asarray(vx_img[...]), np.asarray(vx_seg[...])
        cache: dict = {}
        per_case = {"raw_cropped_shape": list(raw.shape[1:])}
        for tool, img, cts in (("nnunet", nn_img, nn_ct), ("voxseg", vx_img, vx_ct)):
            one = ErrorSum()
            for c in range(channels):
                ref = reference(raw[c], cts[c], img.shape[1:], cache)
                one.add(img[c], ref)
                errors[tool].add(img[c], ref)
            per_case[tool] = {"shape": list(img.shape[1:]), **one.result()}
        if nn_seg.shape == vx_seg.shape:
            agree = int((nn_seg == vx_seg).sum())
            label_agree += agree
            label_total += nn_seg.size
            per_case["label_agreement"] = agree / nn_seg.size
        cases[case] = per_case
        print(
            f"  {case}: nnU-Net {per_case['nnunet']['shape']} "
            f"mean|err| {per_case['nnunet']['mean_abs_err']:.2e}; voxseg "
            f"{per_case['voxseg']['shape']} mean|err| {per_case['voxseg']['mean_abs_err']:.2e}",
            flush=True,
        )
    return {
        "nnunet": errors["nnunet"].result(),
        "voxseg": errors["voxseg"].result(),
        "label_agreement": label_agree / label_total if label_total else None,
        "shapes_equal": all(c["nnunet"]["shape"] == c["voxseg"]["shape"] for c in cases.values()),
        "cases": cases,
        "normalization": {"nnunet": nn_ct, "voxseg": vx_ct},
    }


# ---------------------------------------------------------------- report


def table(nn: dict, vx: dict, acc: dict) -> tuple[str, dict[str, float]]:
    def row(name: str, run: dict, err: dict) -> list[str]:
        return [
            name,
            f"{run['wall_s']:.1f}",
            f"{run['peak_rss_bytes'] / 2**20:.0f}",
            f"{(run['peak_pss_bytes'] or 0) / 2**20:.0f}",
            f"{err['mean_abs_err']:.2e}",
            f"{err['max_abs_err']:.2e}",
        ]

    def ratio(key: str, a: dict, b: dict) -> float:
        return a[key] / b[key] if b.get(key) else float("nan")

    ratios = {
        "time": ratio("wall_s", vx, nn),
        "rss": ratio("peak_rss_bytes", vx, nn),
        "pss": ratio("peak_pss_bytes", vx, nn) if vx["peak_pss_bytes"] else float("nan"),
        "mean_err": ratio("mean_abs_err", acc["voxseg"], acc["nnunet"]),
        "max_err": ratio("max_abs_err", acc["voxseg"], acc["nnunet"]),
    }

    def mark(value: float, target: float) -> str:
        return f"{value:.2f} {'ok' if value <= target else 'MISS'}"

    rows = [
        row("nnU-Net v2 plan_and_preprocess", nn, acc["nnunet"]),
        row("voxseg plan + preprocess", vx, acc["voxseg"]),
        [
            "ratio voxseg / nnU-Net",
            mark(ratios["time"], TARGETS["time"]),
            mark(ratios["rss"], TARGETS["rss"]),
            f"{ratios['pss']:.2f}",
            mark(ratios["mean_err"], TARGETS["err"]),
            mark(ratios["max_err"], TARGETS["err"]),
        ],
        ["target", "<= 0.20", "<= 0.50", "", "<= 1.00", "<= 1.00"],
    ]
    headers = ["tool", "wall s", "peak RSS MB", "peak PSS MB", "mean |err|", "max |err|"]
    return format_table(headers, rows), ratios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--shape", type=int, nargs=3, default=[150, 512, 512], metavar=("Z", "Y", "X"))
    p.add_argument("--processes", type=int, default=2, help="worker processes for both tools")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, help="work folder (default benchmarks/_work/...)")
    p.add_argument(
        "--reuse-nnunet", action="store_true", help="reuse nnU-Net's last run in the work folder"
    )
    args = p.parse_args()
    voxseg_exe()
    size = f"c{args.cases}_{'x'.join(map(str, args.shape))}_p{args.processes}_s{args.seed}"
    work = (args.work or WORK / "preprocess_vs_nnunet" / size).resolve()
    logs, raw, home = work / "logs", work / "raw", work / "voxseg_home"
    logs.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    started = time.strftime("%Y-%m-%d %H:%M:%S")

    dataset = make_dataset(args, raw, logs)
    nn = run_nnunet(args, work, logs)
    spacing = nnunet_spacing(nnunet_plans(work))
    vx = run_voxseg(args, dataset, home, logs, spacing)
    own = voxseg_own_spacing(dataset, home, logs, args.processes)
    print("accuracy against the float64 order-3 reference:", flush=True)
    acc = accuracy(dataset, work, home)

    text, ratios = table(nn, vx, acc)
    shape = "x".join(map(str, args.shape))
    print(
        f"\n{args.cases} CT phantoms {shape}, {CONFIG} at spacing "
        f"{'x'.join(f'{s:.3g}' for s in spacing)} (nnU-Net's; voxseg's own rule: "
        f"{'x'.join(f'{s:.3g}' for s in own)}), {args.processes} processes, "
        f"{info['cpus']} CPUs, load {info['load_average_1m_at_start']:.1f} at start"
    )
    print(text)
    if acc["label_agreement"] is not None:
        print(f"label maps: {100 * acc['label_agreement']:.3f}% of voxels agree")
    if not acc["shapes_equal"]:
        print("note: output shapes differ between the tools for some cases (see results.json)")
    result = {
        "started": started,
        "machine": info,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "target_spacing": spacing,
        "voxseg_own_spacing": own,
        "nnunet": nn,
        "voxseg": vx,
        "accuracy": acc,
        "ratios": ratios,
        "targets": TARGETS,
        "table": text,
    }
    out = work / "results.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"results written to {out}")


if __name__ == "__main__":
    main()
