"""Benchmark: what ``voxseg predict --output-type dicom-seg rtstruct`` adds to a prediction.

A CT series (default 200 x 512 x 512, pydicom files) and a label map of three smooth organs
(liver-, kidney- and spleen-sized ellipsoids with bumpy outlines) on it. Measured, one run
each: reading the series with its slice headers (what ``predict`` does for any DICOM input),
writing the DICOM-SEG (highdicom) and the RTSTRUCT (contour tracing + pydicom), and reading
both back (highdicom, voxseg's RTSTRUCT reader) as a check. The extra time of the outputs is
the two writes; compare it with the wall time of ``voxseg predict`` on the same volume
(``benchmarks/predict_vs_nnunet.py`` measures that).

    python benchmarks/dicom_outputs.py
    python benchmarks/dicom_outputs.py --shape 60 256 256   # quick check
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import WORK, format_table, machine_info  # noqa: E402


def label_map(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Three ellipsoids with a low-frequency radial bump (non-convex outlines)."""
    rng = np.random.default_rng(seed)
    z, y, x = (
        g / (n - 1)
        for g, n in zip(np.ogrid[: shape[0], : shape[1], : shape[2]], shape, strict=True)
    )
    lab = np.zeros(shape, np.uint8)
    for value, (c, r) in enumerate(
        [((0.5, 0.45, 0.35), (0.3, 0.16, 0.18)), ((0.45, 0.6, 0.7), (0.15, 0.07, 0.05)),
         ((0.5, 0.35, 0.72), (0.15, 0.08, 0.07))], start=1,
    ):  # fmt: skip
        angle = np.arctan2(y - c[1], x - c[2])
        bump = 1 + 0.12 * np.sin(3 * angle + rng.uniform(0, 6)) * np.cos(4 * np.pi * z)
        d = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
        lab[d < bump] = value
    return lab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[200, 512, 512])
    ap.add_argument("--work", type=Path, default=WORK / "dicom_outputs")
    args = ap.parse_args()
    shape = tuple(args.shape)

    import highdicom as hd

    from voxseg.io.dicom import read_dicom_folder
    from voxseg.io.dicom_seg import write_dicom_seg
    from voxseg.io.rtstruct import read_rtstruct, roi_mask, write_rtstruct
    from voxseg.synth.dicom import series_datasets, write_datasets

    shutil.rmtree(args.work, ignore_errors=True)
    lab = label_map(shape)
    values = np.where(lab > 0, 60, 0).astype(np.int16) + np.random.default_rng(1).normal(
        0, 15, shape
    ).astype(np.int16)
    write_datasets(
        series_datasets(values, spacing=(1.25, 0.7, 0.7), first_position=(-180, -180, 0),
                        intercept=-1024),
        args.work / "series",
    )  # fmt: skip
    labels = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3}
    rows = []

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        rows.append([name, f"{time.perf_counter() - t:.2f}"])
        return out

    _, series = timed(
        "read series (pixels + headers)", lambda: read_dicom_folder(args.work / "series")
    )
    timed("write DICOM-SEG", lambda: write_dicom_seg(lab, series, labels, args.work / "SEG.dcm"))
    timed("write RTSTRUCT", lambda: write_rtstruct(lab, series, labels, args.work / "RTSTRUCT.dcm"))
    seg = timed("read SEG back (highdicom)", lambda: hd.seg.segread(args.work / "SEG.dcm"))
    pixels = seg.get_pixels_by_source_instance(series.sop_instance_uids)
    structure = timed(
        "read RTSTRUCT back (voxseg)", lambda: read_rtstruct(args.work / "RTSTRUCT.dcm")
    )
    checks = []
    for v, name in enumerate(["liver", "kidney", "spleen"], start=1):
        same_seg = np.array_equal(pixels[..., v - 1] > 0, lab == v)
        same_rt = np.array_equal(roi_mask(structure.roi(name), series)[0], lab == v)
        checks.append(
            f"{name}: SEG {'=' if same_seg else '!='}, RTSTRUCT {'=' if same_rt else '!='}"
        )
    contours = sum(len(r.contours) for r in structure.rois)
    print(f"{shape[0]}x{shape[1]}x{shape[2]} CT, {contours} contours; machine {machine_info()}")
    print(format_table(["step", "seconds"], rows))
    print("read back equal to the label map: " + "; ".join(checks))


if __name__ == "__main__":
    main()
