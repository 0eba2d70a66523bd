"""One nnU-Net v2 model folder run by ``nnUNetv2_predict`` and by ``voxseg predict`` (CPU).

    python benchmarks/predict_vs_nnunet.py                       # 200 x 512 x 512 CT volume
    python benchmarks/predict_vs_nnunet.py --shape 64 192 192 --features 4 8 16 --patch 32 64 64

What runs: nnU-Net plans a small CT-like raw dataset itself (``nnUNetv2_plan_and_preprocess
--no_pp``, spacing 1.5 x 0.9 x 0.9 mm); the plans' 3d_fullres network is replaced by a
PlainConvUNet with ``--features`` per stage and patch ``--patch`` (nnU-Net's default
topology, 32-320 features on a 128^3-ish patch, takes hours per volume on a few CPU cores),
built and randomly initialised by nnU-Net's ``get_network_from_plans`` and saved as
``fold_0/checkpoint_final.pth`` in nnU-Net's format. Both tools then segment the same
CT-like volume (``--shape``, spacing 1.25 x 0.7 x 0.7 mm, so it is resampled on the way in
and out), TTA off and on:

* ``nnUNetv2_predict_from_modelfolder -f 0 -device cpu -npp 1 -nps 1`` in
  ``benchmarks/.venv-nnunet`` (created on first run with pip; nnU-Net is never needed in
  the project's environment);
* ``voxseg predict --device cpu`` in the project's environment (nnU-Net folder adapter).

Measured per run: end-to-end wall time of the command (start-up, read, preprocess, sliding
window, export, write), peak RSS of its whole process tree (psutil, polled every 50 ms;
shared pages of nnU-Net's worker processes count once per process), and the time spent in
the network's ``forward`` (``PlainConvUNet.forward`` wrapped with a timer in both tools);
overhead = total - forward. Voxel agreement of the two label maps is printed too (random
weights: near-ties make it lower than for a trained model).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = HERE / ".venv-nnunet"
TORCH_PIN = "torch==2.13.0"
DATASET = "Dataset990_CTBench"
CONFIG = "3d_fullres"
TRAIN_SPACING = (1.5, 0.9, 0.9)
TEST_SPACING = (1.25, 0.7, 0.7)


# ------------------------------------------------------------------ runs inside the venvs


def _run_tool(tool: str, stats_path: str, argv: list[str]) -> None:
    """Run a tool's command in this process with ``PlainConvUNet.forward`` timed."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    stats = {"forward_s": 0.0, "forward_calls": 0}
    forward = PlainConvUNet.forward

    def timed(self, x):
        start = time.perf_counter()
        out = forward(self, x)
        stats["forward_s"] += time.perf_counter() - start
        stats["forward_calls"] += 1
        return out

    PlainConvUNet.forward = timed
    try:
        if tool == "nnunet":
            from nnunetv2.inference.predict_from_raw_data import predict_entry_point_modelfolder

            sys.argv = ["nnUNetv2_predict_from_modelfolder", *argv]
            predict_entry_point_modelfolder()
        else:
            from voxseg.cli import app

            app(argv, standalone_mode=False)
    finally:
        Path(stats_path).write_text(json.dumps(stats))


