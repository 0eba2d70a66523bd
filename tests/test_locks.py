"""Folder locks between real processes: refusal naming the holder, takeover of a killed
holder's lock, stale locks of other hosts, re-entrance, and the cost of a lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from voxseg.errors import VoxsegError
from voxseg.locks import LOCK_NAME, STALE_ENV, folder_lock

HOLDER = """
import sys, time
from pathlib import Path
from voxseg.locks import folder_lock
with folder_lock(sys.argv[1], "test folder", name=sys.argv[2]):
    Path(sys.argv[3]).write_text("held")
    time.sleep(120)
"""


def _hold(folder: Path, tmp_path: Path, name: str = LOCK_NAME) -> subprocess.Popen:
    ready = tmp_path / f"ready-{name}"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), name, str(ready)])
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, "the holder process died"
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.05)
    return proc


def _second_run(folder: Path, name: str = LOCK_NAME) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        "from voxseg.locks import folder_lock\n"
        "from voxseg.errors import VoxsegError\n"
        "try:\n"
        f"    with folder_lock({str(folder)!r}, 'test folder', name={name!r}):\n"
        "        print('acquired')\n"
        "except VoxsegError as exc:\n"
        "    print(exc); sys.exit(1)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_second_process_is_refused_then_takes_over_a_killed_holder(tmp_path):
    folder = tmp_path / "fold_0"
    holder = _hold(folder, tmp_path)
    try:
        info = json.loads((folder / LOCK_NAME).read_text())
        assert info["pid"] == holder.pid and info["host"] and info["started"]
        assert "-c" in info["command"]
        second = _second_run(folder)
        assert second.returncode == 1
        assert f"PID {holder.pid}" in second.stdout and "in use by" in second.stdout
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (folder / LOCK_NAME).exists()  # SIGKILL leaves the lock behind …
    third = _second_run(folder)
    assert third.returncode == 0 and "acquired" in third.stdout
    assert "taking over the stale lock" in third.stderr and "process is gone" in third.stderr
    assert not (folder / LOCK_NAME).exists()  # … and the new holder releases it
    assert sorted(p.name for p in folder.iterdir()) == []


def test_parts_lock_separately(tmp_path):
    holder = _hold(tmp_path / "out", tmp_path, name=".voxseg-part0of2.lock")
    try:
        assert _second_run(tmp_path / "out", ".voxseg-part1of2.lock").returncode == 0
        assert _second_run(tmp_path / "out", ".voxseg-part0of2.lock").returncode == 1
    finally:
        holder.kill()
        holder.wait()


def _foreign_lock(folder: Path, age_s: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    info = {"pid": 1, "host": "other-node", "started": "2026-01-01T00:00:00+00:00"}
    path.write_text(json.dumps({**info, "command": "voxseg train X", "token": "abc"}))
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_lock_of_another_host_is_stale_only_after_its_heartbeat_age(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(STALE_ENV, "300")
    _foreign_lock(tmp_path / "a", age_s=10)
    with pytest.raises(VoxsegError, match=r"voxseg train X.*other-node"):
        with folder_lock(tmp_path / "a", "model fold"):
            pass
    _foreign_lock(tmp_path / "b", age_s=1000)
    with folder_lock(tmp_path / "b", "model fold") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    (warning,) = [r for r in caplog.records if r.name == "voxseg.locks"]
    assert warning.levelname == "WARNING" and "no heartbeat for" in warning.getMessage()


def test_reentrant_in_one_process(tmp_path):
    with folder_lock(tmp_path, "prediction folder") as outer:
        with folder_lock(tmp_path, "prediction folder") as inner:
            assert inner == outer
        assert outer.exists()
    assert not outer.exists()


def test_predict_refuses_a_folder_another_process_predicts_into(tiny_model, tmp_path):
    from voxseg.cli import app

    home = tiny_model.parents[3]
    images = home / "raw" / "Dataset001_Organs" / "imagesTs"
    out = tmp_path / "out"
    holder = _hold(out, tmp_path)
    try:
        args = ["predict", "-i", str(images), "-o", str(out), "-m", str(tiny_model)]
        result = CliRunner().invoke(app, [*args, "--device", "cpu", "--no-tta"])
        assert result.exit_code == 1
        assert f"PID {holder.pid}" in result.output and "prediction folder" in result.output
        assert not any(p.suffix == ".gz" for p in out.iterdir())
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_costs_under_10_ms(tmp_path):
    times = []
    for _ in range(51):
        tic = time.perf_counter()
        with folder_lock(tmp_path, "prediction folder"):
            pass
        times.append(time.perf_counter() - tic)
    assert sorted(times)[25] < 0.010  # the median: a loaded machine adds rare long stalls
