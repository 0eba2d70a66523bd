"""The training loop: patches → augmentation (on the training device) → network → loss.

The loop reads like the algorithm; everything it uses is built from the model config:
``network`` (``voxseg.nets``), ``loss`` (``voxseg.losses``), ``augmentation``
(``voxseg.augment``) and ``sampling`` (``voxseg.sampling``). Every random number is a
function of ``(seed, rank, iteration)``, so ``--resume`` continues exactly as an
uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from voxseg.config import write_json
from voxseg.devices import amp_dtype, memory_format, pick_device, use_channels_last
from voxseg.errors import VoxsegError
from voxseg.locks import folder_lock
from voxseg.modelconfig import BudgetRecord, ModelConfig
from voxseg.modelfolder import (
    BUDGET,
    CHECKPOINT_BEST,
    CHECKPOINT_LAST,
    CONFIG,
    FINAL_WEIGHTS,
    PROGRESS_PLOT,
    SNAPSHOTS,
    TRAINING_LOG,
    ModelLayout,
)
from voxseg.progress import ProgressReporter
from voxseg.sampling import PatchBatches, build_sampler
from voxseg.spatial.tiling import sliding_window_starts
from voxseg.training import budget as tb
from voxseg.training.averaging import WeightAverage
from voxseg.training.checkpoint import (
    TrainState,
    load_average,
    load_checkpoint,
    save_checkpoint,
)
from voxseg.training.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from voxseg.training.logs import Trackers, plot_progress, save_snapshot, write_csv_log
from voxseg.training.schedules import learning_rate
from voxseg.training.setup import TrainingSetup

log = logging.getLogger(__name__)

# validation patches kept in memory between epochs up to this size (else read each epoch)
VALIDATION_CACHE_BYTES = 1 << 30


#: the loader's last batch index when a time budget decides where training ends
_OPEN_END = 1 << 62


def config_hash(config: ModelConfig) -> str:
    """Hash of the settings that change the result (not logging or worker counts; under a
    time budget not the epoch count and length either, which the trainer fixes itself)."""
    training = {"num_workers", "time_budget", "budget"}
    if config.training.time_budget is not None:
        training |= {"epochs", "iterations_per_epoch"}
    exclude = {"logging": True, "dataset_path": True, "training": training}
    data = config.model_dump(mode="json", exclude=exclude)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ValidationResult:
    """Loss and per-class Dice over the validation patches of one epoch."""

    loss: float
    dice_per_class: list[float]


class Trainer:
    """Trains one fold of one model; see :func:`train_fold` for the usual entry point."""

    def __init__(
        self,
        setup: TrainingSetup,
        *,
        resume: bool = False,
        force: bool = False,
        pretrained: str | os.PathLike[str] | None = None,
        dist_info: DistInfo | None = None,
        clock: Callable[[], float] = time.monotonic,
        started: float | None = None,
    ) -> None:
        from voxseg.augment import build_augmentation, required_input_size
        from voxseg.losses import build_loss
        from voxseg.nets import build_network

        self.setup = setup
        self.cfg = setup.config
        self.tcfg = setup.config.training
        self.dist = dist_info or DistInfo()
        self.device = pick_device(self.tcfg.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.amp = amp_dtype(self.tcfg.amp, self.device)
        self.folder = setup.fold_dir
        torch.manual_seed(self.tcfg.seed)

        self.deep_supervision = _deep_supervision(self.cfg)
        self.network = build_network(
            self.cfg.network.name,
            in_channels=setup.in_channels,
            num_classes=setup.num_outputs,
            topology=setup.topology,
            patch_size=tuple(setup.patch_size),
            deep_supervision=self.deep_supervision,
            **self.cfg.network.kwargs,
        ).to(self.device)
        self.memory_format = (
            memory_format(len(setup.patch_size))
            if use_channels_last(self.tcfg.channels_last, self.device, len(setup.patch_size))
            else torch.contiguous_format
        )
        self.network = self.network.to(memory_format=self.memory_format)
        if pretrained is not None and not resume:
            self._load_pretrained(Path(pretrained))
        self.model: torch.nn.Module = self.network
        if self.dist.enabled and self.memory_format != torch.contiguous_format:
            self._match_gradient_layout()
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.network, device_ids=ids)
        self.forward = torch.compile(self.model) if self.tcfg.compile else self.model

        self.loss = build_loss(
            self.cfg.loss,
            num_classes=setup.num_outputs,
            region_based=setup.regions is not None,
            ignore_label=setup.ignore_label,
            deep_supervision_weights=self._ds_weights(),
        ).to(self.device)
        aug = self.cfg.augmentation
        mirror_axes = aug.mirror.resolved_axes(
            getattr(setup.plan_config, "mirror_axes", None), len(setup.patch_size)
        )
        self.mirror_axes = mirror_axes
        aug = aug.model_copy(update={"mirror": aug.mirror.model_copy(update={"axes": mirror_axes})})
        self.augment = build_augmentation(
            aug,
            spatial_dims=len(setup.patch_size),
            patch_size=tuple(setup.patch_size),
            dummy_2d=setup.dummy_2d,
        )
        # read enough for the rotations; like nnU-Net, accept zero padding at the largest
        # zoom-outs instead of reading for them (1 / 0.85)
        self.input_size = tuple(
            required_input_size(
                tuple(setup.patch_size),
                self.augment.config,
                dummy_2d=setup.dummy_2d,
                zoom_coverage=1 / 0.85,
            )
        )
        self.optimizer = self._make_optimizer()
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp == torch.float16 else None

        self.state = TrainState(config_hash=config_hash(self.cfg))
        self.average = WeightAverage(self.tcfg.average_last)
        self._val_cache: list[dict[str, torch.Tensor]] | None = None
        self._val_cache_full = False
        self._plotted = -math.inf
        if resume:
            self._resume(force)
        elif (self.folder / CHECKPOINT_LAST).exists() and not force:
            raise VoxsegError(
                f"{self.folder}: a training run exists; use --resume to continue it or "
                f"--force to start again"
            )
        if self.cfg.sampling.paste is not None:
            try:
                self.cfg.sampling.paste.check_channels(setup.in_channels)
            except ValueError as e:
                raise VoxsegError(f"{setup.dataset.root / 'dataset.json'}: {e}") from None
        # the schedule's length: fixed by the config, or by the time budget once measured
        self.epochs = self.tcfg.epochs
        length = self.tcfg.iterations_per_epoch
        self.iterations_per_epoch: int | None = (
            length if length != "auto" else None if self.tcfg.time_budget else 250
        )
        self.budget_clock: tb.BudgetClock | None = None
        if self.tcfg.time_budget is not None:
            self.budget_clock = tb.BudgetClock(
                self.tcfg.time_budget, spent_before=self.state.seconds, clock=clock
            )
            if started is not None:
                self.budget_clock.start = started
        self._clock = clock
        self._cycle_seconds: list[float] = []
        self._seconds_per_window: float | None = None
        self._validation_windows: list[int] | None = None
        self._budget_fits = 0

    # ----------------------------------------------------------------- building
    def _ds_weights(self) -> list[float] | None:
        """nnU-Net's 1/2^i weights; under DDP the lowest output gets 1e-6 instead of 0 so
        every parameter receives a gradient (as nnU-Net does)."""
        if not self.deep_supervision:
            return None
        from voxseg.losses import deep_supervision_weights

        n = self.setup.topology.n_stages - 1
        weights = deep_supervision_weights(n)
        if self.dist.enabled and n > 1:
            weights[-1] = 1e-6
        return weights

    def _match_gradient_layout(self) -> None:
        """Give every parameter the strides its gradient comes back with, before DDP builds its
        gradient buckets from the parameters' strides.

        In channels-last a weight with size-1 axes (a 1×1×1 head, a first convolution of one
        channel) is contiguous in both layouts, and the layout of its gradient follows the
        convolution's input: a deep-supervision head whose feature map has a size-1 axis gets
        a contiguous gradient while ``.to(channels_last)`` gave the weight channels-last
        strides. DDP compares every stride ("Grad strides do not match bucket view strides")
        and copies such gradients each step; one forward and backward pass on a zero batch of
        the training shape (random state and buffers restored) shows each gradient's layout.
        """
        network = self.network
        shape = (self.setup.batch_size, self.setup.in_channels, *self.setup.patch_size)
        image = torch.zeros(shape, device=self.device).contiguous(memory_format=self.memory_format)
        buffers = [b.detach().clone() for b in network.buffers()]
        ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp else nullcontext()
        cuda = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            with ctx:
                output = network(image)
                outputs = output if isinstance(output, (list, tuple)) else [output]
                total = sum(o.float().sum() for o in outputs)
            total.backward()
        with torch.no_grad():
            for b, saved in zip(network.buffers(), buffers, strict=True):
                b.copy_(saved)
            for p in network.parameters():
                if p.grad is not None and p.grad.stride() != p.stride():
                    strided = torch.empty_strided(
                        p.shape, p.grad.stride(), dtype=p.dtype, device=p.device
                    )
                    p.data = strided.copy_(p.data)
                p.grad = None

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optimizer
        params = self.network.parameters()
        if o.name == "sgd":
            return torch.optim.SGD(
                params,
                lr=o.lr,
                momentum=o.momentum,
                nesterov=o.nesterov,
                weight_decay=o.weight_decay,
            )
        return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)

    def _load_pretrained(self, path: Path) -> None:
        from voxseg.nets import adapt_state_dict, read_weights

        weights = path if path.is_file() else _find_weights(path)
        state = read_weights(weights)
        adapted, report = adapt_state_dict(state, self.network)
        self.network.load_state_dict(adapted)
        if self.dist.is_main:
            log.info("fine-tuning from %s: %s", weights, report)

    def _resume(self, force: bool) -> None:
        last = self.folder / CHECKPOINT_LAST
        if not last.exists():
            raise VoxsegError(f"{self.folder}: nothing to resume ({CHECKPOINT_LAST} not found)")
        saved = json.loads((self.folder / CONFIG).read_text())
        if config_hash(ModelConfig.model_validate(saved)) != self.state.config_hash and not force:
            raise VoxsegError(
                f"{self.folder}: the config differs from the run being resumed; "
                f"use --force to resume anyway (the new config then applies)"
            )
        new_hash = self.state.config_hash
        self.state = load_checkpoint(last, self.network, self.optimizer)
        self.state.config_hash = new_hash
        self.average.restore(load_average(last), self.state.averaged)
        fixed = saved.get("training", {})
        if self.tcfg.time_budget is not None and fixed.get("budget"):
            # the epoch length and count this run fixed from its budget (the batch indices
            # and the schedule depend on them); the budget left is fitted again as it goes
            self.tcfg = self.tcfg.model_copy(
                update={
                    "epochs": fixed["epochs"],
                    "iterations_per_epoch": fixed["iterations_per_epoch"],
                    "budget": BudgetRecord.model_validate(fixed["budget"]),
                }
            )
            self.cfg = self.cfg.model_copy(update={"training": self.tcfg})
            self.setup.config = self.cfg

    # ----------------------------------------------------------------- data
    def _loader(
        self, case_ids, *, start: int, stop: int, seed: int, fg: float, size, paste: bool = False
    ) -> Any:
        batches = PatchBatches(
            self.setup.store,
            case_ids,
            size,
            self.setup.batch_size,
            build_sampler(self.cfg.sampling),
            foreground_fraction=fg,
            seed=seed,
            rank=self.dist.rank,
            extras=self.setup.sampling_extras,
            paste=self.cfg.sampling.paste if paste else None,
        )
        workers = self.tcfg.num_workers
        if workers is None:
            cpus = os.cpu_count() or 1
            workers = min(8, cpus // 2) if self.device.type == "cuda" else (1 if cpus > 1 else 0)
        return DataLoader(
            batches,
            batch_size=None,
            sampler=range(start, stop),
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
        )

    def _targets(self, seg: torch.Tensor) -> torch.Tensor:
        from voxseg.losses import labels_to_regions

        seg = seg.to(self.device, non_blocking=True).long()
        if self.setup.regions is None:
            return seg
        return labels_to_regions(seg, self.setup.regions, self.setup.ignore_label)

    # ----------------------------------------------------------------- loop
    def fit(self) -> Path:
        """Train from the current epoch to the last, then write the final weights."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            self.setup.write_model_files()
        trackers = (
            Trackers(self.cfg.logging, self.folder, self.folder.name, self.cfg.model_dump())
            if self.dist.is_main
            else None
        )
        start_epoch = self.state.epoch
        iters = self.iterations_per_epoch
        first = start_epoch * iters if iters else 0
        budgeted = self.budget_clock is not None
        loader = self._loader(
            self.setup.train_ids,
            start=first,
            stop=_OPEN_END if budgeted else self.epochs * iters,
            seed=self.tcfg.seed,
            fg=self.cfg.sampling.foreground_fraction,
            size=self.input_size,
            paste=True,
        )
        batches = iter(loader)
        stopped_early = False
        total = (self.epochs - start_epoch) * iters if iters and not budgeted else None
        with ProgressReporter("training", total, log) as progress:
            if start_epoch:
                progress.line(f"resuming at epoch {start_epoch} of {self.epochs}")
            while self.state.epoch < self.epochs:
                epoch = self.state.epoch
                tic = self._clock()
                # the epoch length a time budget fixes in epoch 0 (short-run peak lr)
                lr = learning_rate(
                    epoch,
                    self.epochs,
                    self.cfg.optimizer,
                    self.cfg.schedule,
                    self.iterations_per_epoch,
                )
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                if epoch == 0:
                    losses = self._probe(batches, progress)
                else:
                    losses = self._train_steps(batches, self.iterations_per_epoch, progress)
                train_loss = self._mean_loss(losses)
                if self.average.due(epoch, self.epochs):
                    self.average.update(self.network)
                    self.state.averaged = self.average.count
                val = self._validate(epoch)
                row, improved = self._record(epoch, lr, train_loss, val, self._clock() - tic)
                if budgeted:
                    self._fit_budget(progress)
                last = self.state.epoch >= self.epochs or self._should_stop()
                if self.dist.is_main:
                    if self.budget_clock is not None:
                        self.state.seconds = self.budget_clock.elapsed()
                    self._save(improved, final=last)
                    trackers.log(row, epoch)
                    progress.describe(self._describe(row))
                    progress.line(self._epoch_line(row))
                barrier(self.dist)
                self._cycle_seconds.append(self._clock() - tic)
                if self._should_stop():
                    stopped_early = True
                    break
        if trackers is not None:
            trackers.close()
        if self.dist.is_main:
            from voxseg.nets import save_weights

            if self.average.count:
                self.average.apply(self.network)
                log.info("exporting the mean weights of the last %d epochs", self.average.count)
            save_weights(self.network, self.folder / FINAL_WEIGHTS)
            if stopped_early:
                log.info("early stopping after epoch %d", self.state.epoch)
        barrier(self.dist)
        return self.folder

    # ----------------------------------------------------------------- time budget
    def _probe(self, batches, progress: ProgressReporter) -> list[float]:
        """The first epoch: time a few steps, then say what the schedule will take or, under
        a time budget, fix the epoch length (when ``auto``) and a first epoch count from
        them; then finish the epoch."""
        iters = self.iterations_per_epoch
        warm = tb.PROBE_WARMUP if iters is None or iters > tb.PROBE_WARMUP else 0
        timed = tb.PROBE_STEPS if iters is None else max(1, min(tb.PROBE_STEPS, iters - warm))
        losses = self._train_steps(batches, warm, progress)
        tic = self._clock()
        losses += self._train_steps(batches, timed, progress)
        rate = self._agree((self._clock() - tic) / timed)
        done = warm + timed
        clock = self.budget_clock
        if clock is None:
            total = tb.schedule_estimate(rate, self.epochs, iters)
            progress.line(
                f"{rate:.3f} s per iteration: {self.epochs} epochs × {iters} iterations "
                f"take about {tb.format_duration(total)} (without validation); "
                f"--time-budget fits the training to the time you have"
            )
            return losses + self._train_steps(batches, max(0, iters - done), progress)
        reserve = tb.DEFAULT_RESERVE_FRACTION * clock.budget
        affordable = max(0.0, clock.left() - reserve) / rate
        if self.iterations_per_epoch is None:
            # fewer iterations fit than a short epoch holds: one epoch of what fits
            fits = max(done, int(affordable))
            self.iterations_per_epoch = min(tb.auto_epoch_length(affordable), fits)
        iters = self.iterations_per_epoch
        self.epochs = max(1, int(affordable // iters))
        self._store_budget(rate, rate * iters, reserve)
        progress.set_total(self.epochs * iters, completed=done)
        progress.line(
            f"time budget {tb.format_duration(clock.budget)}: {rate:.3f} s per iteration "
            f"→ epochs of {iters} iterations, about {self.epochs} epochs (fitted again "
            f"after each of the first two epochs, with validation and checkpoints timed)"
        )
        return losses + self._train_steps(batches, max(0, iters - done), progress)

    def _fit_budget(self, progress: ProgressReporter) -> None:
        """Fix the epoch count again from the measured epochs (every epoch's training,
        validation patches and checkpoint) and the reserve for the final validation."""
        clock = self.budget_clock
        per_epoch = self._seconds_per_epoch()
        reserve = self._reserve()
        done = self.state.epoch
        first_fits = self._budget_fits < 2
        if not first_fits and not tb.needs_refit(
            epochs=self.epochs,
            done=done,
            seconds_left=clock.left(),
            seconds_per_epoch=per_epoch,
            reserve=reserve,
            budget=clock.budget,
        ):
            return
        fitted = tb.fit_epochs(
            done=done, seconds_left=clock.left(), seconds_per_epoch=per_epoch, reserve=reserve
        )
        fitted = int(self._agree(fitted))
        refits = self.tcfg.budget.refits if self.tcfg.budget else 0
        refits += 0 if first_fits else 1
        self._budget_fits += 1
        changed = fitted != self.epochs
        self.epochs = fitted
        self._store_budget(
            self.tcfg.budget.seconds_per_iteration, per_epoch, reserve, refits=refits
        )
        progress.set_total(self.epochs * self.iterations_per_epoch)
        if changed:
            progress.line(
                f"time budget: {per_epoch:.1f} s per epoch, {tb.format_duration(reserve)} kept "
                f"for the final validation → {self.epochs} epochs"
            )

    def _seconds_per_epoch(self) -> float:
        """The expected time of the next epochs: the finished epochs' full cycles and the
        epoch just recorded (its checkpoint not yet written)."""
        return tb.epoch_rate([*self._cycle_seconds, self.state.history[-1]["epoch_seconds"]])

    def _store_budget(
        self, rate: float, per_epoch: float, reserve: float, *, refits: int = 0
    ) -> None:
        """Write the fixed epoch count and length and the measured rate into the config (and
        ``config.json``), so a resumed run and a reader of the model folder know them."""
        record = BudgetRecord(
            seconds_per_iteration=round(rate, 4),
            seconds_per_epoch=round(per_epoch, 3),
            iterations_per_epoch=self.iterations_per_epoch,
            epochs=self.epochs,
            reserved_seconds=round(reserve, 1),
            refits=refits,
        )
        self.tcfg = self.tcfg.model_copy(
            update={
                "epochs": self.epochs,
                "iterations_per_epoch": self.iterations_per_epoch,
                "budget": record,
            }
        )
        self.cfg = self.cfg.model_copy(update={"training": self.tcfg})
        self.setup.config = self.cfg
        if self.dist.is_main:
            for folder in (self.setup.model_dir, self.folder):
                write_json(folder / CONFIG, self.cfg)

    def _reserve(self) -> float:
        """Seconds to keep for the fold's full-case validation: every window of every
        validation case at the measured seconds per window, with the model's TTA."""
        if self.setup.fold == "all" or not self.setup.val_ids:
            return 0.0
        if self._seconds_per_window is None:
            return tb.DEFAULT_RESERVE_FRACTION * self.budget_clock.budget
        if self._validation_windows is None:
            patch = self.setup.patch_size
            windows = []
            for case in self.setup.val_ids:
                shape = self.setup.store.read_meta(case).shape_after_resampling
                planes = int(np.prod(shape[: len(shape) - len(patch)]))  # 2D: every slice
                padded = [max(s, p) for s, p in zip(shape[-len(patch) :], patch, strict=True)]
                step = self.cfg.prediction.step
                starts = sliding_window_starts(padded, patch, step)
                windows.append(planes * int(np.prod([len(s) for s in starts])))
            self._validation_windows = windows
        flips = 2 ** len(self.mirror_axes or ()) if self.cfg.prediction.tta else 1
        return tb.validation_seconds(self._validation_windows, self._seconds_per_window, flips)

    def _agree(self, value: float) -> float:
        """Rank 0's value on every rank (timing decisions must match under DDP)."""
        if not self.dist.enabled:
            return value
        t = torch.tensor([value if self.dist.is_main else 0.0], device=self.device)
        return float(all_reduce_sum(t, self.dist).item())

    # ----------------------------------------------------------------- steps
    def _train_steps(self, batches, n: int, progress: ProgressReporter) -> list[float]:
        self.model.train()
        losses = []
        for _ in range(n):
            batch = next(batches)
            index = int(batch["index"])
            gen = torch.Generator(device=self.device)
            gen.manual_seed(_mix(self.tcfg.seed, self.dist.rank, index))
            image = batch["image"].to(self.device, non_blocking=True)
            seg = batch["seg"].to(self.device, non_blocking=True)
            image, seg = self.augment(image, seg, gen)
            image = image.contiguous(memory_format=self.memory_format)
            target = self._targets(seg)
            losses.append(self._step(image, target))
            progress.advance()
        return losses

    def _mean_loss(self, losses: list[float]) -> float:
        mean = torch.tensor([float(np.mean(losses))], device=self.device)
        return float(all_reduce_sum(mean, self.dist).item() / self.dist.world_size)

    def _step(self, image: torch.Tensor, target: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp else nullcontext()
        with ctx:
            output = self.forward(image)
            loss = self.loss(output, target)
        if not torch.isfinite(loss):
            raise VoxsegError(f"{self.folder}: the loss became {loss.item()} (try a lower lr)")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.tcfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.tcfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def _validate(self, epoch: int) -> ValidationResult | None:
        n = self.tcfg.val_iterations
        if n == "auto":
            n = tb.auto_val_iterations(self.iterations_per_epoch)
        ids = self.setup.val_ids
        if n == 0 or not ids:
            return None
        self.model.eval()
        k = self.setup.num_outputs if self.setup.regions is not None else self.setup.num_outputs - 1
        counts = torch.zeros(3, k, device=self.device, dtype=torch.float64)
        losses = []
        snapshot = None
        ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp else nullcontext()
        forward_seconds, windows = 0.0, 0
        for batch in self._validation_batches(ids, n):
            image = batch["image"].to(self.device).contiguous(memory_format=self.memory_format)
            target = self._targets(batch["seg"])
            tic = self._clock()
            with ctx:
                output = self.model(image)
                losses.append(float(self.loss(output, target)))
            forward_seconds += self._clock() - tic
            windows += image.shape[0]
            logits = output[0] if isinstance(output, (list, tuple)) else output
            counts += self._tp_fp_fn(logits.float(), target)
            if snapshot is None:
                snapshot = (image[0].float().cpu().numpy(), target[0], logits[0])
        self._seconds_per_window = forward_seconds / max(windows, 1)
        counts = all_reduce_sum(counts, self.dist)
        tp, fp, fn = counts
        dice = (2 * tp / (2 * tp + fp + fn).clamp(min=1e-8)).where(tp + fp + fn > 0, torch.nan)
        log = self.cfg.logging
        if (
            self.dist.is_main
            and log.snapshots
            and snapshot is not None
            and epoch % log.snapshot_every == 0
        ):
            image0, target0, logits0 = snapshot
            save_snapshot(
                self.folder / SNAPSHOTS / f"epoch_{epoch:04d}.png",
                image0,
                self._as_label_map(target0[None])[0].cpu().numpy(),
                self._as_label_map(logits0[None].float(), logits=True)[0].cpu().numpy(),
            )
        return ValidationResult(float(np.mean(losses)), dice.cpu().tolist())

    def _validation_batches(self, ids, n: int):
        """The validation patches: the same ``n`` batches every epoch (fixed seed), so they are
        read once and kept in memory while they fit in ``VALIDATION_CACHE_BYTES``; larger sets
        are read again each epoch."""
        if self._val_cache is not None:
            return self._val_cache
        loader = self._loader(
            ids,
            start=0,
            stop=n,
            seed=self.tcfg.seed + 7919,
            fg=1 / 3,
            size=tuple(self.setup.patch_size),
        )
        if self._val_cache_full:
            return loader
        batches, size, reading = [], 0, iter(loader)
        for batch in reading:
            batches.append(batch)
            size += sum(t.numel() * t.element_size() for t in batch.values())
            if size > VALIDATION_CACHE_BYTES:
                self._val_cache_full = True
                return itertools.chain(batches, reading)  # the rest, streamed
        self._val_cache = batches
        return batches

    def _as_label_map(self, x: torch.Tensor, logits: bool = False) -> torch.Tensor:
        if self.setup.regions is None:
            return x.argmax(1) if logits else x[:, 0]
        masks = (torch.sigmoid(x) > 0.5) if logits else x > 0.5
        out = torch.zeros(masks.shape[:1] + masks.shape[2:], dtype=torch.long, device=x.device)
        for i in self.setup.region_class_order:
            out[masks[:, i]] = i + 1
        return out

    def _tp_fp_fn(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Voxel counts per foreground class/region over the batch (ignore voxels excluded)."""
        if self.setup.regions is None:
            pred = logits.argmax(1)
            ref = target[:, 0]
            valid = ref != self.setup.ignore_label if self.setup.ignore_label is not None else None
            classes = range(1, self.setup.num_outputs)
            p = torch.stack([pred == c for c in classes], 1)
            r = torch.stack([ref == c for c in classes], 1)
        else:
            p = torch.sigmoid(logits) > 0.5
            r = target > 0.5
            valid = None
        if valid is not None:
            p, r = p & valid[:, None], r & valid[:, None]
        dims = [0, *range(2, p.ndim)]
        tp = (p & r).sum(dims)
        fp = (p & ~r).sum(dims)
        fn = (~p & r).sum(dims)
        return torch.stack([tp, fp, fn]).double()

    def _record(
        self, epoch, lr, train_loss, val: ValidationResult | None, seconds
    ) -> tuple[dict[str, Any], bool]:
        """Append the epoch's log row, update the EMA and the best; return (row, improved)."""
        row: dict[str, Any] = {"epoch": epoch, "lr": lr, "train_loss": train_loss}
        s = self.state
        if val is not None:
            finite = [d for d in val.dice_per_class if not math.isnan(d)]
            mean = float(np.mean(finite)) if finite else float("nan")
            row["val_loss"] = val.loss
            row["val_dice"] = mean
            for name, d in zip(self.setup.class_names, val.dice_per_class, strict=True):
                row[f"dice_{name}"] = d
            if not math.isnan(mean):
                a = self.tcfg.ema_alpha
                s.ema = mean if s.ema is None else a * s.ema + (1 - a) * mean
            row["val_dice_ema"] = s.ema if s.ema is not None else float("nan")
        row["epoch_seconds"] = seconds
        s.history.append(row)
        s.epoch = epoch + 1
        improved = s.ema is not None and (
            s.best_ema is None or s.ema > s.best_ema + self.cfg.early_stopping.min_delta
        )
        if improved:
            s.best_ema = s.ema
            s.epochs_since_best = 0
        else:
            s.epochs_since_best += 1
        return row, improved

    def _save(self, improved: bool, final: bool = False) -> None:
        s = self.state
        save_checkpoint(
            self.folder / CHECKPOINT_LAST,
            self.network,
            self.optimizer,
            s,
            average=self.average.tensors or None,
        )
        if improved:
            save_checkpoint(self.folder / CHECKPOINT_BEST, self.network, None, s)
        write_csv_log(self.folder / TRAINING_LOG, s.history)
        now = time.perf_counter()
        if final or now - self._plotted >= self.cfg.logging.plot_seconds:
            plot_progress(self.folder / PROGRESS_PLOT, s.history)
            self._plotted = now

    def _should_stop(self) -> bool:
        es = self.cfg.early_stopping
        return es.enabled and self.state.epochs_since_best >= es.patience

    def _describe(self, row: dict[str, Any]) -> str:
        text = f"epoch {row['epoch']} loss {row['train_loss']:.3f}"
        if "val_dice" in row:
            text += f" dice {row['val_dice']:.3f} (ema {row['val_dice_ema']:.3f})"
        return text

    def _epoch_line(self, row: dict[str, Any]) -> str:
        """One plain line per epoch: losses, validation Dice, seconds, the time left."""
        left = (self.epochs - self.state.epoch) * self._seconds_per_epoch()
        text = f"epoch {row['epoch'] + 1}/{self.epochs}  lr {row['lr']:.2e}  loss "
        text += f"{row['train_loss']:.4f}"
        if "val_dice" in row:
            text += f"  val loss {row['val_loss']:.4f}  dice {row['val_dice']:.3f}"
            text += f" (ema {row['val_dice_ema']:.3f})"
        text += f"  {row['epoch_seconds']:.1f} s  ETA {tb.format_duration(left)}"
        if self.budget_clock is not None:
            text += f"  (budget left {tb.format_duration(max(0.0, self.budget_clock.left()))})"
        return text


def _deep_supervision(cfg: ModelConfig) -> bool:
    """``network.deep_supervision`` or, when unset, whether the network supports it."""
    from voxseg.nets import network_info

    if cfg.network.deep_supervision is not None:
        return cfg.network.deep_supervision
    return network_info(cfg.network.name).supports_deep_supervision


def _mix(*values: int) -> int:
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _find_weights(folder: Path) -> Path:
    """The weights to fine-tune from: a fold folder's, else fold ``all``'s, else fold 0's."""
    layout = ModelLayout(folder)
    for candidate in (
        folder / FINAL_WEIGHTS,
        layout.weights("all"),
        layout.weights(0),
        folder / CHECKPOINT_BEST,
    ):
        if candidate.is_file():
            return candidate
    raise VoxsegError(f"{folder}: no {FINAL_WEIGHTS} found to fine-tune from")


def train_fold(
    config: ModelConfig,
    fold: int | str,
    *,
    home: str | os.PathLike[str] | None = None,
    resume: bool = False,
    force: bool = False,
    pretrained: str | os.PathLike[str] | None = None,
    started: float | None = None,
) -> Path:
    """Train one fold (``"all"`` trains on every case) and return its folder.

    With ``training.time_budget`` the budget counts from ``started`` (a ``time.monotonic()``
    value; default: now) and holds the setup, the training and the final validation.
    """
    started = time.monotonic() if started is None else started
    pick = pick_device(config.training.device)
    dist_info = init_distributed(pick.type)
    setup = TrainingSetup.create(config, fold, home=home)
    with folder_lock(setup.fold_dir, "model fold") if dist_info.is_main else nullcontext():
        trainer = Trainer(
            setup,
            resume=resume,
            force=force,
            pretrained=pretrained,
            dist_info=dist_info,
            started=started,
        )
        folder = trainer.fit()
        if dist_info.is_main:
            tic = time.monotonic()
            setup.validate_fold(folder, trainer.network)
            if trainer.budget_clock is not None:
                _record_budget_outcome(folder, trainer, time.monotonic() - tic)
    return folder


def _record_budget_outcome(folder: Path, trainer: Trainer, validation_seconds: float) -> None:
    """``budget.json``: the budget, what was spent on what, and the reserve's accuracy."""
    clock = trainer.budget_clock
    record = trainer.tcfg.budget
    write_json(
        folder / BUDGET,
        {
            "budget_seconds": clock.budget,
            "spent_seconds": round(clock.elapsed(), 1),
            "epochs": trainer.epochs,
            "iterations_per_epoch": trainer.iterations_per_epoch,
            "seconds_per_iteration": record.seconds_per_iteration if record else None,
            "seconds_per_epoch": record.seconds_per_epoch if record else None,
            "reserved_for_validation_seconds": record.reserved_seconds if record else None,
            "validation_seconds": round(validation_seconds, 1),
            "refits": record.refits if record else 0,
        },
    )
