"""How long ``voxseg report`` takes for many CT cases, and how fast its pages load.

Writes ``--distinct`` CT-like cases (int16 image with noise, a reference of three ellipsoid
organs, a prediction with the organs shifted and, in every fifth case, one missed) and
evaluates them once without surface distances. The ``--cases`` cases of the report are hard
links to them (case ``i`` is distinct case ``i % distinct``): every case page reads and packs
its own three files as it would for distinct scans, while generating the data stays quick.
Their ``summary.json`` repeats the distinct cases' metrics (the report reuses the
evaluation). Then ``write_report`` is timed — wall and CPU seconds of this process and its
workers — and the index and one case page are opened in headless Chromium
(``/usr/bin/chromium``, as the tests use it; ``--no-browser`` skips that).

    python benchmarks/report_scale.py                                # 100 cases of 300 x 512 x 512
    python benchmarks/report_scale.py --cases 12 --distinct 3 --shape 40 128 128
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SPACING = (2.0, 0.8, 0.8)  # z y x, mm
#: organ centre (z, y, x as fractions of the grid), radius (fraction of y/x; twice along z), label
ORGANS = [(0.5, 0.45, 0.35, 0.18, 1), (0.5, 0.6, 0.7, 0.08, 2), (0.45, 0.4, 0.7, 0.1, 3)]


def _ellipsoid(shape: tuple[int, int, int], centre, radii) -> tuple[tuple[slice, ...], np.ndarray]:
    """The box of an ellipsoid in the grid and its mask there (computed in the box only)."""
    box = tuple(
        slice(max(int(c - r) - 1, 0), min(int(c + r) + 2, s))
        for c, r, s in zip(centre, radii, shape, strict=True)
    )
    z, y, x = (
        (np.arange(b.start, b.stop, dtype=np.float32) - c) / r
        for b, c, r in zip(box, centre, radii, strict=True)
    )
    mask = z[:, None, None] ** 2 + y[None, :, None] ** 2 + x[None, None, :] ** 2 < 1
    return box, mask


def write_case(folder: Path, i: int, shape: tuple[int, int, int]) -> None:
    """Case ``case_{i:03d}``: image (CT-like, uniform noise of sd 15 HU), reference, prediction."""
    from voxseg.io import Image, write_image

    rng = np.random.default_rng(i)
    y, x = np.ogrid[: shape[1], : shape[2]]
    body = ((y - shape[1] / 2) / (0.45 * shape[1])) ** 2 + (
        (x - shape[2] / 2) / (0.4 * shape[2])
    ) ** 2 < 1
    image = np.empty(shape, np.int16)
    image[:] = np.where(body, 40, -1000).astype(np.int16)
    ref = np.zeros(shape, np.uint8)
    for cz, cy, cx, r, v in ORGANS:
        centre = (cz * shape[0], cy * shape[1], cx * shape[2])
        box, mask = _ellipsoid(shape, centre, (2 * r * shape[0], r * shape[1], r * shape[2]))
        ref[box][mask] = v
        image[box][mask] = 60 + 20 * v
    image += rng.integers(-26, 27, shape, dtype=np.int16)
    pred = np.roll(ref, 3 + i % 4, axis=2)
    if i % 5 == 0:
        pred[pred == 2] = 0
    name = f"case_{i:03d}"
    for arr, path in (
        (image, folder / "raw" / "imagesTs" / f"{name}_0000.nii.gz"),
        (ref, folder / "raw" / "labelsTs" / f"{name}.nii.gz"),
        (pred, folder / "pred" / f"{name}.nii.gz"),
    ):
        write_image(Image(arr, spacing=SPACING), path)


DATASET_JSON = (
    '{"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, '
    '"kidney": 2, "spleen": 3}, "numTraining": 0, "file_ending": ".nii.gz"}'
)


def _folders(root: Path) -> None:
    for sub in ("raw/imagesTs", "raw/labelsTs", "pred"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "raw" / "dataset.json").write_text(DATASET_JSON)


def distinct_cases(root: Path, n: int, shape: tuple[int, int, int], processes: int) -> dict:
    """Write and evaluate ``n`` distinct cases under ``root`` once; their summary."""
    from voxseg.config import read_json
    from voxseg.evaluation import evaluate_folder

    if (root / "pred" / "summary.json").is_file():
        return read_json(root / "pred" / "summary.json")
    _folders(root)
    tic = time.perf_counter()
    for i in range(n):
        write_case(root, i, shape)
    print(f"wrote {n} distinct cases in {time.perf_counter() - tic:.0f} s", flush=True)
    tic = time.perf_counter()
    summary = evaluate_folder(
        root / "pred", root / "raw" / "labelsTs", num_processes=processes, surface=False
    )
    print(f"evaluated them (no surface metrics) in {time.perf_counter() - tic:.0f} s", flush=True)
    return summary


def linked_cases(root: Path, distinct: Path, summary: dict, n: int) -> Path:
    """``n`` cases hard-linked to the distinct ones, with the matching ``summary.json``."""
    from voxseg.evaluation.evaluate import summarise, write_summary

    if root.exists():
        shutil.rmtree(root)
    _folders(root)
    per_case = []
    source = summary["metric_per_case"]
    for i in range(n):
        d = source[i % len(source)]
        name = f"case_{i:03d}"
        stem = Path(d["reference"]).name[: -len(".nii.gz")]
        links = (
            ("raw/imagesTs", f"{stem}_0000.nii.gz", f"{name}_0000.nii.gz"),
            ("raw/labelsTs", f"{stem}.nii.gz", f"{name}.nii.gz"),
            ("pred", f"{stem}.nii.gz", f"{name}.nii.gz"),
        )
        for sub, src, dst in links:
            os.link(distinct / sub / src, root / sub / dst)
        per_case.append(
            {
                "case": name,
                "prediction": str(root / "pred" / f"{name}.nii.gz"),
                "reference": str(root / "raw" / "labelsTs" / f"{name}.nii.gz"),
                "metrics": d["metrics"],
            }
        )
    labels = summary["labels"]
    write_summary(
        {
            **{k: summary[k] for k in ("labels", "ignore_label", "nsd_tolerance_mm")},
            "prediction": str(root / "pred"),
            "reference": str(root / "raw" / "labelsTs"),
            "num_cases": n,
            **summarise(per_case, list(labels)),
            "metric_per_case": per_case,
        },
        root / "pred",
    )
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--distinct", type=int, default=10, help="distinct cases behind the links")
    ap.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--no-browser", action="store_true", help="do not time page loads")
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "report_scale")
    args = ap.parse_args()
    from voxseg.report import write_report

    shape = tuple(args.shape)
    grid = "x".join(map(str, shape))
    distinct = args.work / f"distinct{args.distinct}x{grid}"
    summary = distinct_cases(distinct, args.distinct, shape, args.processes)
    work = linked_cases(args.work / f"{args.cases}x{grid}", distinct, summary, args.cases)
    out = work / "report"
    load0 = os.getloadavg()[0]
    tic = time.perf_counter()
    cpu0 = _cpu_seconds()
    write_report(work / "pred", out, num_processes=args.processes)
    build = time.perf_counter() - tic
    cpu = _cpu_seconds() - cpu0
    load1 = os.getloadavg()[0]
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    index_s, case_s = (float("nan"),) * 2 if args.no_browser else load_times(out)
    print()
    print(
        f"load average (1 min) before / after the build: {load0:.1f} / {load1:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(
        "| cases (distinct) | shape (z y x) | processes | build wall (s) | build CPU (s) "
        "| CPU s per case | report (MB) | index load (s) | case page ready (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.cases} ({args.distinct}) | {' × '.join(map(str, shape))} | {args.processes} "
        f"| {build:.1f} | {cpu:.1f} | {cpu / args.cases:.2f} | {size / 1e6:.0f} "
        f"| {index_s:.2f} | {case_s:.2f} |"
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
