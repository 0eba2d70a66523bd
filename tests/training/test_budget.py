"""Time-budget arithmetic with a fake clock, and a budgeted training run end to end."""

from __future__ import annotations

import json

import pytest

from voxseg.errors import VoxsegError
from voxseg.training import budget as tb


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("20m", 1200), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400), ("45", 45)],
)
def test_parse_duration(text, seconds):
    assert tb.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "20x", "m20", "-5m", "0s", "20 minutes"])
def test_parse_duration_rejects(text):
    with pytest.raises(VoxsegError, match="duration"):
        tb.parse_duration(text)


def test_format_duration():
    assert tb.format_duration(9.5) == "9.5s"
    assert tb.format_duration(75) == "1m15s"
    assert tb.format_duration(4321) == "1h12m"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_clock_counts_resumed_time():
    clock = FakeClock()
    b = tb.BudgetClock(600, spent_before=100, clock=clock)
    clock.now += 50
    assert b.elapsed() == 150
    assert b.left() == 450


def test_auto_epoch_length_bounds():
    assert tb.auto_epoch_length(1000) == 20  # 1000 iterations → 50 epochs of 20
    assert tb.auto_epoch_length(100) == tb.MIN_EPOCH_ITERATIONS
    assert tb.auto_epoch_length(10**7) == tb.MAX_EPOCH_ITERATIONS
    assert tb.auto_val_iterations(250) == 50  # nnU-Net's ratio
    assert tb.auto_val_iterations(10) == 5


def test_fit_epochs_fills_the_budget_and_keeps_the_reserve():
    # 600 s left, 10 s per epoch, 100 s reserved: 50 more epochs after the 3 done
    assert tb.fit_epochs(done=3, seconds_left=600, seconds_per_epoch=10, reserve=100) == 53
    # out of time: never fewer than the epochs done, never zero
    assert tb.fit_epochs(done=7, seconds_left=5, seconds_per_epoch=10, reserve=100) == 7
    assert tb.fit_epochs(done=0, seconds_left=5, seconds_per_epoch=10, reserve=0) == 1


def test_epoch_rate_leaves_out_the_first_epoch():
    assert tb.epoch_rate([30.0]) == 30.0
    assert tb.epoch_rate([30.0, 10.0, 12.0]) == 11.0
    assert tb.epoch_rate([30.0] + [10.0] * 10 + [20.0] * tb.RATE_WINDOW) == 20.0


def test_needs_refit_only_beyond_the_tolerance():
    kw = {"done": 10, "reserve": 50, "budget": 1000, "seconds_per_epoch": 10}
    # 40 epochs left at 10 s + 50 s reserve = 450 s projected
    assert not tb.needs_refit(epochs=50, seconds_left=455, **kw)
    assert tb.needs_refit(epochs=50, seconds_left=300, **kw)  # the machine slowed down
    assert tb.needs_refit(epochs=50, seconds_left=600, **kw)  # ... or sped up


def test_simulated_run_ends_within_five_percent():
    """The trainer's arithmetic on a fake clock: a machine that slows down by 30 % a third
    of the way through still ends within 5 % of a 20-minute budget."""
    clock = FakeClock()
    budget = tb.BudgetClock(1200, clock=clock)
    seconds_per_iteration, reserve = 0.25, 40.0
    clock.now += 15  # setup
    affordable = (budget.left() - reserve) / seconds_per_iteration
    iters = tb.auto_epoch_length(affordable)
    epochs, done, cycles = max(1, int(affordable // iters)), 0, []
    while done < epochs:
        rate = seconds_per_iteration * (1.3 if budget.elapsed() > 400 else 1.0)
        cost = iters * rate + 2.0  # + validation patches and checkpoint
        clock.now += cost
        cycles.append(cost)
        done += 1
        per_epoch = tb.epoch_rate(cycles)
        if done <= 2 or tb.needs_refit(
            epochs=epochs,
            done=done,
            seconds_left=budget.left(),
            seconds_per_epoch=per_epoch,
            reserve=reserve,
            budget=1200,
        ):
            epochs = tb.fit_epochs(
                done=done, seconds_left=budget.left(), seconds_per_epoch=per_epoch, reserve=reserve
            )
    clock.now += reserve  # the final validation takes what was kept for it
    assert abs(budget.elapsed() - 1200) / 1200 < 0.05
    assert epochs >= 30


def test_budgeted_training_fixes_epochs_and_records_them(tiny_home):
    """``voxseg train --time-budget`` through the CLI (its output is not a terminal: one
    plain line per epoch)."""
    from typer.testing import CliRunner

    from voxseg.cli import app
    from voxseg.config import read_json

    result = CliRunner().invoke(
        app,
        [
            "train", "Organs", "--fold", "0", "--model", "budget", "--time-budget", "12s",
            "--device", "cpu", "--set", "logging.snapshots=false",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tiny_home / "models" / "Dataset001_Organs" / "default" / "budget" / "fold_0"
    saved = read_json(folder / "config.json")["training"]
    record = saved["budget"]
    assert saved["time_budget"] == 12
    assert saved["epochs"] == record["epochs"] >= 1
    assert saved["iterations_per_epoch"] == record["iterations_per_epoch"] >= tb.PROBE_STEPS
    assert record["seconds_per_iteration"] > 0
    # how close a run ends to its budget is a benchmark figure (benchmarks/RESULTS.md), not
    # a timed unit test on a shared machine; the record must agree with the run
    outcome = json.loads((folder / "budget.json").read_text())
    assert outcome["budget_seconds"] == 12
    assert outcome["epochs"] == record["epochs"]
    assert outcome["spent_seconds"] > 0 and outcome["validation_seconds"] > 0
    rows = (folder / "training_log.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == record["epochs"]
    assert "time budget 12s" in result.output
    epochs = record["epochs"]
    assert f"epoch {epochs}/{epochs}" in result.output
    assert "validation case 1/1" in result.output


def test_progress_lines_in_a_log_file(caplog):
    """Not a terminal (pytest captures standard output): no bar, one INFO record per line;
    nothing when the logger does not show INFO (``-q``, other ranks)."""
    import logging

    from voxseg.progress import ProgressReporter

    log = logging.getLogger("voxseg.test")
    caplog.set_level(logging.INFO, logger="voxseg")
    with ProgressReporter("cases", 2, log) as p:
        assert not p.live
        p.advance()  # steps make no lines in a log file
        p.item("case a")
        p.line("epoch 1/2")
    assert [r.getMessage() for r in caplog.records] == ["case a", "epoch 1/2"]
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="voxseg")
    with ProgressReporter("cases", 2, log) as p:
        p.item("case a")
        p.line("epoch 1/2")
    assert caplog.records == []
