"""CPU seconds per case page's data (``build_case_view``) for 300 × 512 × 512 CT cases, with
the three ``.nii.gz`` files read by SimpleITK as copies (``copy``) or as read-only views of
its buffers (``view``), or as the report reads them now (``isal``: ISA-L inflation, and of
the image only the slices the viewer shows). Each mode runs in fresh processes, alternated,
so all see the same machine load.

    python benchmarks/report_case_read.py                 # 2 cases, 5 rounds, all modes
    python benchmarks/report_case_read.py --rounds 3 --modes view isal
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one(work: Path, mode: str, cases: int) -> float:
    """Mean CPU seconds of one case view after a warm-up case (run in a child process)."""
    import voxseg.io.nifti as nifti
    import voxseg.report.cases as rc
    from voxseg.io import read_image

    if mode in ("copy", "view"):  # SimpleITK reads every file whole
        nifti.isal_available = lambda: False
    if mode == "copy":
        rc.read_image = lambda p, is_label=False, copy=True: read_image(p, is_label)

    def src(i: int) -> rc.CaseSources:
        return rc.CaseSources(
            f"case_{i:03d}",
            [work / "raw" / "imagesTs" / f"case_{i:03d}_0000.nii.gz"],
            work / "raw" / "labelsTs" / f"case_{i:03d}.nii.gz",
            work / "pred" / f"case_{i:03d}.nii.gz",
        )

    rc.build_case_view(src(0), True)
    order = [i % cases for i in range(1, 2 * cases + 1)]
    tic = time.process_time()
    for i in order:
        rc.build_case_view(src(i), True)
    return (time.process_time() - tic) / len(order)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=2)
    ap.add_argument("--shape", type=int, nargs=3, default=[300, 512, 512])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--modes", nargs="+", default=["copy", "view", "isal"])
    ap.add_argument("--work", type=Path, default=HERE / "_work" / "report_case_read")
    ap.add_argument("--child", nargs=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    shape = tuple(args.shape)
    work = args.work / "x".join(map(str, shape))
    if args.child:
        print(f"{one(work, args.child[0], args.cases):.4f}")
        return
    sys.path.insert(0, str(HERE))
    from report_scale import write_case

    for sub in ("raw/imagesTs", "raw/labelsTs", "pred"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    for i in range(args.cases):
        if not (work / "pred" / f"case_{i:03d}.nii.gz").is_file():
            write_case(work, i, shape)
    times: dict[str, list[float]] = {m: [] for m in args.modes}
    for _ in range(args.rounds):
        for mode in times:
            cmd = [sys.executable, __file__, "--child", mode, "--work", str(args.work)]
            cmd += ["--cases", str(args.cases), "--shape", *map(str, shape)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            times[mode].append(float(out.split()[-1]))
    print("| read | CPU s per case (mean) | rounds |")
    print("|---|---|---|")
    for mode, ts in times.items():
        print(f"| {mode} | {sum(ts) / len(ts):.2f} | {' '.join(f'{t:.2f}' for t in ts)} |")
    first = args.modes[0]
    for mode in args.modes[1:]:
        print(f"ratio {mode} / {first}: {sum(times[mode]) / sum(times[first]):.2f}")


if __name__ == "__main__":
    main()
