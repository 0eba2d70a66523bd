"""benchmarks/_common.py: the process-tree memory measurement and the table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def common():
    path = ROOT / "benchmarks" / "_common.py"
    spec = importlib.util.spec_from_file_location("bench_common", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_common"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# A parent that starts a child which starts a grandchild holding 300 MB for a moment.
GRANDCHILD = "import time; b = bytearray(300 * 2**20); time.sleep(0.6)"
CHILD = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {GRANDCHILD!r}])"


def test_peak_memory_counts_the_whole_process_tree(common, tmp_path):
    m = common.run_measured([sys.executable, "-c", CHILD], log=tmp_path / "log.txt")
    assert m.returncode == 0
    assert m.peak_processes >= 2
    assert m.peak_rss_bytes >= 300 * 2**20  # the grandchild's buffer is in the sum
    assert m.peak_rss_bytes < 2 * 2**30
    assert m.wall_s >= 0.6


def test_failed_command_stops_with_its_log(common, tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]
    with pytest.raises(SystemExit, match="boom"):
        common.run_measured(cmd, log=tmp_path / "log.txt")
    assert common.run_measured(cmd, log=tmp_path / "log.txt", check=False).returncode == 3


def test_format_table_aligns_columns(common):
    text = common.format_table(["tool", "s"], [["a", "1.0"], ["longer", "10.0"]])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[2].startswith("a ") and lines[3].endswith("10.0")
