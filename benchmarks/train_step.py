"""Seconds per training iteration: ``voxseg train`` vs nnU-Net's trainer, same network and patch.

    python benchmarks/train_step.py                  # nnU-Net's 3D topology, 32x64x64, batch 2
    python benchmarks/train_step.py --network cpu    # voxseg's CPU plan network on both sides
    python benchmarks/train_step.py --epochs 3 --iterations 10 --threads 2 --workers 1 --profile

What runs, on one input: ``voxseg synth organs`` writes ``--cases`` cases as the raw dataset
``Dataset521_Organs`` (nnU-Net v2 raw format, read by both tools from the same folder). nnU-Net
plans and preprocesses it itself (``nnUNetv2_plan_and_preprocess -c 3d_fullres``), voxseg does
the same with ``voxseg plan`` / ``voxseg preprocess``. Then both plans get the SAME patch, batch
size and network topology:

* ``--network nnunet`` (default): nnU-Net's default 3D U-Net rules applied to ``--patch`` at
  nnU-Net's target spacing (``get_pool_and_conv_props``, min bottleneck edge 4, features
  32·2^i capped at 320, two convs per stage);
* ``--network cpu``: the topology ``voxseg plan --device cpu --patch-size ...`` chooses.

Both sides train on every case (fold ``all``), ``--epochs`` epochs of ``--iterations``
iterations, ``--threads`` torch threads in the training process and ``--workers`` data-loading
worker processes:

* nnU-Net: its real trainer, ``nnUNetv2_train 521 3d_fullres all -tr nnUNetTrainerTrainStep
  -device cpu`` in ``benchmarks/.venv-nnunet`` (created on first run). The subclass, written
  by this script into that venv, only sets epochs/iterations (one validation iteration per
  epoch, no checkpoints, no final validation) and times each epoch's training phase and each
  ``train_step``. Workers: ``nnUNet_n_proc_DA`` (they load AND augment the patches).
* voxseg: ``voxseg train Dataset521_Organs --fold all --device cpu --set
  training.val_iterations=0 training.num_workers=W`` (workers only read patches; the
  augmentation runs in the training process, on the training device).

Per iteration = seconds of an epoch's training loop / iterations, the first epoch excluded
(warm-up, worker start): voxseg's ``epoch_seconds`` from ``training_log.csv`` (validation
off, so it is the training loop), nnU-Net's time from ``on_train_epoch_start`` to
``on_train_epoch_end``. The per-step breakdown (median over the timed epochs) comes from
wrappers around the data iterator, the augmentation, ``PlainConvUNet.forward`` and the
optimisation step in both processes. ``--profile`` adds a cProfile of voxseg's timed epochs.

On a CUDA machine (``torch.cuda.is_available()``) the same comparison runs on the GPU:
voxseg with bf16 autocast, channels-last, ``torch.compile`` and its augmentation on the GPU;
nnU-Net with its own GPU defaults (fp16 autocast, ``torch.compile``, augmentation in
``nnUNet_n_proc_DA`` CPU workers, as ``nnUNetTrainerBenchmark_5epochs``). Iterations/s and
model FLOP utilisation (``voxseg.planning.memory.training_flops`` / peak dense bf16 FLOP/s)
are reported; the forward wrapper is left out there (it would break the compiled graph).
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import (  # benchmarks/_common.py (the script's folder)
    VENV,
    WORK,
    ensure_nnunet_venv,
    format_table,
    machine_info,
    nnunet_env,
    run_measured,
)

DATASET_ID = 521
DATASET = f"Dataset{DATASET_ID}_Organs"
CONFIG = "3d_fullres"
PLAN = "trainstep"
TRAINER = "nnUNetTrainerTrainStep"
FOLD = "all"


def _tree_cpu_seconds() -> tuple[float, float]:
    """User + system CPU seconds of this process, and of its living descendants (Linux /proc)."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            parent[int(entry)] = int(fields[1])
            cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = set(), {os.getpid()}
    while frontier:
        tree |= frontier
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - tree
    me = os.getpid()
    return cpu.get(me, 0.0), sum(cpu.get(pid, 0.0) for pid in tree - {me})


POLL_S = 1.0  # memory polling of the timed runs: reading smaps every 50 ms costs ~20% of a core
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}

