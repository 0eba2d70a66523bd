"""Benchmark: channels-last vs the default memory layout for CPU training and inference.

What ``training.channels_last=auto`` decides on the CPU. For each network (the U-Nets of
voxseg's CPU plans), two copies with the same weights — one in the default layout, one
channels-last (network and batch) — run alternately in one process: a training step
(forward, a loss over every deep-supervision output, backward, SGD with nesterov momentum)
and an inference forward (eval, ``inference_mode``). Prints the range over the rounds and
the speed-up of the medians.

    python benchmarks/memory_layout.py                 # 2 threads, 4 rounds
    python benchmarks/memory_layout.py --threads 1 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from voxseg.devices import memory_format
from voxseg.nets import Topology, build_network

#: (name, features per stage, strides, batch, patch): the whole-image 3d_lowres (5 and
#: 10 GFLOP) and the 3d_fullres of the CPU plans for the organs phantoms, the CPU U-Net of
#: ``train_step.py`` and the organs' 2D CPU plan.
ISO3 = [[1, 1, 1]] + [[2, 2, 2]] * 4
CASES = [
    (
        "3D lowres (stop 12)",
        [8, 16, 32, 64],
        [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
        2,
        (28, 32, 32),
    ),
    ("3D lowres (now)", [8, 16, 32, 64], ISO3[:4], 2, (32, 40, 40)),
    ("3D fullres", [8, 16, 32, 64], [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]], 2, (20, 40, 32)),
    ("3D train_step.py", [8, 16, 32, 64, 128], ISO3, 2, (32, 64, 64)),
    ("2D", [8, 16, 32, 64, 128], [[1, 1]] + [[2, 2]] * 4, 7, (96, 96)),
]


def _topology(features: list[int], strides: list[list[int]]) -> Topology:
    dims = len(strides[0])
    return Topology(
        spatial_dims=dims,
        features_per_stage=features,
        kernel_sizes=[[3] * dims for _ in features],
        strides=strides,
        n_conv_per_stage=[2] * len(features),
        n_conv_per_stage_decoder=[2] * (len(features) - 1),
    )


def _pair(topology: Topology, patch: tuple[int, ...], fmt: torch.memory_format):
    nets = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        net = build_network(
            "unet",
            in_channels=1,
            num_classes=4,
            topology=topology,
            patch_size=patch,
            deep_supervision=True,
        )
        nets.append(net.to(memory_format=fmt) if channels_last else net)
    return nets


def _train_step(net, x: torch.Tensor, opt) -> None:
    out = net(x)
    outputs = out if isinstance(out, (list, tuple)) else [out]
    loss = sum(o.float().square().mean() for o in outputs)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _time(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def measure(case, rounds: int, steps: int) -> dict[str, list[float]]:
    _, features, strides, batch, patch = case
    fmt = memory_format(len(patch))
    topology = _topology(features, strides)
    nets = _pair(topology, patch, fmt)
    opts = [torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.99, nesterov=True) for n in nets]
    x = torch.randn(batch, 1, *patch, generator=torch.Generator().manual_seed(1))
    inputs = [x, x.contiguous(memory_format=fmt)]
    infer_batch = [t[: min(2, batch)] for t in inputs]
    times: dict[str, list[float]] = {k: [] for k in ("train", "train_cl", "infer", "infer_cl")}
    for net, xi, opt in zip(nets, inputs, opts, strict=True):  # warm-up
        net.train()
        for _ in range(3):
            _train_step(net, xi, opt)
    for _ in range(rounds):
        for i, suffix in enumerate(("", "_cl")):
            nets[i].train()
            times["train" + suffix].append(
                _time(lambda i=i: _train_step(nets[i], inputs[i], opts[i]), steps)
            )
            nets[i].eval()
            with torch.inference_mode():
                nets[i](infer_batch[i])
                times["infer" + suffix].append(_time(lambda i=i: nets[i](infer_batch[i]), steps))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds\n")
    print(
        "| network | batch × patch | train s (default) | train s (channels-last) | speed-up "
        "| inference s (default) | inference s (channels-last) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")

    def rng(v: list[float]) -> str:
        return f"{min(v):.3f}–{max(v):.3f}"

    for case in CASES:
        t = measure(case, args.rounds, args.steps)
        name, features, _, batch, patch = case
        train_x = statistics.median(t["train"]) / statistics.median(t["train_cl"])
        infer_x = statistics.median(t["infer"]) / statistics.median(t["infer_cl"])
        shape = "×".join(str(p) for p in patch)
        print(
            f"| {name}, {features[0]}–{features[-1]} features | {batch}×1×{shape} "
            f"| {rng(t['train'])} | {rng(t['train_cl'])} "
            f"| {train_x:.2f}× | {rng(t['infer'])} | {rng(t['infer_cl'])} | {infer_x:.2f}× |",
            flush=True,
        )


if __name__ == "__main__":
    main()
