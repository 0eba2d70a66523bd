"""Tracing on a large field of view: the tracer's own peak memory and time per case.

    .venv/bin/python benchmarks/tracing_memory.py --field 300 512 512

One ``voxseg synth vessels`` tree (``--tree``, 128³ at 0.5–0.8 mm) is placed in the middle
of a larger field (``--field``, the clinical-size 300×512×512 by default; the rest is
background), and traced from its seed with the reference mask as the local segmenter
(:class:`voxseg.vessels.OracleSegmenter`), so the figures are the tracer's (boxes,
assembly, post-processing, centerline, outputs), not a network's. Each run is a fresh
process: peak RSS during tracing and writing minus the RSS once the image and mask are
loaded, seconds to trace and to write, steps, and the centerline overlap against the
analytic centerline. What this does not measure: the local model's time and memory, and
the comparison with a global model on the same field (accuracy needs trained models).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import WORK, format_table, machine_info
from _common import current_rss_mb as _current_rss_mb


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def place(image, offset):
    """``image`` inside a zero field of ``shape``, voxel ``offset`` of its first voxel; the
    field's geometry keeps every physical point where it was."""
    import numpy as np

    from voxseg.io import Geometry, Image

    field_shape, start = offset
    arr = np.zeros(field_shape, dtype=image.array.dtype)
    sl = tuple(slice(s, s + n) for s, n in zip(start, image.shape, strict=True))
    arr[sl] = image.array
    g = image.geometry
    origin = g.index_to_physical(-np.asarray(start, dtype=float))
    return Image.from_geometry(arr, Geometry(field_shape, g.spacing, tuple(origin), g.direction))


def child(args: argparse.Namespace) -> None:
    """One measured run (a fresh process); prints a JSON line."""
    import numpy as np

    from voxseg.data import Dataset
    from voxseg.io import read_vtp
    from voxseg.vessels import OracleSegmenter, read_seeds, trace
    from voxseg.vessels.metrics import centerline_overlap

    ds = Dataset(args.raw)
    case = ds.cases("Tr")[0]
    image, label = ds.load_case(case)
    field = tuple(args.field)
    start = [max(0, (f - n) // 2) for f, n in zip(field, label.shape, strict=True)]
    label_big = place(label, (field, start))
    image_big = place(image if image.array.ndim == 3 else image.channel(0), (field, start))
    image_big = image_big.with_array(image_big.array.astype(np.float32))
    seeds = read_seeds(ds.root / "seeds" / f"{case.case_id}.json")
    oracle = OracleSegmenter(label_big)
    del image, label
    base = _current_rss_mb()
    t0 = time.perf_counter()
    result = trace(image_big, seeds, oracle)
    t_trace = time.perf_counter() - t0
    t0 = time.perf_counter()
    result.write(Path(args.out), ".nii.gz", image=image_big)
    t_write = time.perf_counter() - t0
    peak = _rss_mb()
    overlap = centerline_overlap(result.segmentation, read_vtp(case.extras["centerline"]))
    print(
        json.dumps(
            {
                "field": list(field),
                "voxels_m": float(np.prod(field)) / 1e6,
                "rss_loaded_mb": round(base, 1),
                "peak_rss_mb": round(peak, 1),
                "tracing_extra_mb": round(peak - base, 1),
                "trace_s": round(t_trace, 2),
                "write_s": round(t_write, 2),
                "steps": len(result.steps),
                "branches": result.num_branches,
                "centerline_overlap": round(overlap, 4),
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--field", type=int, nargs=3, default=[300, 512, 512], metavar=("Z", "Y", "X"))
    p.add_argument("--tree", type=int, nargs=3, default=[128, 128, 128], metavar=("Z", "Y", "X"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=WORK / "tracing_memory")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--raw", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    from voxseg.synth import generate

    raw = args.work / f"tree_{'x'.join(map(str, args.tree))}_seed{args.seed}"
    if not (raw / "dataset.json").is_file():
        generate("vessels", raw, num_train=1, num_test=0, seed=args.seed, shape=tuple(args.tree))
    rows = []
    for field in (args.tree, args.field):
        cmd = [
            sys.executable, __file__, "--child", "--raw", str(raw),
            "--out", str(args.work / "traced" / "x".join(map(str, field))),
            "--field", *map(str, field),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(json.dumps(r), flush=True)
    info = machine_info()
    print()
    print(
        format_table(
            ["field", "Mvoxels", "tracer peak extra MB", "trace s", "write s", "steps", "overlap"],
            [
                [
                    "×".join(map(str, r["field"])),
                    f"{r['voxels_m']:.1f}",
                    f"{r['tracing_extra_mb']:.0f}",
                    f"{r['trace_s']:.1f}",
                    f"{r['write_s']:.1f}",
                    r["steps"],
                    f"{r['centerline_overlap']:.3f}",
                ]
                for r in rows
            ],
        )  # fmt: skip
    )
    print(f"{info['cpus']} CPUs, load {info['load_average_1m_at_start']:.1f} at start")


if __name__ == "__main__":
    main()