TRAINER_HEADER = '''"""Written by voxseg's benchmarks/train_step.py: nnU-Net's trainer, timed."""

import json
import os
import time
'''
TRAINER_BODY = """

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

_FORWARD = {"s": 0.0}
_ORIGINAL_FORWARD = PlainConvUNet.forward


def _timed_forward(self, x):
    start = time.perf_counter()
    out = _ORIGINAL_FORWARD(self, x)
    _FORWARD["s"] += time.perf_counter() - start
    return out


class nnUNetTrainerTrainStep(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ["TRAIN_STEP_EPOCHS"])
        self.num_iterations_per_epoch = int(os.environ["TRAIN_STEP_ITERATIONS"])
        self.num_val_iterations_per_epoch = 1
        self.disable_checkpointing = True
        self.save_every = 10**9
        if self.device.type == "cpu":
            torch.set_num_threads(int(os.environ["TRAIN_STEP_THREADS"]))
            PlainConvUNet.forward = _timed_forward  # not on CUDA: it would break torch.compile
        self._timing = {"epochs": [], "threads": torch.get_num_threads()}

    def save_checkpoint(self, filename):
        pass

    def perform_actual_validation(self, save_probabilities=False):
        pass

    def on_train_start(self):
        super().on_train_start()
        self._timing["parameters"] = sum(p.numel() for p in self.network.parameters())

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._steps = []
        self._epoch_start = self._last_end = time.perf_counter()
        self._epoch_cpu = _tree_cpu_seconds()

    def train_step(self, batch):
        start = time.perf_counter()
        _FORWARD["s"] = 0.0
        out = super().train_step(batch)  # ends with loss.cpu(): synchronised on CUDA
        end = time.perf_counter()
        self._steps.append(
            {"data": start - self._last_end, "step": end - start, "forward": _FORWARD["s"],
             "iteration": end - self._last_end}
        )
        self._last_end = end
        return out

    def on_train_epoch_end(self, train_outputs):
        seconds = time.perf_counter() - self._epoch_start
        main, workers = (b - a for a, b in zip(self._epoch_cpu, _tree_cpu_seconds()))
        self._timing["epochs"].append(
            {"seconds": seconds, "cpu_s": main + workers, "cpu_main_s": main, "steps": self._steps}
        )
        super().on_train_epoch_end(train_outputs)

    def on_train_end(self):
        super().on_train_end()
        path = os.environ["TRAIN_STEP_STATS"]
        with open(path, "w") as f:
            json.dump(self._timing, f)
"""


TRAINER_SOURCE = TRAINER_HEADER + "\n\n" + inspect.getsource(_tree_cpu_seconds) + TRAINER_BODY


# ------------------------------------------------------------------ runs inside nnU-Net's venv


