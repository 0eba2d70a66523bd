"""Benchmark: what a training epoch spends outside its training steps, with the validation
patches cached (the trainer's default) and read again every epoch (the previous behaviour).

On ``voxseg synth organs`` phantoms with the default CPU plan's ``3d_lowres`` (the organs
accuracy benchmark's setting): ``--iterations`` training steps, the epoch's validation
(``training.val_iterations`` patches, new loader each epoch vs cached batches), the
checkpoint and log, and ``progress.png``. Rounds alternate the two validation modes; medians.

    python benchmarks/epoch_overhead.py [--iterations 50] [--val-iterations 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import prepare_organs

WORK = Path(__file__).resolve().parent / "_work" / "epoch_overhead"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--val-iterations", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args()

    import torch

    from voxseg.config import apply_overrides
    from voxseg.planning import PlannerOptions
    from voxseg.training import LoggingConfig, ModelConfig
    from voxseg.training import trainer as trainer_module
    from voxseg.training.logs import plot_progress
    from voxseg.training.setup import TrainingSetup

    torch.set_num_threads(2)
    ws, ds, _ = prepare_organs(
        args.work, "3d_lowres", PlannerOptions(device="cpu"), num_train=10, num_test=0
    )
    config = apply_overrides(
        ModelConfig(dataset=ds.name, configuration="3d_lowres", model_name="overhead"),
        [
            f"training.iterations_per_epoch={args.iterations}",
            f"training.val_iterations={args.val_iterations}",
            "training.device=cpu",
            "logging.snapshots=false",
            f"training.epochs={2 * args.rounds + 1}",
        ],
    )
    trainer = trainer_module.Trainer(TrainingSetup.create(config, 0, home=ws.root), force=True)
    trainer.folder.mkdir(parents=True, exist_ok=True)
    t = trainer.tcfg
    batches = iter(
        trainer._loader(
            trainer.setup.train_ids,
            start=0,
            stop=t.epochs * t.iterations_per_epoch,
            seed=0,
            fg=1 / 3,
            size=trainer.input_size,
        )
    )
    progress = trainer._progress()
    task = progress.add_task("epochs", total=t.epochs * t.iterations_per_epoch)

    def epoch(e: int) -> tuple[float, float, float]:
        tic = time.perf_counter()
        loss = trainer._train_epoch(e, batches, progress, task)
        train = time.perf_counter() - tic
        tic = time.perf_counter()
        val = trainer._validate(e)
        validate = time.perf_counter() - tic
        row, improved = trainer._record(e, 0.01, loss, val, train + validate)
        tic = time.perf_counter()
        trainer._save(improved)  # the checkpoint and log (progress.png throttled: timed below)
        return train, validate, time.perf_counter() - tic

    epoch(0)  # warm-up: opens the cases, imports matplotlib, caches the validation patches
    default_bytes = trainer_module.VALIDATION_CACHE_BYTES
    times: dict[str, list[tuple[float, float, float]]] = {"cached": [], "read each epoch": []}
    for r in range(args.rounds):
        for mode in times:
            trainer_module.VALIDATION_CACHE_BYTES = default_bytes if mode == "cached" else 0
            if mode != "cached":
                trainer._val_cache, trainer._val_cache_full = None, True
            elif trainer._val_cache is None:
                trainer._val_cache_full = False
                trainer._validate(0)  # fills the cache (not timed)
            times[mode].append(epoch(1 + 2 * r + (mode != "cached")))
    plots = []
    for _ in range(args.rounds):
        tic = time.perf_counter()
        plot_progress(trainer.folder / "progress.png", trainer.state.history)
        plots.append(time.perf_counter() - tic)
    plot = statistics.median(plots)

    print(
        f"\n{args.iterations} training iterations + {args.val_iterations} validation batches "
        f"per epoch, patch {trainer.setup.patch_size}, batch {trainer.setup.batch_size}, "
        f"{torch.get_num_threads()} threads; medians of {args.rounds} epochs"
    )
    print(f"{'validation':<16} {'train s':>8} {'validate s':>10} {'save s':>7} {'plot s':>7}")
    for mode, rows in times.items():
        train, validate, save = (statistics.median(c) for c in zip(*rows, strict=True))
        # before: progress.png every epoch; now at most every logging.plot_seconds
        p = plot * (1 if mode != "cached" else min(1, train / LoggingConfig().plot_seconds))
        total = validate + save + p
        print(
            f"{mode:<16} {train:8.2f} {validate:10.3f} {save:7.3f} {p:7.3f}   outside the "
            f"steps: {total:.2f} s ({100 * total / (train + total):.0f} % of the epoch)"
        )


if __name__ == "__main__":
    main()
