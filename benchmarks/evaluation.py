"""HD95 + NSD on one large mask pair: voxseg vs DeepMind's surface-distance vs MONAI.

Two perturbed ellipsoidal blobs (the "prediction" shifted and differently perturbed) on a
300×512×512 grid with anisotropic spacing. Each library runs in its own fresh process on the
same arrays (loaded from .npy), so its time and peak memory are its own: wall-clock and CPU time
of the metric call(s) only (CPU time is the steadier figure on a busy machine), and peak RSS
above the process's RSS after loading the masks.

    python benchmarks/evaluation.py                       # 300×512×512, spacing 2.5×0.8×0.8
    python benchmarks/evaluation.py --shape 60 128 128    # quick check
    python benchmarks/evaluation.py --skip monai

voxseg and surface-distance compute the same definition (their numbers agree to float32
rounding); MONAI's HD95 uses voxel-centre boundaries without area weights, so it differs
slightly; its NSD runs with ``use_subvoxels=True`` (surface-distance's definition).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import ndimage


def make_pair(shape, spacing, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping ellipsoids with smooth random surface perturbations."""
    rng = np.random.default_rng(seed)
    extent = np.asarray(shape) * np.asarray(spacing)
    masks = []
    for shift in (0.0, 0.02):
        coarse = rng.standard_normal((6, 10, 10)).astype(np.float32)
        noise = ndimage.zoom(
            coarse, [s / c for s, c in zip(shape, coarse.shape, strict=True)], order=1
        )
        zz, yy, xx = (
            ((np.arange(n, dtype=np.float32) + 0.5) * sp - (0.5 + shift) * e) / (0.33 * e)
            for n, sp, e in zip(shape, spacing, extent, strict=True)
        )
        r2 = zz[:, None, None] ** 2 + yy[None, :, None] ** 2 + xx[None, None, :] ** 2
        masks.append(r2 + 0.15 * noise < 1.0)
        del noise, r2
    return masks[0], masks[1]


def run_voxseg(ref, pred, spacing, tol):
    from voxseg.evaluation.metrics import surface_metrics

    m = surface_metrics(pred, ref, spacing, nsd_tolerance_mm=tol)
    return m["hd95"], m["nsd"]


def run_surface_distance(ref, pred, spacing, tol):
    import surface_distance as sd

    d = sd.compute_surface_distances(ref, pred, spacing)
    return sd.compute_robust_hausdorff(d, 95), sd.compute_surface_dice_at_tolerance(d, tol)


def run_monai(ref, pred, spacing, tol):
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    p = torch.from_numpy(pred)[None, None]
    r = torch.from_numpy(ref)[None, None]
    hd = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=spacing)
    nsd = compute_surface_dice(
        p.float(), r.float(), [tol], include_background=True, spacing=spacing, use_subvoxels=True
    )
    return float(hd.item()), float(nsd.item())


METHODS = {"voxseg": run_voxseg, "surface-distance": run_surface_distance, "monai": run_monai}


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux; elsewhere a no-op)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss() -> int:
    """Peak RSS in bytes since the last reset (``VmHWM``; ``ru_maxrss`` where there is none).

    ``ru_maxrss`` alone would not do: Linux carries it over from the parent through
    fork + exec, so a child started by a large parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(name, folder, spacing, tol, queue):
    import psutil

    warnings.simplefilter("ignore")
    ref = np.load(Path(folder) / "ref.npy")
    pred = np.load(Path(folder) / "pred.npy")
    if name == "monai":  # import cost is not part of the metric
        import monai.metrics  # noqa: F401
    elif name == "voxseg":
        from voxseg.evaluation.surface import surfel_area_table

        surfel_area_table(spacing)  # builds the cached marching-cubes table (once per process)
    base = psutil.Process().memory_info().rss
    _reset_peak()
    start, cpu_start = time.perf_counter(), time.process_time()
    hd95, nsd = METHODS[name](ref, pred, spacing, tol)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = _peak_rss()
    queue.put((seconds, cpu, max(peak - base, 0) / 2**20, hd95, nsd))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512))
    parser.add_argument("--spacing", type=float, nargs=3, default=(2.5, 0.8, 0.8))
    parser.add_argument("--tolerance", type=float, default=1.0, help="NSD tolerance, mm")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(METHODS))
    args = parser.parse_args(argv)
    shape, spacing = tuple(args.shape), tuple(args.spacing)

    ref, pred = make_pair(shape, spacing)
    print(
        f"masks {shape}, spacing {spacing} mm, {int(ref.sum()):,} / {int(pred.sum()):,} "
        f"foreground voxels, NSD tolerance {args.tolerance} mm"
    )
    ctx = mp.get_context("spawn")
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "ref.npy", ref)
        np.save(Path(folder) / "pred.npy", pred)
        del ref, pred
        for name in METHODS:
            if name in args.skip:
                continue
            queue = ctx.Queue()
            proc = ctx.Process(target=_child, args=(name, folder, spacing, args.tolerance, queue))
            proc.start()
            rows[name] = queue.get()
            proc.join()
            print(f"  {name}: done in {rows[name][0]:.2f} s", file=sys.stderr)

    base = rows.get("voxseg")
    header = ("method", "HD95 mm", "NSD", "wall s", "CPU s", "peak MB", "wall ×", "CPU ×")
    print("\n" + f"{header[0]:<18}" + "".join(f"{h:>10}" for h in header[1:]))
    for name, (seconds, cpu, peak, hd95, nsd) in rows.items():
        ratios = (f"{seconds / base[0]:.1f}", f"{cpu / base[1]:.1f}") if base else ("-", "-")
        print(
            f"{name:<18}{hd95:>10.4f}{nsd:>10.4f}{seconds:>10.2f}{cpu:>10.2f}{peak:>10.0f}"
            f"{ratios[0]:>10}{ratios[1]:>10}"
        )
    print("(ratios: the method's time over voxseg's; CPU s counts every thread)")


if __name__ == "__main__":
    main()
