"""Peak memory of centerline extraction alone on a traced region, single call or in slabs.

    .venv/bin/python benchmarks/centerline_memory.py TRACE_DIR [--chunk-voxels N] [--out CL.json]

``TRACE_DIR`` is a trace's output folder (``voxseg trace`` / ``voxseg pipeline predict``:
``segmentation.nii.gz`` and ``steps.json``). The traced region is rebuilt as the tracer
builds it (the 32³ assembly blocks the step boxes reached) and the segmentation cut to it;
then :func:`voxseg.vessels.extract_centerline` runs on it from the first seed, as at the
end of a trace, while a thread samples the RSS every 5 ms. Prints one JSON line: the
region, RSS before the call, its peak, the difference ("extra"), seconds, branches and
length. ``--chunk-voxels 0`` forces the single call; ``--out`` keeps the centerline (JSON)
and ``--compare OTHER.json`` scores it against another run's: the share of each one's
length within 0.5 / 1 / 2 mm of the other and the mean radius difference at points within
0.5 mm.
"""

from __future__ import annotations

import argparse
import gc
import json
import threading
import time
from pathlib import Path

import numpy as np

from _common import current_rss_mb as _rss_mb


def _samples(cl):
    from voxseg.vessels.centerline import polyline_segments, resample_segments

    return resample_segments(*polyline_segments(cl.to_polydata()), 0.2)


def compare(a, b) -> dict:
    """Agreement of two centerlines (see the module)."""
    from scipy.spatial import cKDTree

    pa, wa = _samples(a)
    pb, wb = _samples(b)
    da, db = cKDTree(pb).query(pa)[0], cKDTree(pa).query(pb)[0]
    out = {}
    for t in (0.5, 1.0, 2.0):
        out[f"this_within_{t}mm"] = round(float(wa[da < t].sum() / wa.sum()), 4)
        out[f"other_within_{t}mm"] = round(float(wb[db < t].sum() / wb.sum()), 4)
    ra = np.concatenate([x.radii for x in a.branches])
    rb = np.concatenate([x.radii for x in b.branches])
    d, i = cKDTree(np.concatenate([x.points for x in b.branches])).query(
        np.concatenate([x.points for x in a.branches])
    )
    near = d < 0.5
    out["radius_diff_mm"] = round(float(np.abs(ra[near] - rb[i[near]]).mean()), 4)
    out["other_branches"], out["other_length_mm"] = len(b.branches), round(b.length, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trace_dir", type=Path)
    p.add_argument("--chunk-voxels", type=int, default=None, help="default: the library's")
    p.add_argument("--out", type=Path, help="write the centerline here (JSON)")
    p.add_argument("--compare", type=Path, help="a centerline JSON of another run")
    args = p.parse_args()

    from voxseg.io import Image, read_image
    from voxseg.vessels.centerline import CHUNK_VOXELS, Centerline, extract_centerline
    from voxseg.vessels.subvolume import Box, sub_geometry

    steps = json.loads((args.trace_dir / "steps.json").read_text())
    image = read_image(args.trace_dir / "segmentation.nii.gz")
    shape = np.asarray(image.geometry.shape)
    boxes = np.array([s["box"] for s in steps["steps"] if s["box"]])
    lo = boxes[:, 0].min(0) // 32 * 32
    hi = np.minimum(((boxes[:, 1].max(0) - 1) // 32 + 1) * 32, shape)
    region = Box(tuple(map(int, lo)), tuple(map(int, hi)), tuple(map(int, shape)))
    seg = np.ascontiguousarray(np.asarray(image.array)[region.slices] > 0).view(np.uint8)
    mask = Image.from_geometry(seg, sub_geometry(image.geometry, region))
    del image
    gc.collect()
    chunk = CHUNK_VOXELS if args.chunk_voxels is None else (args.chunk_voxels or None)

    base = peak = _rss_mb()
    done = False

    def poll() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, _rss_mb())
            time.sleep(0.005)

    threading.Thread(target=poll, daemon=True).start()
    t0 = time.perf_counter()
    cl = extract_centerline(mask, root=steps["seeds"][0]["point"], chunk_voxels=chunk)
    seconds = time.perf_counter() - t0
    done = True
    time.sleep(0.02)
    row = {
        "region": region.to_list(),
        "mvoxels": round(seg.size / 1e6, 1),
        "chunk_voxels": chunk,
        "rss_before_mb": round(base),
        "peak_rss_mb": round(peak),
        "extra_mb": round(peak - base),
        "seconds": round(seconds, 1),
        "branches": len(cl.branches),
        "length_mm": round(cl.length, 1),
    }
    cl.geometry = None
    if args.out:
        args.out.write_text(json.dumps(cl.to_json()))
    if args.compare:
        row.update(compare(cl, Centerline.from_json(json.loads(args.compare.read_text()))))
    print(json.dumps(row))


if __name__ == "__main__":
    main()
