"""Benchmark: cubic resampling of one CT-sized volume to 1 mm and back.

voxseg (torch, chunked) beside ``scipy.ndimage.zoom(order=3)`` (what nnU-Net's skimage
resize runs) and SimpleITK's B-spline ``Resample``; each method runs in its own subprocess
so its peak memory is its own. Prints wall time, peak extra memory (above the input) and
the round-trip error, with ratios to voxseg.

    python benchmarks/resample.py                      # 300 x 512 x 512, spacing 1.5/0.7/0.7
    python benchmarks/resample.py --shape 60 128 128   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

import numpy as np

METHODS = ("voxseg", "scipy", "sitk")


def make_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A smooth random float32 field: coarse noise upsampled trilinearly (cheap, lean)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 1, *[max(2, s // 8) for s in shape], generator=g)
    vol = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear")
    return (vol[0, 0] * 300 + 40).numpy()


class PeakRSS:
    """Peak resident memory of this process while active (psutil polling + ru_maxrss)."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self._ru_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        ru_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if ru_after > self._ru_before:
            self.peak = max(self.peak, ru_after)


def prepare(method: str):
    """Import the method's libraries (outside the measurement) and return ``fwd(x, shape)``."""
    if method == "voxseg":
        from voxseg.spatial import resample_data

        def fwd(x, s):
            return resample_data(x[None], s, order=3, clip=False)[0]  # scipy does not clip

    elif method == "scipy":
        from scipy import ndimage

        def fwd(x, s):
            zoom = [n / o for n, o in zip(s, x.shape, strict=True)]
            return ndimage.zoom(x, zoom, order=3, mode="nearest", grid_mode=True)

    elif method == "sitk":
        import SimpleITK as sitk

        def fwd(x, s):
            img = sitk.GetImageFromArray(x)
            out_spacing = [n / m for n, m in zip(x.shape[::-1], s[::-1], strict=True)]
            origin = [(o - 1) / 2 for o in out_spacing]  # keep the grid's outer edges
            res = sitk.Resample(
                img, s[::-1], sitk.Transform(), sitk.sitkBSpline, origin, out_spacing,
                img.GetDirection(), 0.0, sitk.sitkFloat32,
            )  # fmt: skip
            return sitk.GetArrayViewFromImage(res).copy()

    else:
        raise ValueError(method)
    return fwd


def worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    from voxseg.spatial import compute_new_shape

    vol = make_volume(tuple(args.shape))
    new_shape = compute_new_shape(vol.shape, args.spacing, args.target)
    fwd = prepare(args.worker)
    import psutil

    base = psutil.Process().memory_info().rss
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        back = fwd(fwd(vol, new_shape), vol.shape)
        seconds = time.perf_counter() - t0
    err = float(np.abs(back - vol).max() / (vol.max() - vol.min()))
    print(json.dumps({"seconds": seconds, "extra_mb": (mem.peak - base) / 2**20, "err": err}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512], metavar=("Z", "Y", "X"))
    p.add_argument("--spacing", type=float, nargs=3, default=[1.5, 0.7, 0.7])
    p.add_argument("--target", type=float, nargs=3, default=[1.0, 1.0, 1.0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--threads", type=int, default=0, help="threads for torch/ITK (0: default)")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    from voxseg.spatial import compute_new_shape

    new_shape = compute_new_shape(args.shape, args.spacing, args.target)
    vol_mb = np.prod(args.shape) * 4 / 2**20
    print(
        f"{tuple(args.shape)} float32 ({vol_mb:.0f} MB) spacing {tuple(args.spacing)} -> "
        f"{tuple(args.target)} {new_shape} -> back; cubic; threads {args.threads or 'default'}; "
        f"{os.cpu_count()} CPUs"
    )
    results = {}
    for m in args.methods:
        cmd = [sys.executable, __file__, "--worker", m, "--shape", *map(str, args.shape)]
        cmd += ["--spacing", *map(str, args.spacing), "--target", *map(str, args.target)]
        cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{m}: failed\n{proc.stderr[-2000:]}")
            continue
        results[m] = json.loads(proc.stdout.strip().splitlines()[-1])
    ref = results.get("voxseg")
    print(f"{'method':<8} {'time s':>8} {'x voxseg':>9} {'peak extra MB':>14} {'x voxseg':>9} "
          f"{'round-trip err':>15}")  # fmt: skip
    for m, r in results.items():
        t_ratio = r["seconds"] / ref["seconds"] if ref else float("nan")
        m_ratio = r["extra_mb"] / ref["extra_mb"] if ref and ref["extra_mb"] > 0 else float("nan")
        print(f"{m:<8} {r['seconds']:>8.2f} {t_ratio:>9.2f} {r['extra_mb']:>14.0f} "
              f"{m_ratio:>9.2f} {r['err']:>15.2e}")  # fmt: skip


if __name__ == "__main__":
    main()
