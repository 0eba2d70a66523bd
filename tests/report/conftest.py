"""Report fixtures: a small phantom dataset with predictions made by perturbing references
(no training), evaluated by ``evaluate_folder``; and a headless Chromium when installed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def perturb(label: np.ndarray, case_index: int) -> np.ndarray:
    """A prediction with known errors: every case shifts the labels by a voxel along x;
    case 0 also loses its kidney (label 2) and gains a false-positive liver blob."""
    pred = np.roll(label, 1 + case_index % 2, axis=2)
    if case_index == 0:
        pred[pred == 2] = 0
        z, y, x = (s // 2 for s in pred.shape)
        blob = np.zeros(pred.shape, bool)
        blob[max(z - 2, 0) : z + 2, 2:6, 2:6] = True
        pred[blob & (pred == 0)] = 1
    return pred


@pytest.fixture(scope="session")
def eval_folder(tmp_path_factory) -> Path:
    """``pred/`` (with summary.json) for the 3 test cases of an organs phantom dataset."""
    from voxseg.evaluation import evaluate_folder
    from voxseg.io import read_image, write_image
    from voxseg.synth import generate

    root = tmp_path_factory.mktemp("report_data")
    raw = generate(
        "organs",
        root / "raw" / "Dataset001_Organs",
        num_train=3,
        num_test=3,
        shape=(16, 40, 40),
        seed=5,
    )
    pred_dir = root / "pred"
    pred_dir.mkdir()
    for i, ref_path in enumerate(sorted((raw / "labelsTs").glob("*.nii.gz"))):
        ref = read_image(ref_path)
        write_image(
            ref.with_array(perturb(ref.array, i).astype(np.uint8)), pred_dir / ref_path.name
        )
    evaluate_folder(pred_dir, raw / "labelsTs", dataset=raw)
    return pred_dir


@pytest.fixture(scope="session")
def eval_report(eval_folder, tmp_path_factory) -> Path:
    from voxseg.report import write_report

    out = tmp_path_factory.mktemp("eval_report")
    write_report(eval_folder, out, num_processes=1)
    return out


def chromium_or_skip():
    """The system Chromium; skip when it is not installed here (CI installs it: fail there)."""
    from voxseg.report.browser import chromium_path

    exe = chromium_path()
    reason = ""
    if exe is None:
        reason = "no Chromium installed (apt-get install chromium, or set VOXSEG_CHROMIUM)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install playwright)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return exe


@pytest.fixture(scope="module")
def browser():
    """Headless system Chromium driven by Playwright (never a downloaded browser)."""
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    from voxseg.report.browser import launch

    with sync_playwright() as p:
        b = launch(p, executable)
        yield b
        b.close()


class PageWatch:
    """A page that records console errors, uncaught exceptions and every request."""

    def __init__(self, browser, width: int = 1300, height: int = 900):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, path: Path) -> None:
        self.page.goto(path.absolute().as_uri())

    def network(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("file://", "data:", "blob:"))]


@pytest.fixture
def watch(browser):
    w = PageWatch(browser)
    yield w
    w.page.close()
