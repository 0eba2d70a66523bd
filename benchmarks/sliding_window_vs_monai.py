"""voxseg's sliding window vs MONAI's ``sliding_window_inference`` on the same network.

Same input, same network, same windows (step 0.5 of the patch), Gaussian weights σ =
patch/8, no TTA. Prints time and output agreement:

* with voxseg's window weight passed to MONAI (``roi_weight_map``), the two must agree within
  float tolerance — the sliding-window mechanics are the same;
* with MONAI's own Gaussian (floored at 1e-3, centred between voxels for even patches) the
  difference is reported, not asserted.

    python benchmarks/sliding_window_vs_monai.py [--shape 160 160 160] [--patch 64 64 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from voxseg.inference.sliding_window import WindowSettings, predict_logits
from voxseg.nets import Topology, build_network
from voxseg.spatial.tiling import gaussian_importance_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[160, 160, 160])
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--features", type=int, default=16, help="features of the first stage")
    parser.add_argument("--batch-windows", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build_network(
        "unet",
        in_channels=1,
        num_classes=3,
        topology=Topology.simple(3, 5, args.features),
        patch_size=tuple(args.patch),
    ).eval()
    x = np.random.default_rng(0).normal(size=(1, *args.shape)).astype(np.float32)
    patch = tuple(args.patch)
    settings = WindowSettings(patch, step=0.5, tta=False, batch_windows=args.batch_windows)
    cpu = torch.device("cpu")

    def run_voxseg():
        return predict_logits(x, [net], 3, settings, device=cpu)

    def run_monai(weight=None):
        with torch.no_grad():
            return sliding_window_inference(
                torch.from_numpy(x)[None],
                patch,
                args.batch_windows,
                net,
                overlap=0.5,
                mode="gaussian",
                sigma_scale=0.125,
                roi_weight_map=weight,
            )[0]

    from monai.inferers.utils import _get_scan_interval, dense_patch_slices

    from voxseg.spatial.tiling import sliding_window_starts

    monai_starts = sorted(
        {
            tuple(sl.start for sl in w)
            for w in dense_patch_slices(
                tuple(args.shape),
                patch,
                _get_scan_interval(tuple(args.shape), patch, 3, (0.5,) * 3),
            )
        }
    )
    ours = sliding_window_starts(args.shape, patch, 0.5)
    same_windows = monai_starts == sorted(
        (a, b, c) for a in ours[0] for b in ours[1] for c in ours[2]
    )
    if not same_windows:
        print(
            "note: MONAI and nnU-Net/voxseg place windows differently for this shape; "
            "choose shape = patch + k * patch / 2 to compare outputs"
        )
    run_voxseg()  # warm-up (thread pools, allocator), not timed
    rows = []
    for name, fn in [
        ("voxseg", run_voxseg),
        ("MONAI (voxseg weights)", lambda: run_monai(gaussian_importance_map(patch))),
        ("MONAI (own Gaussian)", run_monai),
    ]:
        tic = time.perf_counter()
        out = fn()
        rows.append((name, time.perf_counter() - tic, out))
    ref = rows[0][2]
    print(
        f"input {tuple(args.shape)}, patch {patch}, unet with {args.features} base features, "
        f"{args.threads} threads, batch windows {args.batch_windows}"
    )
    print(f"{'method':<26}{'time s':>9}{'× voxseg':>10}{'max |Δ logits|':>16}{'argmax agree':>14}")
    for name, seconds, out in rows:
        diff = float((out - ref).abs().max())
        agree = float((out.argmax(0) == ref.argmax(0)).float().mean())
        print(f"{name:<26}{seconds:>9.2f}{seconds / rows[0][1]:>10.2f}{diff:>16.2e}{agree:>14.5f}")


if __name__ == "__main__":
    main()