def _nnunet_topology(plans_file: str, patch: list[int]) -> None:
    """(nnU-Net venv) Print nnU-Net's default 3D topology for ``patch`` at the plans' spacing."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import (
        get_pool_and_conv_props,
    )

    plans = json.loads(Path(plans_file).read_text())
    spacing = plans["configurations"][CONFIG]["spacing"]
    _, strides, kernels, fitted, _ = get_pool_and_conv_props(spacing, patch, 4, 999999)
    n = len(strides)
    topology = {
        "spatial_dims": 3,
        "features_per_stage": [min(320, 32 * 2**i) for i in range(n)],
        "kernel_sizes": [list(map(int, k)) for k in kernels],
        "strides": [list(map(int, s)) for s in strides],
        "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1),
    }
    fitted = [int(p) for p in fitted]
    print(json.dumps({"topology": topology, "patch": fitted, "spacing": spacing}))


# ------------------------------------------------------------------ runs inside voxseg's env


def _voxseg_train(stats_path: str, threads: int, profile: str, argv: list[str]) -> None:
    """Run ``voxseg train`` in this process with the data, augmentation and step timed."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch.utils.data.dataloader import _BaseDataLoaderIter

    from voxseg.augment.augmenter import Augmenter
    from voxseg.cli import app
    from voxseg.training import trainer as trainer_module

    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(threads)
    timing: dict = {"epochs": [], "threads": torch.get_num_threads()}
    current: dict = {"data": 0.0, "augment": 0.0, "forward": 0.0}
    clock = {"last_end": 0.0}
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()

    def timed(fn, key, sync=False):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            if sync:
                torch.cuda.synchronize()
            current[key] += time.perf_counter() - start
            return out

        return wrapper

    _BaseDataLoaderIter.__next__ = timed(_BaseDataLoaderIter.__next__, "data")
    Augmenter.__call__ = timed(Augmenter.__call__, "augment", sync=cuda)
    if not cuda:
        PlainConvUNet.forward = timed(PlainConvUNet.forward, "forward")
    Trainer = trainer_module.Trainer
    step, train_epoch, init = Trainer._step, Trainer._train_epoch, Trainer.__init__

    def timed_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        timing["parameters"] = sum(p.numel() for p in self.network.parameters())

    def timed_step(self, image, target):
        start = time.perf_counter()
        loss = step(self, image, target)  # ends with float(loss): synchronised on CUDA
        end = time.perf_counter()
        steps = timing["epochs"][-1]["steps"]
        steps.append({**current, "step": end - start, "iteration": end - clock["last_end"]})
        current.update(data=0.0, augment=0.0, forward=0.0)
        clock["last_end"] = end
        return loss

    def timed_epoch(self, epoch, *args):
        timing["epochs"].append({"steps": []})
        clock["last_end"] = start = time.perf_counter()
        cpu = _tree_cpu_seconds()
        current.update(data=0.0, augment=0.0, forward=0.0)
        if profiler is not None and epoch > 0:  # a fresh run (--force): epoch 0 is warm-up
            profiler.enable()
        try:
            return train_epoch(self, epoch, *args)
        finally:
            if profiler is not None:
                profiler.disable()
            timing["epochs"][-1]["seconds"] = time.perf_counter() - start
            main, workers = (b - a for a, b in zip(cpu, _tree_cpu_seconds(), strict=True))
            timing["epochs"][-1].update(cpu_s=main + workers, cpu_main_s=main)

    Trainer.__init__, Trainer._step, Trainer._train_epoch = timed_init, timed_step, timed_epoch
    try:
        app(argv, standalone_mode=False)
    finally:
        Path(stats_path).write_text(json.dumps(timing))
        if profiler is not None:
            _write_profile(profiler, Path(profile))


def _write_profile(profiler, path: Path) -> None:
    import io
    import pstats

    profiler.dump_stats(str(path))
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(35)
        path.with_suffix(f".{order}.txt").write_text(text.getvalue())


# ------------------------------------------------------------------ orchestration


