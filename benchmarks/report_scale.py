"""How long ``voxseg report`` takes for many CT cases, and how fast its pages load.

Writes N CT-like cases (int16 image, a reference of three ellipsoid organs, a prediction with
the organs shifted and one missed), evaluates them once without surface distances (the
report reuses ``summary.json``), then times ``write_report`` and the index and one case page
loading in headless Chromium (``/usr/bin/chromium``, as the tests use it).

    python benchmarks/report_scale.py                       # 100 cases of 150 x 512 x 512
    python benchmarks/report_scale.py --cases 20 --shape 300 512 512 --processes 2
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent


def write_case(folder: Path, i: int, shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(i)
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    c = np.array(shape) / 2
    body = ((y - c[1]) / (0.45 * shape[1])) ** 2 + ((x - c[2]) / (0.4 * shape[2])) ** 2 < 1
    image = np.broadcast_to(np.where(body, 40, -1000), shape).astype(np.int16)
    ref = np.zeros(shape, np.uint8)
    organs = [(0.5, 0.45, 0.35, 0.18, 1), (0.5, 0.6, 0.7, 0.08, 2), (0.45, 0.4, 0.7, 0.1, 3)]
    for cz, cy, cx, r, v in organs:
        zz, yy, xx = cz * shape[0], cy * shape[1], cx * shape[2]
        m = (
            ((z - zz) / (2 * r * shape[0])) ** 2
            + ((y - yy) / (r * shape[1])) ** 2
            + ((x - xx) / (r * shape[2])) ** 2
        ) < 1
        ref[m] = v
        image[m] = 60 + 20 * v
    image += rng.normal(0, 15, shape).astype(np.int16)
    pred = np.roll(ref, 3 + i % 4, axis=2)
    if i % 5 == 0:
        pred[pred == 2] = 0
    for name, arr, sub in (("image", image, "imagesTs"), ("ref", ref, "labelsTs")):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((0.8, 0.8, 2.0))
        suffix = "_0000" if name == "image" else ""
        sitk.WriteImage(img, str(folder / "raw" / sub / f"case_{i:03d}{suffix}.nii.gz"), True)
    p = sitk.GetImageFromArray(pred)
    p.SetSpacing((0.8, 0.8, 2.0))
    sitk.WriteImage(p, str(folder / "pred" / f"case_{i:03d}.nii.gz"), True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--shape", type=int, nargs=3, default=[150, 512, 512])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "report_scale")
    args = ap.parse_args()
    from voxseg.evaluation import evaluate_folder
    from voxseg.report import write_report

    shape = tuple(args.shape)
    work = args.work / f"{args.cases}x{'x'.join(map(str, shape))}"
    if not (work / "pred" / "summary.json").is_file():
        for sub in ("raw/imagesTs", "raw/labelsTs", "pred"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        (work / "raw" / "dataset.json").write_text(
            '{"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, '
            '"kidney": 2, "spleen": 3}, "numTraining": 0, "file_ending": ".nii.gz"}'
        )
        tic = time.perf_counter()
        for i in range(args.cases):
            write_case(work, i, shape)
        print(f"wrote {args.cases} cases in {time.perf_counter() - tic:.0f} s")
        tic = time.perf_counter()
        evaluate_folder(
            work / "pred", work / "raw" / "labelsTs", num_processes=args.processes, surface=False
        )
        print(f"evaluated (no surface metrics) in {time.perf_counter() - tic:.0f} s")
    out = work / "report"
    shutil.rmtree(out, ignore_errors=True)
    tic = time.perf_counter()
    cpu0 = _cpu_seconds()
    write_report(work / "pred", out, num_processes=args.processes)
    build = time.perf_counter() - tic
    cpu = _cpu_seconds() - cpu0
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    index_s, case_s = load_times(out)
    print()
    print(f"load average during the build: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        "| cases | shape (z y x) | processes | build (s) | build CPU (s) | report size (MB) "
        "| index load (s) | case page ready (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.cases} | {' × '.join(map(str, shape))} | {args.processes} | {build:.1f} | "
        f"{cpu:.1f} | {size / 1e6:.0f} | {index_s:.2f} | {case_s:.2f} |"
    )


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def load_times(out: Path) -> tuple[float, float]:
    from playwright.sync_api import sync_playwright

    from voxseg.report.browser import launch

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page()
        page.goto("about:blank")
        tic = time.perf_counter()
        page.goto((out / "index.html").as_uri(), wait_until="load")
        index_s = time.perf_counter() - tic
        first = sorted((out / "cases").glob("*.html"))[0]
        tic = time.perf_counter()
        page.goto(first.as_uri(), wait_until="load")
        page.wait_for_selector("#viewer[data-ready='1']")
        case_s = time.perf_counter() - tic
        browser.close()
    return index_s, case_s


if __name__ == "__main__":
    main()
