"""What the CLI shows of the library's logging: -q, -v, one line per epoch in a log file, rank
0 only under torchrun, and a VoxsegError from inside a component as one ``error:`` line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.cli._app import error_message
from voxseg.cli._logging import setup_logging
from voxseg.errors import VoxsegError

TRAIN = [
    "train", "Organs", "--fold", "0", "--device", "cpu", "--epochs", "2", "--iterations", "1",
    "--set", "training.val_iterations=1", "--set", "logging.snapshots=false",
    "--set", "training.num_workers=0",
]  # fmt: skip


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_training_log_has_one_line_per_epoch(tiny_home):
    """Standard output is not a terminal here: no bar, each epoch and validation case one
    line."""
    result = CliRunner().invoke(app, TRAIN)
    assert result.exit_code == 0, result.output
    lines = _lines(result.stdout)
    assert [line.split("  ")[0] for line in lines if line.startswith("epoch ")] == [
        "epoch 1/2",
        "epoch 2/2",
    ]
    assert sum(line.startswith("validation case 1/1") for line in lines) == 1
    assert any(line.startswith("model written to") for line in lines)
    assert "\r" not in result.stdout  # no live bar redrawn in a log file


def test_q_silences_info_lines(tmp_path):
    """``plan`` logs each case it fingerprints (INFO) and prints where the plan went: with -q
    standard output stays empty and the plan is written all the same."""
    from voxseg.synth import generate

    home = tmp_path / "home"
    generate("organs", home / "raw" / "Dataset002_X", num_train=2, num_test=0, shape=(8, 24, 24))
    args = ["plan", "X", "--home", str(home), "--num-processes", "1", "--force"]
    quiet = CliRunner().invoke(app, ["-q", *args])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == ""
    plans = home / "preprocessed" / "Dataset002_X" / "plans"
    assert (plans / "default.json").is_file()
    plain = CliRunner().invoke(app, [*args, "--plan-name", "again"])
    assert plain.exit_code == 0, plain.output
    assert "fingerprint organs_000 (1/2)" in plain.stdout
    # the console wraps a long path at its width; the words are what matter here
    assert f"plan written to {plans / 'again.json'}" in plain.stdout.replace("\n", "")


def test_v_shows_debug_lines(tmp_path):
    """``dataset check`` logs each checked case at DEBUG: shown with -v only."""
    from voxseg.synth import generate

    raw = generate("organs", tmp_path / "Dataset002_X", num_train=2, num_test=0, shape=(8, 24, 24))
    args = ["dataset", "check", str(raw), "--num-processes", "1"]
    plain = CliRunner().invoke(app, args)
    assert plain.exit_code == 0, plain.output
    assert "checked organs_000" not in plain.stdout
    verbose = CliRunner().invoke(app, ["-v", *args])
    assert verbose.exit_code == 0, verbose.output
    assert "checked organs_000" in verbose.stdout and "checked organs_001" in verbose.stdout


def test_error_inside_training_is_one_line(tiny_home):
    """The heatmap loss refuses a four-class model while the trainer builds it: the user
    gets its message as one line and exit code 1; -v adds the traceback."""
    args = [*TRAIN, "--set", "loss.name=heatmap"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    (line,) = _lines(result.stderr)
    assert line.startswith("error: loss.name=heatmap needs a two-class")
    assert "Traceback" not in result.output
    verbose = CliRunner().invoke(app, ["-v", *args])
    assert verbose.exit_code == 1
    assert "Traceback" in verbose.stderr and "heatmap.py" in verbose.stderr
    assert _lines(verbose.stderr)[-1] == line


class _Failing(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        raise VoxsegError(f"case_{i}.nii.gz: spacing (1, 1) differs from its image\nsecond line")


def test_error_in_a_dataloader_worker_keeps_its_message():
    """torch re-raises a worker's error with the worker's traceback as its message; the CLI
    reports the original message."""
    loader = torch.utils.data.DataLoader(_Failing(), batch_size=None, num_workers=1)
    with pytest.raises(VoxsegError) as info:
        next(iter(loader))
    assert "Traceback" in str(info.value)
    assert error_message(info.value) == (
        "case_0.nii.gz: spacing (1, 1) differs from its image\nsecond line"
    )
    assert error_message(VoxsegError("plain")) == "plain"


def test_ranks_other_than_0_log_warnings_only(capsys, monkeypatch):
    log = logging.getLogger("voxseg.test")
    assert setup_logging(0, rank=1) == logging.WARNING
    log.info("epoch 1/2")
    log.warning("disk almost full")
    out = capsys.readouterr()
    assert out.out == "" and out.err == "warning: disk almost full\n"
    monkeypatch.setenv("RANK", "1")  # torchrun's variable, read when no rank is given
    assert setup_logging(1) == logging.WARNING
    monkeypatch.setenv("RANK", "0")
    assert setup_logging(0) == logging.INFO
    log.info("epoch 1/2")
    log.debug("detail")
    assert capsys.readouterr().out == "epoch 1/2\n"
    assert setup_logging(1) == logging.DEBUG
    log.debug("detail")
    assert capsys.readouterr().out == "detail\n"
    assert setup_logging(-1) == logging.WARNING
    log.info("epoch 1/2")
    assert capsys.readouterr().out == ""
    handlers = logging.getLogger("voxseg").handlers
    assert len(handlers) == 1  # set up again, not stacked


@pytest.mark.slow
def test_ddp_training_speaks_once_and_fails_in_one_line(tiny_home):
    """``voxseg train --nproc-per-node 2`` (gloo on the CPU): each line once (rank 0), and a
    component's VoxsegError in both ranks as one ``error:`` line, no torchrun report."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VOXSEG_HOME": str(tiny_home)}
    cmd = [sys.executable, "-m", "voxseg.cli", *TRAIN, "--nproc-per-node", "2"]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-3000:]
    lines = _lines(ok.stdout)
    assert sum(line.startswith("epoch 1/2") for line in lines) == 1
    assert sum(line.startswith("training Dataset001_Organs") for line in lines) == 1
    assert "Grad strides" not in ok.stderr
    failed = subprocess.run(
        [*cmd, "--model", "heat", "--set", "loss.name=heatmap"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert failed.returncode == 1
    (line,) = _lines(failed.stderr)
    assert line.startswith("error: loss.name=heatmap needs a two-class")


def test_signal_caught_by_torchs_launcher_stops_the_verb_in_one_line(monkeypatch):
    """torch's elastic agent turns SIGTERM/SIGINT into its SignalException (after stopping
    the ranks); ``voxseg train --nproc-per-node`` says 'stopped by ...' once and exits 143/130
    as a one-process run does."""
    import signal

    import torch.distributed.run
    from torch.distributed.elastic.multiprocessing.api import SignalException

    def stopped(sig):
        def run(args):
            raise SignalException(f"Process 1 got signal: {sig}", sigval=sig)

        return run

    for sig, code, name in [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")]:
        monkeypatch.setattr(torch.distributed.run, "run", stopped(sig))
        result = CliRunner().invoke(app, ["train", "Organs", "--nproc-per-node", "2"])
        assert result.exit_code == code
        (line,) = _lines(result.stderr)
        assert line.startswith(f"stopped by {name}") and "--resume" in line