class Bench:
    """Folders and commands of one benchmark run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = args.workdir.resolve()
        self.home = self.work / "voxseg_home"
        self.raw = self.home / "raw"
        self.nn_pre = self.work / "nnunet_preprocessed"
        self.nn_results = self.work / "nnunet_results"
        self.logs = self.work / "logs"
        self.cuda = _cuda_available()
        self.device = "cuda" if self.cuda else "cpu"

    # environment ---------------------------------------------------------------
    def voxseg_env(self) -> dict[str, str]:
        env = dict(os.environ, VOXSEG_HOME=str(self.home), OMP_NUM_THREADS=str(self.args.threads))
        env.setdefault("MPLBACKEND", "Agg")
        return env

    def nn_env(self, **extra: str) -> dict[str, str]:
        env = nnunet_env(self.raw, self.nn_pre, self.nn_results)
        env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.update(OMP_NUM_THREADS=str(self.args.threads), MPLBACKEND="Agg")
        env.update(extra)
        return env

    def voxseg(self, *argv: str, log: str) -> None:
        cmd = [sys.executable, "-m", "voxseg.cli", *argv]
        run_measured(cmd, env=self.voxseg_env(), log=self.logs / log)

    # data ----------------------------------------------------------------------
    def prepare_data(self) -> None:
        """The raw dataset (reused when it has ``--cases`` cases)."""
        folder = self.raw / DATASET
        stamp = folder / "dataset.json"
        if stamp.is_file() and json.loads(stamp.read_text())["numTraining"] == self.args.cases:
            return
        print(f"writing {self.args.cases} synthetic organ cases ...", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(self.nn_pre, ignore_errors=True)
        shutil.rmtree(self.home / "preprocessed", ignore_errors=True)
        self.voxseg(
            "synth", "organs", str(folder), "--num-train", str(self.args.cases),
            "--num-test", "0", "--seed", "0", "--overwrite", log="synth.log",
        )  # fmt: skip

    def nnunet_plan_and_preprocess(self) -> Path:
        plans = self.nn_pre / DATASET / "nnUNetPlans.json"
        data = self.nn_pre / DATASET / "nnUNetPlans_3d_fullres"
        if plans.is_file() and data.is_dir() and any(data.iterdir()):
            return plans
        print("nnU-Net: plan and preprocess ...", flush=True)
        cmd = [VENV / "bin" / "nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID)]
        cmd += ["-c", CONFIG, "-np", "1", "-npfp", "1"]
        run_measured(cmd, env=self.nn_env(), log=self.logs / "nnunet_plan.log")
        return plans

    def voxseg_plan(self, topology: dict | None) -> dict:
        """``voxseg plan`` with the patch and batch (and topology) forced; the written plan."""
        patch = "x".join(map(str, self.args.patch))
        argv = ["plan", DATASET, "--plan-name", PLAN, "--device", "cpu", "--patch-size", patch]
        argv += ["--set", f"configurations.{CONFIG}.batch_size={self.args.batch}", "-p", "1"]
        if topology is not None:
            argv += ["--set", f"configurations.{CONFIG}.topology={json.dumps(topology)}"]
        self.voxseg(*argv, log="voxseg_plan.log")
        path = self.home / "preprocessed" / DATASET / "plans" / f"{PLAN}.json"
        return json.loads(path.read_text())["configurations"][CONFIG]

    def nnunet_topology(self, plans_file: Path) -> dict:
        python = str(VENV / "bin" / "python")
        cmd = [python, __file__, "_topology", str(plans_file), *map(str, self.args.patch)]
        done = subprocess.run(cmd, env=self.nn_env(), capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"nnU-Net topology failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if result["patch"] != list(self.args.patch):
            raise SystemExit(
                f"--patch {self.args.patch} is not divisible by nnU-Net's pooling at spacing "
                f"{result['spacing']}; nnU-Net would use {result['patch']}"
            )
        return result["topology"]

    def force_nnunet_plans(self, plans_file: Path, topology: dict) -> None:
        """Same patch, batch and network in nnU-Net's plans as in voxseg's."""
        plans = json.loads(plans_file.read_text())
        if plans.get("transpose_forward", [0, 1, 2]) != [0, 1, 2]:
            raise SystemExit(f"{plans_file}: nnU-Net transposes this dataset's axes")
        cfg = plans["configurations"][CONFIG]
        cfg["patch_size"] = list(self.args.patch)
        cfg["batch_size"] = self.args.batch
        arch = cfg["architecture"]
        arch["network_class_name"] = (
            "dynamic_network_architectures.architectures.unet.PlainConvUNet"
        )
        n = len(topology["features_per_stage"])
        arch["arch_kwargs"].update(
            n_stages=n,
            features_per_stage=topology["features_per_stage"],
            kernel_sizes=topology["kernel_sizes"],
            strides=topology["strides"],
            n_conv_per_stage=topology["n_conv_per_stage"],
            n_conv_per_stage_decoder=topology["n_conv_per_stage_decoder"],
        )
        arch["arch_kwargs"].pop("n_blocks_per_stage", None)
        plans_file.write_text(json.dumps(plans, indent=2))

    def install_trainer(self) -> None:
        python = str(VENV / "bin" / "python")
        code = "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"
        root = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
        # top level of nnUNetTrainer/: nnU-Net's class search imports those modules before it
        # descends into primus/ (timm -> torchvision, which fails to load in a torch+cpu venv)
        target = Path(root.stdout.strip()) / "training" / "nnUNetTrainer" / f"{TRAINER}.py"
        if not target.is_file() or target.read_text() != TRAINER_SOURCE:
            target.write_text(TRAINER_SOURCE)

    # runs ----------------------------------------------------------------------
    def run_nnunet(self) -> dict:
        stats = self.work / "nnunet_timing.json"
        stats.unlink(missing_ok=True)
        shutil.rmtree(self.nn_results, ignore_errors=True)
        env = self.nn_env(
            TRAIN_STEP_EPOCHS=str(self.args.epochs),
            TRAIN_STEP_ITERATIONS=str(self.args.iterations),
            TRAIN_STEP_THREADS=str(self.args.threads),
            TRAIN_STEP_STATS=str(stats),
            **({} if self.args.workers is None else {"nnUNet_n_proc_DA": str(self.args.workers)}),
        )
        cmd = [VENV / "bin" / "nnUNetv2_train", str(DATASET_ID), CONFIG, FOLD, "-tr", TRAINER]
        cmd += ["-device", self.device]
        print(f"nnU-Net: training {self.args.epochs} x {self.args.iterations} ...", flush=True)
        log = self.logs / "nnunet_train.log"
        measured = run_measured(cmd, env=env, log=log, interval=POLL_S)
        return {"timing": json.loads(stats.read_text()), "measured": measured}

    def run_voxseg(self, profile: bool = False) -> dict:
        stats = self.work / "voxseg_timing.json"
        stats.unlink(missing_ok=True)
        profile_path = str(self.work / "voxseg_profile.prof") if profile else ""
        sets = ["training.val_iterations=0"]
        if self.args.workers is not None:
            sets.append(f"training.num_workers={self.args.workers}")
        sets += ["logging.snapshots=false", f"training.batch_size={self.args.batch}"]
        if self.cuda:
            sets += ["training.amp=bf16", "training.channels_last=true", "training.compile=true"]
        argv = ["train", DATASET, "--config", CONFIG, "--plan", PLAN, "--fold", FOLD]
        argv += ["--epochs", str(self.args.epochs), "--iterations", str(self.args.iterations)]
        argv += ["--device", self.device, "--force"]
        for s in sets:
            argv += ["--set", s]
        cmd = [sys.executable, __file__, "_voxseg", str(stats), str(self.args.threads)]
        cmd += [profile_path]
        what = " under cProfile (not timed)" if profile else ""
        print(f"voxseg: training {self.args.epochs} x {self.args.iterations}{what} ...", flush=True)
        log = self.logs / ("voxseg_profile.log" if profile else "voxseg.log")
        measured = run_measured(cmd + argv, env=self.voxseg_env(), log=log, interval=POLL_S)
        logs = sorted((self.home / "models" / DATASET / PLAN).glob("*/fold_all/training_log.csv"))
        if not logs:
            raise SystemExit(f"no training_log.csv under {self.home / 'models'}")
        with open(logs[0]) as f:
            csv_seconds = [float(row["epoch_seconds"]) for row in csv.DictReader(f)]
        return {"timing": json.loads(stats.read_text()), "measured": measured, "csv": csv_seconds}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _per_iteration(epoch_seconds: list[float], iterations: int) -> float:
    """Mean seconds per iteration over the epochs after the first (all when only one)."""
    timed = epoch_seconds[1:] or epoch_seconds
    return sum(timed) / (len(timed) * iterations)


def _epochs(run: dict) -> list[float]:
    """Epoch training-loop seconds: voxseg's ``training_log.csv``, nnU-Net's timed hooks."""
    return run["csv"] if "csv" in run else [e["seconds"] for e in run["timing"]["epochs"]]


def _cpu_per_iteration(run: dict, iterations: int, key: str = "cpu_s") -> float:
    """CPU seconds (training process and its workers) per iteration, first epoch excluded."""
    return _per_iteration([e[key] for e in run["timing"]["epochs"]], iterations)


def _fastest(runs: list[dict], iterations: int) -> tuple[float, dict]:
    """(seconds per iteration, run) of the fastest repeat."""
    timed = [(_per_iteration(_epochs(r), iterations), r) for r in runs]
    return min(timed, key=lambda t: t[0])


def _phases(timing: dict) -> dict[str, float]:
    """Median seconds per step of each phase over the epochs after the first."""
    epochs = timing["epochs"][1:] or timing["epochs"]
    steps = [s for e in epochs for s in e["steps"][1:] or e["steps"]]
    keys = ("data", "augment", "forward", "step", "iteration")
    out = {k: statistics.median(s.get(k, 0.0) for s in steps) for k in keys}
    out["rest of step"] = out["step"] - out["forward"]
    return out


def _peak_tflops(override: float | None) -> float | None:
    if override:
        return override
    import torch

    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops
    return None


def report(bench: Bench, plan: dict, nn: list[dict] | None, vs: list[dict] | None) -> dict:
    """Print the side-by-side table and return everything as a dict."""
    from voxseg.nets import Topology
    from voxseg.planning.memory import training_flops

    args = bench.args
    topology = Topology.model_validate(plan["topology"])
    num_classes = 4  # organs: background, liver, kidney, spleen
    flops = training_flops(topology, args.patch, 1, num_classes).at(args.batch)
    iters = args.iterations
    result: dict = {
        "machine": machine_info(),
        "device": bench.device,
        "patch": args.patch,
        "batch": args.batch,
        "network": args.network,
        "topology": plan["topology"],
        "training_gflop_per_iteration": flops / 1e9,
        "epochs": args.epochs,
        "iterations": iters,
        "threads": args.threads,
        "workers": args.workers,
        "repeats": args.repeats,
    }
    sides = {}
    if nn is not None:
        sides["nnU-Net"] = _fastest(nn, iters)
    if vs is not None:
        sides["voxseg"] = _fastest(vs, iters)
    runs = {"nnU-Net": nn or [], "voxseg": vs or []}
    peak = _peak_tflops(args.peak_tflops) if bench.cuda else None
    rows = []
    for name, (sec, side) in sides.items():
        ph = _phases(side["timing"])
        achieved = flops / sec
        util = f"{100 * achieved / (peak * 1e12):.1f}%" if peak else "n/a"
        rows.append(
            [
                name,
                f"{sec:.3f}",
                f"{1 / sec:.2f}",
                f"{_cpu_per_iteration(side, iters):.2f}",
                f"{_cpu_per_iteration(side, iters, 'cpu_main_s'):.2f}",
                f"{achieved / 1e9:.1f}",
                util,
                f"{ph['data']:.3f}",
                f"{ph['augment']:.3f}",
                f"{ph['forward']:.3f}" if not bench.cuda else "n/a",
                f"{ph['rest of step']:.3f}" if not bench.cuda else f"{ph['step']:.3f}",
                f"{side['measured'].peak_rss_bytes / 2**30:.2f}",
                str(side["timing"].get("parameters", "?")),
            ]
        )
        result[name] = {
            "seconds_per_iteration": sec,
            "iterations_per_second": 1 / sec,
            "cpu_seconds_per_iteration": _cpu_per_iteration(side, iters),
            "main_process_cpu_seconds_per_iteration": _cpu_per_iteration(side, iters, "cpu_main_s"),
            "achieved_gflops": achieved / 1e9,
            "model_flop_utilisation": achieved / (peak * 1e12) if peak else None,
            "median_phases_s": ph,
            "seconds_per_iteration_each_repeat": [
                _per_iteration(_epochs(r), iters) for r in runs[name]
            ],
            "epoch_seconds": _epochs(side),
            "epoch_seconds_csv": side.get("csv"),
            "threads_in_process": side["timing"].get("threads"),
            "parameters": side["timing"].get("parameters"),
            "peak_rss_gb": side["measured"].peak_rss_bytes / 2**30,
            "peak_processes": side["measured"].peak_processes,
            "wall_s": side["measured"].wall_s,
            "command": side["measured"].command,
        }
    workers = "each tool's default" if args.workers is None else args.workers
    headers = ["tool", "s/iter", "iter/s", "CPU s/iter", "main CPU s", "GFLOP/s", "MFU"]
    headers += ["data s", "augment s", "fwd s"]
    headers += ["loss+bwd+opt s" if not bench.cuda else "step s", "peak RSS GB", "parameters"]
    print()
    print(
        f"{DATASET} · {bench.device} · patch {'x'.join(map(str, args.patch))} · batch {args.batch}"
        f" · {args.network} network ({len(topology.features_per_stage)} stages, "
        f"{topology.features_per_stage[0]}-{topology.features_per_stage[-1]} features, "
        f"{flops / 1e9:.0f} GFLOP/iteration) · {args.threads} threads · {workers} workers"
        f" · {args.epochs} epochs x {iters} iterations (first epoch not timed)"
        + (f" · fastest of {args.repeats} alternating repeats" if args.repeats > 1 else "")
    )
    print(format_table(headers, rows))
    if "nnU-Net" in sides and "voxseg" in sides:
        ratio = sides["nnU-Net"][0] / sides["voxseg"][0]
        result["speedup_voxseg_vs_nnunet"] = ratio
        cpu_ratio = _cpu_per_iteration(sides["nnU-Net"][1], iters) / _cpu_per_iteration(
            sides["voxseg"][1], iters
        )
        result["cpu_ratio_nnunet_over_voxseg"] = cpu_ratio
        print(
            f"\nvoxseg speed-up over nnU-Net: {ratio:.2f}x wall time per iteration, "
            f"{cpu_ratio:.2f}x CPU time per iteration (nnU-Net / voxseg)"
        )
        p_nn, p_vs = (sides[k][1]["timing"].get("parameters") for k in ("nnU-Net", "voxseg"))
        if p_nn != p_vs:
            print(f"WARNING: the networks differ ({p_nn} vs {p_vs} parameters)")
    print(
        "CPU s/iter: user+system CPU of the training process and its data workers; phases: "
        "medians per step; data = waiting for the next batch; augment = in the training "
        "process (nnU-Net augments in its workers: 0 there)"
    )
    print(f"load average at start: {result['machine']['load_average_1m_at_start']:.1f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patch", type=int, nargs=3, default=[32, 64, 64])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--network", choices=["nnunet", "cpu"], default="nnunet")
    parser.add_argument("--epochs", type=int, default=3, help="the first one is not timed")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data-loading processes (default: 1 on the CPU, each tool's own default on a GPU)",
    )
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument(
        "--repeats", type=int, default=1, help="alternating runs per side; the fastest is kept"
    )
    parser.add_argument("--only", choices=["both", "voxseg", "nnunet"], default="both")
    parser.add_argument("--profile", action="store_true", help="cProfile voxseg's timed epochs")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU peak for MFU")
    parser.add_argument("--workdir", type=Path, default=WORK / "train_step")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is warm-up)")

    ensure_nnunet_venv()
    bench = Bench(args)
    if args.workers is None and not bench.cuda:
        args.workers = 1
    bench.work.mkdir(parents=True, exist_ok=True)
    bench.prepare_data()
    nn_plans = bench.nnunet_plan_and_preprocess()
    if args.network == "nnunet":
        topology = bench.nnunet_topology(nn_plans)
        plan = bench.voxseg_plan(topology)
    else:
        topology = bench.voxseg_plan(None)["topology"]
        plan = bench.voxseg_plan(topology)  # written again: same values, stated explicitly
    bench.force_nnunet_plans(nn_plans, topology)
    print("voxseg: preprocess ...", flush=True)
    bench.voxseg("preprocess", DATASET, "--plan", PLAN, "-c", CONFIG, "-p", "1", log="prep.log")
    bench.install_trainer()
    start = time.perf_counter()
    sides = {"nnunet": bench.run_nnunet, "voxseg": bench.run_voxseg}
    runs: dict[str, list[dict]] = {"nnunet": [], "voxseg": []}
    for r in range(args.repeats):  # alternate the order: the shared CPU's load drifts
        for name in ("nnunet", "voxseg") if r % 2 == 0 else ("voxseg", "nnunet"):
            if args.only in ("both", name):
                runs[name].append(sides[name]())
    result = report(bench, plan, runs["nnunet"] or None, runs["voxseg"] or None)
    if args.profile:
        bench.run_voxseg(profile=True)
    result["benchmark_wall_s"] = time.perf_counter() - start
    result["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    out = bench.work / "result.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"results: {out}; logs: {bench.logs}")
    if args.profile:
        print(f"voxseg profile: {bench.work / 'voxseg_profile.tottime.txt'}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_topology":
        _nnunet_topology(sys.argv[2], [int(p) for p in sys.argv[3:6]])
    elif len(sys.argv) > 1 and sys.argv[1] == "_voxseg":
        _voxseg_train(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:])
    else:
        main()
