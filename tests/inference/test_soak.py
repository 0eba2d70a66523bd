"""Soak: 200 small cases predicted in one process; the resident memory stays flat after a
warm-up (slope below 20 KiB per case, i.e. < 4 MiB over the run) and no file handle leaks."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from voxseg.inference import Predictor, predict_folder

CASES = 200
WARM_UP = 20
MAX_SLOPE = 20 * 1024  # bytes per case


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_two_hundred_cases_in_one_process(tiny_model, tmp_path):
    source = sorted((tiny_model.parents[3] / "raw" / "Dataset001_Organs" / "imagesTs").iterdir())
    inputs = tmp_path / "in"
    predictor = Predictor(tiny_model, device="cpu", tta=False)
    rss, files = [], []
    for i in range(CASES):
        folder = inputs / f"{i:03d}"
        folder.mkdir(parents=True)
        shutil.copy(source[i % len(source)], folder / f"case{i:03d}_0000.nii.gz")
        report = predict_folder(predictor, folder, tmp_path / "out")
        assert report.done == [f"case{i:03d}"], report.failed
        shutil.rmtree(folder)
        rss.append(_rss())
        files.append(_open_files())
    steady = np.asarray(rss[WARM_UP:], dtype=float)
    slope = np.polyfit(np.arange(steady.size), steady, 1)[0]
    print(
        f"soak: RSS {rss[WARM_UP] / 2**20:.1f} -> {rss[-1] / 2**20:.1f} MiB over "
        f"{CASES - WARM_UP} cases, slope {slope / 1024:.2f} KiB/case; open files "
        f"{files[WARM_UP]} -> {files[-1]}"
    )
    assert slope < MAX_SLOPE
    assert files[-1] <= files[WARM_UP]
