"""Augmented training batches per second: voxseg vs nnU-Net v2, same input, same transforms.

    python benchmarks/augmentation_vs_nnunet.py                 # 2 x 1 x 128^3, 2 processes
    python benchmarks/augmentation_vs_nnunet.py --patch 64 --seconds 10

nnU-Net's side is ``nnUNetTrainer.get_training_transforms`` (batchgeneratorsv2) applied per
sample exactly as ``nnUNetDataLoader.generate_train_batch`` does (no grad, one thread per
process), in ``--processes`` worker processes: the work its ``NonDetMultiThreadedAugmenter``
workers do, without its queue and pinning overhead. voxseg's side is
``build_augmentation("nnunet")`` on whole batches in the same number of processes, one
thread each. Both read the same input crop (nnU-Net's ``initial_patch_size`` for the patch)
and write the same patch. nnU-Net is never installed in the project's environment: it lives
in ``benchmarks/.venv-nnunet`` (created on first run with pip) and runs as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import time

import numpy as np

from _common import ensure_nnunet_venv  # benchmarks/_common.py (the script's folder)


def make_batch(batch: int, size: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The same input on both sides: smooth-ish intensities and three blocky labels."""
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(batch, 1, *size)).astype(np.float32)
    coarse = rng.integers(0, 3, size=(batch, 1, *[s // 16 + 1 for s in size]))
    for axis, s in enumerate(size):
        coarse = np.repeat(coarse, 16, axis=2 + axis).take(range(s), axis=2 + axis)
    seg = coarse.astype(np.int16)
    image += seg  # labels visible in the image
    return image, seg


def _timed_loop(step, seconds: float, barrier, queue) -> None:
    step()  # warm-up (caches, first allocations)
    barrier.wait()
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    queue.put((count, time.perf_counter() - start))


def _nnunet_worker(patch, in_size, batch, seconds, barrier, queue, seed) -> None:
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    rotation = (-30.0 / 360 * 2 * np.pi, 30.0 / 360 * 2 * np.pi)
    transforms = nnUNetTrainer.get_training_transforms(patch, rotation, None, (0, 1, 2), False)
    image, seg = make_batch(batch, in_size)
    np.random.seed(seed)  # noqa: NPY002 (batchgeneratorsv2 draws from the global state)
    torch.manual_seed(seed)

    def step() -> None:
        with torch.no_grad(), threadpool_limits(limits=1, user_api=None):
            data_all = torch.empty((batch, 1, *patch), dtype=torch.float32)
            seg_all = torch.empty((batch, 1, *patch), dtype=torch.int16)
            for j in range(batch):
                out = transforms(
                    image=torch.from_numpy(image[j]).float(),
                    segmentation=torch.from_numpy(seg[j]).to(torch.int16),
                )
                data_all[j] = out["image"]
                seg_all[j] = out["segmentation"]

    _timed_loop(step, seconds, barrier, queue)


def _voxseg_worker(patch, in_size, batch, seconds, barrier, queue, seed, device="cpu") -> None:
    import torch

    from voxseg.augment import build_augmentation

    torch.set_num_threads(1)
    augment = build_augmentation("nnunet", spatial_dims=len(patch), patch_size=patch)
    image, seg = make_batch(batch, in_size)
    image_t = torch.from_numpy(image).to(device)
    seg_t = torch.from_numpy(seg).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)

    def step() -> None:
        with torch.no_grad():
            augment(image_t, seg_t, generator)
        if device != "cpu":
            torch.cuda.synchronize()

    _timed_loop(step, seconds, barrier, queue)


def run_parallel(worker, processes: int, *args) -> float:
    """Batches per second summed over ``processes`` workers running at the same time."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(*args, barrier, queue, seed)) for seed in range(processes)
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise SystemExit(f"{worker.__name__} failed with exit code {p.exitcode}")
    return sum(count / elapsed for count, elapsed in results)


def nnunet_initial_size(patch: tuple[int, ...]) -> tuple[int, ...]:
    """nnU-Net's loader crop for a 3D patch (``configure_rotation_dummyDA_...``)."""
    from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size

    rotation = (-30.0 / 360 * 2 * np.pi, 30.0 / 360 * 2 * np.pi)
    size = get_patch_size(patch, rotation, rotation, rotation, (0.85, 1.25))
    return tuple(int(s) for s in size)


def _nnunet_subprocess(args: argparse.Namespace, patch: tuple[int, ...]) -> dict:
    python = ensure_nnunet_venv()
    cmd = [
        str(python),
        __file__,
        "--role",
        "nnunet",
        "--patch",
        *map(str, patch),
        "--batch",
        str(args.batch),
        "--processes",
        str(args.processes),
        "--seconds",
        str(args.seconds),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", nnUNet_raw="/tmp", nnUNet_preprocessed="/tmp")
    env["nnUNet_results"] = "/tmp"
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"nnU-Net benchmark failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs="+", default=[128])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--device", default="cpu", help="voxseg's device (cpu or cuda)")
    parser.add_argument("--skip-nnunet", action="store_true")
    parser.add_argument(
        "--role", choices=["main", "nnunet"], default="main", help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    patch = tuple(args.patch * 3 if len(args.patch) == 1 else args.patch)

    if args.role == "nnunet":
        in_size = nnunet_initial_size(patch)
        rate = run_parallel(
            _nnunet_worker, args.processes, patch, in_size, args.batch, args.seconds
        )
        print(json.dumps({"batches_per_s": rate, "input_size": in_size}))
        return

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        from voxseg.augment import augmentation_preset, required_input_size
    except ImportError as exc:
        msg = f"run this with the project's environment (.venv/bin/python): {exc}"
        raise SystemExit(msg) from exc
    nn = None if args.skip_nnunet else _nnunet_subprocess(args, patch)
    if nn:
        in_size = tuple(nn["input_size"])
    else:
        in_size = required_input_size(patch, augmentation_preset("nnunet"))
    if args.device == "cpu":
        ours = run_parallel(
            _voxseg_worker, args.processes, patch, in_size, args.batch, args.seconds
        )
        workers = f"{args.processes} processes x 1 thread"
    else:
        ours = run_parallel(
            _voxseg_worker, 1, patch, in_size, args.batch, args.seconds, args.device
        )
        workers = f"1 process on {args.device}"

    shape = f"{args.batch}x1x{'x'.join(map(str, patch))} from {'x'.join(map(str, in_size))}"
    print(f"\naugmented batches per second, {shape}, nnU-Net v2 transforms")
    print(f"{'pipeline':<34}{'workers':<26}{'batches/s':>10}")
    print(f"{'voxseg (torch, batched)':<34}{workers:<26}{ours:>10.2f}")
    if nn:
        nn_workers = f"{args.processes} processes x 1 thread"
        print(f"{'nnU-Net (batchgeneratorsv2)':<34}{nn_workers:<26}{nn['batches_per_s']:>10.2f}")
        print(f"{'ratio voxseg / nnU-Net':<60}{ours / nn['batches_per_s']:>10.2f}x")


if __name__ == "__main__":
    main()
