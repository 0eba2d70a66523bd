"""The quality-control section: a prediction folder with ``qc/`` records, alone and beside
its evaluation (Spearman's ρ by hand), in files and in a headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from voxseg.config import write_json
from voxseg.evaluation.qc import QC_DIR, QC_RUN, CaseQC, label_qc, write_case_qc
from voxseg.io import read_image
from voxseg.report import write_report

LABELS = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3}
#: agreement per case: ranks 1, 3, 2 against the Dice ranks 1, 2, 3 of the fixture
#: (organs_test_000 is worst) → ρ = 1 − 6 Σd² / (n (n² − 1)) = 1 − 6·2 / 24 = 0.5
AGREEMENT = {"organs_test_000": 0.5, "organs_test_001": 0.9, "organs_test_002": 0.8}


def _with_qc(eval_folder: Path, dest: Path, evaluated: bool) -> Path:
    shutil.copytree(eval_folder, dest)
    if not evaluated:
        for name in ("summary.json", "metrics.csv"):
            (dest / name).unlink()
    raw = eval_folder.parent / "raw" / "Dataset001_Organs"
    write_json(
        dest / QC_DIR / QC_RUN,
        {
            "model": "model",
            "folds": ["0", "1"],
            "members": 2,
            "labels": LABELS,
            "channel_names": {"0": "CT"},
            "training_volumes": "test",
            "training_ranges_ml": {"liver": [1.0, 2.0], "kidney": None, "spleen": None},
        },
    )
    for pred in sorted(dest.glob("*.nii.gz")):
        case = pred.name.removesuffix(".nii.gz")
        seg = read_image(pred)
        qc = label_qc(seg.array, seg.spacing, {k: v for k, v in LABELS.items() if v})
        qc["liver"].training_range = (1.0, 2.0)
        for q in qc.values():
            q.agreement = AGREEMENT[case]
        record = CaseQC(
            case,
            qc,
            2,
            0.1,
            {"prediction": pred.name, "image": [str(raw / "imagesTs" / f"{case}_0000.nii.gz")]},
        )
        write_case_qc(dest, record)
    return dest


def test_qc_of_predictions_without_reference_lists_the_worst_first(eval_folder, tmp_path):
    folder = _with_qc(eval_folder, tmp_path / "pred", evaluated=False)
    index = write_report(folder, tmp_path / "report", num_processes=1)
    html = index.read_text()
    assert "Quality control" in html and "Evaluation" not in html
    order = re.findall(r"<a href='cases/(organs_test_\d+)\.html'>", html)
    assert order == ["organs_test_000", "organs_test_002", "organs_test_001"]
    page = (tmp_path / "report" / "cases" / "organs_test_000.html").read_text()
    assert "prediction without a reference" in page and "1–2" in page  # the liver's range


def test_qc_beside_an_evaluation_states_spearmans_rho(eval_folder, tmp_path):
    folder = _with_qc(eval_folder, tmp_path / "pred", evaluated=True)
    html = write_report(folder, tmp_path / "report", cases=False).read_text()
    assert "Evaluation" in html and "Quality control" in html
    assert "Spearman ρ = 0.5, 3 cases" in html


@pytest.fixture(scope="module")
def qc_report(eval_folder, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("qc_report")
    folder = _with_qc(eval_folder, root / "pred", evaluated=False)
    write_report(folder, root / "report", num_processes=1)
    return root / "report"


def test_qc_report_loads_offline_in_chromium(qc_report, watch):
    from test_report_browser import _png, _save

    watch.open(qc_report / "index.html")
    page = watch.page
    shot = page.screenshot(full_page=True)
    _save("quality.png", shot)
    assert _png(shot).std() > 10
    assert page.locator("#quality svg.plot").count() >= 2  # volumes, agreement
    page.locator("#quality table.cases a").first.click()
    page.wait_for_selector("#viewer[data-ready='1']")
    assert page.url.endswith("cases/organs_test_000.html")
    assert watch.errors == [] and watch.network() == []


def test_model_report_ranks_validation_dice_by_the_flips_agreement(
    tiny_model, eval_folder, tmp_path
):
    """A model whose folds' validation wrote QC records: the report states Spearman's ρ of
    the agreement against the true per-case Dice (scipy's, and by hand: 0.5), plots the cases
    and opens their pages with the QC."""
    from scipy.stats import spearmanr

    from voxseg.evaluation import evaluate_folder
    from voxseg.report.sections import case_mean_dice

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    shutil.rmtree(model / "fold_all")
    refs = eval_folder.parent / "raw" / "Dataset001_Organs" / "labelsTs"
    split = {"0": ["organs_test_000", "organs_test_001"], "1": ["organs_test_002"]}
    for fold, cases in split.items():
        shutil.copytree(tiny_model / "fold_all", model / f"fold_{fold}")
        val = model / f"fold_{fold}" / "validation"
        shutil.rmtree(val, ignore_errors=True)
        val.mkdir()
        for case in cases:
            shutil.copy(eval_folder / f"{case}.nii.gz", val)
        evaluate_folder(val, refs, dataset=refs.parent)
        _with_qc(val, tmp_path / f"qc_{fold}", evaluated=True)
        shutil.copytree(tmp_path / f"qc_{fold}" / QC_DIR, val / QC_DIR)
    index = write_report(model, tmp_path / "report", num_processes=1)
    html = index.read_text()
    dice = [
        case_mean_dice(c["metrics"])
        for fold in split
        for c in json.loads((model / f"fold_{fold}/validation/summary.json").read_text())[
            "metric_per_case"
        ]
    ]
    expected = spearmanr([AGREEMENT[c] for f in split for c in split[f]], dice).statistic
    assert expected == pytest.approx(0.5)
    assert "Quality control on cross-validation" in html
    assert "On the 3 validation cases the agreement ranks the true mean Dice" in html
    assert "Spearman ρ = 0.5, 3 cases" in html
    section = html[html.index("Quality control on cross-validation") :]
    order = re.findall(r"<a href='cases/(organs_test_\d+)\.html'>", section)
    assert order[:3] == ["organs_test_000", "organs_test_002", "organs_test_001"]
    page = (tmp_path / "report" / "cases" / "organs_test_002.html").read_text()
    assert "validation fold" in page and "member agreement" in page and "0.8" in page
