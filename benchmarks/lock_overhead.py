"""Time a folder lock (acquire + release) as ``predict``/``preprocess``/``train`` take it.

python benchmarks/lock_overhead.py [--runs 200] [--folder DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from voxseg.locks import folder_lock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--folder", default=None, help="where to lock (default: a temp folder)")
    args = parser.parse_args()
    folder = args.folder or tempfile.mkdtemp(prefix="voxseg-lock-")
    times = []
    for _ in range(args.runs):
        tic = time.perf_counter()
        with folder_lock(folder, "benchmark folder"):
            pass
        times.append(time.perf_counter() - tic)
    times.sort()
    print("| runs | median ms | p95 ms | max ms |")
    print("|---|---|---|---|")
    median, p95 = times[len(times) // 2], times[int(0.95 * (len(times) - 1))]
    print(f"| {args.runs} | {median * 1e3:.2f} | {p95 * 1e3:.2f} | {times[-1] * 1e3:.2f} |")


if __name__ == "__main__":
    main()
