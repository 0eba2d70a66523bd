"""Learning-rate schedules as pure functions of the epoch (so a resumed run agrees)."""

from __future__ import annotations

import math

from voxseg.modelconfig import OptimizerConfig, ScheduleConfig


def learning_rate(epoch: int, epochs: int, opt: OptimizerConfig, sched: ScheduleConfig) -> float:
    """The learning rate for ``epoch`` (0-based) of ``epochs``."""
    base = opt.lr
    if sched.name == "constant":
        return base
    if sched.name == "poly":
        return base * (1 - epoch / epochs) ** sched.exponent
    if epoch < sched.warmup_epochs:
        return base * (epoch + 1) / (sched.warmup_epochs + 1)
    span = max(epochs - sched.warmup_epochs, 1)
    progress = (epoch - sched.warmup_epochs) / span
    return sched.min_lr + 0.5 * (base - sched.min_lr) * (1 + math.cos(math.pi * progress))