def _build_model(work: str, features: list[int], patch: list[int]) -> None:
    """(nnU-Net venv) Plan the raw dataset, shrink the network, save a random checkpoint."""
    import numpy as np
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    work_dir = Path(work)
    subprocess.run(
        ["nnUNetv2_plan_and_preprocess", "-d", DATASET[7:10], "--no_pp", "-npfp", "1"],
        check=True,
        env=_nnunet_env(work_dir),
    )
    plans = json.loads((work_dir / "preprocessed" / DATASET / "nnUNetPlans.json").read_text())
    cfg = plans["configurations"][CONFIG]
    n = len(features)
    cfg["patch_size"] = list(patch)
    cfg["architecture"]["network_class_name"] = (
        "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    )
    cfg["architecture"]["arch_kwargs"].update(
        n_stages=n,
        features_per_stage=list(features),
        kernel_sizes=[[3, 3, 3]] * n,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        n_conv_per_stage=[2] * n,
        n_conv_per_stage_decoder=[2] * (n - 1),
    )
    cfg["architecture"]["arch_kwargs"].pop("n_blocks_per_stage", None)
    arch = cfg["architecture"]
    torch.manual_seed(0)
    net = get_network_from_plans(
        arch["network_class_name"],
        arch["arch_kwargs"],
        arch["_kw_requires_import"],
        1,
        3,
        deep_supervision=True,
    )
    model = _model_dir(work_dir)
    (model / "fold_0").mkdir(parents=True, exist_ok=True)
    (model / "plans.json").write_text(json.dumps(plans, indent=2))
    shutil.copy(work_dir / "raw" / DATASET / "dataset.json", model / "dataset.json")
    torch.save(
        {
            "network_weights": net.state_dict(),
            "optimizer_state": {},
            "grad_scaler_state": None,
            "logging": {"ema_fg_dice": [np.float64(0.0)]},
            "_best_ema": None,
            "current_epoch": 0,
            "init_args": {"configuration": CONFIG, "fold": 0, "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": (0, 1, 2),
        },
        model / "fold_0" / "checkpoint_final.pth",
    )


# ------------------------------------------------------------------ orchestration


def _nnunet_env(work: Path) -> dict[str, str]:
    return dict(
        os.environ,
        nnUNet_raw=str(work / "raw"),
        nnUNet_preprocessed=str(work / "preprocessed"),
        nnUNet_results=str(work / "results"),
        PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )


def _model_dir(work: Path) -> Path:
    return work / "results" / DATASET / f"nnUNetTrainer__nnUNetPlans__{CONFIG}"


def ensure_nnunet_venv() -> Path:
    """``benchmarks/.venv-nnunet`` with nnunetv2 and the project's torch version."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import nnunetv2, dynamic_network_architectures"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating {VENV} with nnunetv2 (first run only) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    (VENV / ".gitignore").write_text("*\n")
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [TORCH_PIN], check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        pins.write(TORCH_PIN + "\n")
    subprocess.run(pip + ["-c", pins.name, "nnunetv2"], check=True)
    return python


def ct_volume(shape: tuple[int, int, int], seed: int = 0):
    """A CT-like int16 volume (air, a body ellipse, organs, a spine) and its label map."""
    import numpy as np

    rng = np.random.default_rng(seed)
    z, y, x = (np.linspace(-1, 1, n, dtype=np.float32) for n in shape)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    body2d = (yy / 0.75) ** 2 + (xx / 0.9) ** 2 < 1
    hu = np.full(shape, -1000, np.int16)
    label = np.zeros(shape, np.uint8)
    for k, zk in enumerate(z):
        organ = ((yy + 0.1) / 0.3) ** 2 + ((xx - 0.35) / 0.25) ** 2 + (zk / 0.7) ** 2 < 1
        spine = ((yy - 0.45) / 0.12) ** 2 + (xx / 0.12) ** 2 < 1
        hu[k][body2d] = 40
        hu[k][organ] = 120
        hu[k][spine] = 700
        label[k][organ] = 1
        label[k][spine] = 2
    hu += rng.normal(0, 15, size=shape).astype(np.int16) * (hu > -1000)
    return hu, label


def _write(array, spacing, path: Path) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)


def prepare(work: Path, shape: tuple[int, int, int], features: list[int], patch: list[int]):
    """Raw dataset, test volume and the nnU-Net model folder (each reused when present)."""
    raw = work / "raw" / DATASET
    if not (raw / "dataset.json").is_file():
        for i in range(2):
            hu, label = ct_volume((48, 128, 128), seed=i)
            _write(hu, TRAIN_SPACING, raw / "imagesTr" / f"ct_{i:03d}_0000.nii.gz")
            _write(label, TRAIN_SPACING, raw / "labelsTr" / f"ct_{i:03d}.nii.gz")
        (raw / "dataset.json").write_text(
            json.dumps(
                {
                    "channel_names": {"0": "CT"},
                    "labels": {"background": 0, "organ": 1, "bone": 2},
                    "numTraining": 2,
                    "file_ending": ".nii.gz",
                }
            )
        )
    images = work / "inputs" / "x".join(map(str, shape))
    if not (images / "ct_000_0000.nii.gz").is_file():
        print(f"writing a {shape} CT-like volume ...", flush=True)
        hu, _ = ct_volume(shape, seed=7)
        _write(hu, TEST_SPACING, images / "ct_000_0000.nii.gz")
    model = _model_dir(work)
    key = {"features": features, "patch": patch}
    stamp = model / "benchmark.json"
    if not stamp.is_file() or json.loads(stamp.read_text()) != key:
        shutil.rmtree(model, ignore_errors=True)
        shutil.rmtree(work / "preprocessed", ignore_errors=True)
        print("planning with nnU-Net and saving the model folder ...", flush=True)
        python = ensure_nnunet_venv()
        subprocess.run(
            [str(python), __file__, "_build", str(work), json.dumps(key)],
            check=True,
            env=_nnunet_env(work),
        )
        stamp.write_text(json.dumps(key))
    return images, model


def measure(cmd: list[str], env: dict[str, str], stats_path: Path) -> dict[str, float]:
    """Wall time, peak RSS of the process tree and the forward time of one command."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        rss = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak = max(peak, rss)
        time.sleep(0.05)
    total = time.perf_counter() - start
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{output[-4000:]}")
    stats = json.loads(stats_path.read_text())
    return {"total_s": total, "peak_rss_gb": peak / 2**30, **stats}


def agreement(a: Path, b: Path) -> str:
    import SimpleITK as sitk

    x = sitk.GetArrayFromImage(sitk.ReadImage(str(a)))
    y = sitk.GetArrayFromImage(sitk.ReadImage(str(b)))
    if x.shape != y.shape:
        return f"shapes differ {x.shape} vs {y.shape}"
    return f"{(x == y).mean() * 100:.3f}% of voxels equal"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[200, 512, 512])
    parser.add_argument("--features", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 96, 96])
    parser.add_argument("--tta", choices=["off", "on", "both"], default="both")
    parser.add_argument(
        "--amp",
        default="auto",
        choices=["auto", "bf16", "off"],
        help="voxseg's network precision (auto: bf16 on CPUs with AMX); nnU-Net: float32",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per tool (alternating); medians reported"
    )
    parser.add_argument("--workdir", type=Path, default=HERE / "_work" / "predict_vs_nnunet")
    args = parser.parse_args()
    stride = 2 ** (len(args.features) - 1)
    if any(p % stride for p in args.patch):
        parser.error(f"--patch must be divisible by {stride} for {len(args.features)} stages")
    work = args.workdir.resolve()
    images, model = prepare(work, tuple(args.shape), args.features, args.patch)
    nn_python = str(VENV / "bin" / "python")
    env = _nnunet_env(work)
    rows = []
    runs = [
        (tta, rep)
        for tta in {"off": [False], "on": [True], "both": [False, True]}[args.tta]
        for rep in range(args.repeat)
    ]
    for tta, rep in runs:  # the tools alternate, so a slow spell of the machine hits both
        outs = {}
        for tool in ("nnunet", "voxseg"):
            out = work / "outputs" / f"{tool}_{'tta' if tta else 'notta'}"
            shutil.rmtree(out, ignore_errors=True)
            stats = work / f"stats_{tool}.json"
            if tool == "nnunet":
                argv = ["-i", str(images), "-o", str(out), "-m", str(model), "-f", "0"]
                argv += ["-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"]
                argv += [] if tta else ["--disable_tta"]
                cmd = [nn_python, __file__, "_run", tool, str(stats), *argv]
            else:
                argv = ["predict", "-i", str(images), "-o", str(out), "-m", str(model)]
                argv += ["--device", "cpu", "--tta" if tta else "--no-tta", "--amp", args.amp]
                cmd = [sys.executable, __file__, "_run", tool, str(stats), *argv]
            print(f"running {tool} (TTA {'on' if tta else 'off'}, run {rep + 1}) ...", flush=True)
            result = measure(cmd, env if tool == "nnunet" else dict(os.environ), stats)
            rows.append((tool, tta, rep, result))
            outs[tool] = out / "ct_000.nii.gz"
        print(f"  TTA {'on' if tta else 'off'}: {agreement(outs['nnunet'], outs['voxseg'])}")
    import torch

    from voxseg.devices import amp_dtype

    precision = amp_dtype(args.amp, torch.device("cpu")) or torch.float32
    print(
        f"\nvolume {tuple(args.shape)} at {TEST_SPACING} mm, network PlainConvUNet "
        f"{args.features}, patch {tuple(args.patch)}, CPU threads {os.cpu_count()}; "
        f"voxseg network precision {str(precision).removeprefix('torch.')} "
        f"(--amp {args.amp}), nnU-Net float32\n"
    )
    head = f"{'tool':<8}{'TTA':<5}{'run':>4}{'total s':>9}{'forward s':>11}{'overhead s':>12}"
    head += f"{'overhead %':>12}{'peak RSS GB':>13}{'forwards':>10}"
    print(head)
    by_key: dict[tuple[str, bool], list[dict]] = {}
    for tool, tta, rep, r in rows:
        r["overhead_s"] = r["total_s"] - r["forward_s"]
        r["overhead_frac"] = r["overhead_s"] / r["total_s"]
        by_key.setdefault((tool, tta), []).append(r)
        print(
            f"{tool:<8}{'on' if tta else 'off':<5}{rep + 1:>4}{r['total_s']:>9.1f}"
            f"{r['forward_s']:>11.1f}{r['overhead_s']:>12.1f}{100 * r['overhead_frac']:>11.1f}%"
            f"{r['peak_rss_gb']:>13.2f}{r['forward_calls']:>10}"
        )
    print()
    for tta in (False, True):
        if ("nnunet", tta) in by_key and ("voxseg", tta) in by_key:
            n, v = by_key[("nnunet", tta)], by_key[("voxseg", tta)]
            pairs = list(zip(n, v, strict=True))

            def med(key, pairs=pairs):
                return statistics.median(b[key] / a[key] for a, b in pairs)

            over = [100 * r["overhead_frac"] for r in v]
            print(
                f"TTA {'on ' if tta else 'off'} (median of {len(pairs)} run pairs): "
                f"voxseg/nnU-Net time {med('total_s'):.2f}, peak RSS {med('peak_rss_gb'):.2f}, "
                f"overhead {med('overhead_s'):.2f}; voxseg overhead share "
                f"{statistics.median(over):.1f}% (runs: {', '.join(f'{o:.1f}' for o in over)})"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        _run_tool(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_build":
        key = json.loads(sys.argv[3])
        _build_model(sys.argv[2], key["features"], key["patch"])
    else:
        main()
