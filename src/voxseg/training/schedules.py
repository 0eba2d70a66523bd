"""Learning-rate schedules as pure functions of the epoch (so a resumed run agrees)."""

from __future__ import annotations

import math

from voxseg.modelconfig import OptimizerConfig, ScheduleConfig


def peak_learning_rate(
    opt: OptimizerConfig, sched: ScheduleConfig, total_iterations: int | None
) -> float:
    """The schedule's peak: ``opt.lr``, raised for a short run.

    With ``sched.short_run_iterations`` = R, a run of N < R iterations peaks at
    ``opt.lr · min(R / N, short_run_max_factor)``. AdamW moves each weight by about the
    learning rate per step whatever the gradient's size, so a run of N steps can move a
    weight by at most about ``lr · N`` (times the schedule's mean); a budget that allows
    few iterations otherwise ends before the output layer's weights have travelled far
    enough to make a low-contrast class win anywhere. Unknown N (a time-budgeted run before
    its speed is measured) keeps ``opt.lr``.
    """
    reference = sched.short_run_iterations
    if reference is None or not total_iterations or total_iterations >= reference:
        return opt.lr
    return opt.lr * min(reference / total_iterations, sched.short_run_max_factor)


def learning_rate(
    epoch: int,
    epochs: int,
    opt: OptimizerConfig,
    sched: ScheduleConfig,
    iterations_per_epoch: int | None = None,
) -> float:
    """The learning rate for ``epoch`` (0-based) of ``epochs`` (of ``iterations_per_epoch``
    each, which only a ``short_run_iterations`` schedule reads)."""
    total = epochs * iterations_per_epoch if iterations_per_epoch else None
    base = peak_learning_rate(opt, sched, total)
    if sched.name == "constant":
        return base
    if sched.name == "poly":
        return base * (1 - epoch / epochs) ** sched.exponent
    if epoch < sched.warmup_epochs:
        return base * (epoch + 1) / (sched.warmup_epochs + 1)
    span = max(epochs - sched.warmup_epochs, 1)
    progress = (epoch - sched.warmup_epochs) / span
    return sched.min_lr + 0.5 * (base - sched.min_lr) * (1 + math.cos(math.pi * progress))
