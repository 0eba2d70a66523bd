"""Time budgets: a training run that ends by a deadline instead of after a guessed epoch count.

The trainer measures its own rate (seconds per iteration over the first steps, then seconds
per epoch with the validation patches and checkpoints included), keeps back what the final
full-case validation will take, and fixes the number of epochs so that everything ends when
the budget does. The learning-rate schedule is laid over that many epochs, so it decays fully
by the end. If the machine slows down or speeds up later, the epoch count is fitted again
when the projected end drifts from the deadline by more than one epoch and
``REFIT_TOLERANCE`` of the budget.

Everything here is arithmetic on a clock passed in, so it is tested with a fake one.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from voxseg.errors import VoxsegError

#: With ``iterations_per_epoch="auto"``, the epoch length gives the run about this many epochs
#: (enough steps for a warm-up + cosine or poly schedule, few enough that the per-epoch
#: validation patches and checkpoint stay a small share of the time) ...
TARGET_EPOCHS = 50
#: ... within these bounds (250 is nnU-Net's epoch, which long GPU budgets keep).
MIN_EPOCH_ITERATIONS = 10
MAX_EPOCH_ITERATIONS = 250
#: Steps timed at the start of the first epoch to choose the epoch length (the first
#: ``PROBE_WARMUP`` are not timed: data loader start, first allocations, autotuning).
PROBE_WARMUP = 2
PROBE_STEPS = 6
#: A fitted epoch count is changed mid-run when the projected end is off the deadline by more
#: than one epoch and this share of the budget.
REFIT_TOLERANCE = 0.02
#: Epochs whose time predicts the next ones (the first epoch, with the loader's start and the
#: validation patches' first read, is left out once there are later ones).
RATE_WINDOW = 5
#: Full-case validation: seconds per case besides the network (reading, resampling both
#: ways, export, metrics), and the share of the budget reserved before any measurement.
VALIDATION_CASE_OVERHEAD_S = 1.0
DEFAULT_RESERVE_FRACTION = 0.05

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd])")


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``"90s"``, ``"20m"``, ``"2h"``, ``"1h30m"`` or ``"1.5h"`` (a plain number
    is seconds)."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        raw = text.strip().lower().replace(" ", "")
        try:
            seconds = float(raw)
        except ValueError:
            parts = _PART.findall(raw)
            if not parts or "".join(n + u for n, u in parts) != raw:
                raise VoxsegError(
                    f"time budget {text!r} is not a duration; write e.g. 90s, 20m, 2h or 1h30m"
                ) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not seconds > 0 or not math.isfinite(seconds):
        raise VoxsegError(f"time budget {text!r} must be a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    """``4321`` → ``"1h12m"``; ``75`` → ``"1m15s"``; ``9.5`` → ``"9.5s"``."""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class BudgetClock:
    """Seconds spent and left of a budget; ``spent_before`` carries a resumed run's time."""

    budget: float
    spent_before: float = 0.0
    clock: Callable[[], float] = time.monotonic
    start: float = field(init=False)

    def __post_init__(self) -> None:
        self.start = self.clock()

    def elapsed(self) -> float:
        return self.spent_before + self.clock() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()


def auto_epoch_length(total_iterations: float) -> int:
    """Iterations per epoch that give about ``TARGET_EPOCHS`` epochs (10 to 250)."""
    per_epoch = round(total_iterations / TARGET_EPOCHS)
    return int(min(MAX_EPOCH_ITERATIONS, max(MIN_EPOCH_ITERATIONS, per_epoch)))


def auto_val_iterations(iterations_per_epoch: int) -> int:
    """nnU-Net's ratio (50 validation batches for 250 training iterations), at least 5."""
    return max(5, round(iterations_per_epoch / 5))


def fit_epochs(*, done: int, seconds_left: float, seconds_per_epoch: float, reserve: float) -> int:
    """The total epoch count that ends ``reserve`` seconds before the budget runs out (never
    fewer than the epochs already done, and at least one)."""
    room = max(0.0, seconds_left - reserve)
    return max(1, done + int(room // max(seconds_per_epoch, 1e-9)))


def epoch_rate(epoch_seconds: Sequence[float]) -> float:
    """Seconds per epoch predicted from the epochs so far: the mean of the last
    ``RATE_WINDOW``, leaving out the first epoch once later ones exist."""
    if not epoch_seconds:
        raise ValueError("no epoch has been timed yet")
    steady = list(epoch_seconds[1:]) or list(epoch_seconds)
    recent = steady[-RATE_WINDOW:]
    return sum(recent) / len(recent)


def needs_refit(
    *,
    epochs: int,
    done: int,
    seconds_left: float,
    seconds_per_epoch: float,
    reserve: float,
    budget: float,
) -> bool:
    """Whether the projected end (the epochs still to run at the current rate, then the
    reserve) misses the deadline by more than one epoch and ``REFIT_TOLERANCE``."""
    projected = (epochs - done) * seconds_per_epoch + reserve
    tolerance = max(seconds_per_epoch, REFIT_TOLERANCE * budget)
    return abs(projected - seconds_left) > tolerance


def validation_seconds(
    windows_per_case: Sequence[int], seconds_per_window: float, tta_factor: int
) -> float:
    """Estimated full-case validation: every window of every case, with TTA, plus the fixed
    per-case overhead."""
    return sum(
        n * tta_factor * seconds_per_window + VALIDATION_CASE_OVERHEAD_S for n in windows_per_case
    )


def schedule_estimate(
    seconds_per_iteration: float, epochs: int, iterations_per_epoch: int
) -> float:
    """Wall time of a fixed schedule at a given rate (validation patches not included)."""
    return seconds_per_iteration * epochs * iterations_per_epoch
