"""What the report writes for each kind of target, read back from the files (no browser)."""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from voxseg.errors import VoxsegError
from voxseg.report import collect, write_report
from voxseg.report.cases import strides_for
from voxseg.report.svg import nice_ticks


def _case_data(path):
    return json.loads(
        re.search(r"window.VOXSEG_CASE=(\{.*?\});</script>", path.read_text()).group(1)
    )


def test_evaluation_report_lists_every_case_worst_first(eval_folder, eval_report):
    html = (eval_report / "index.html").read_text()
    summary = json.loads((eval_folder / "summary.json").read_text())
    cases = [c["case"] for c in summary["metric_per_case"]]
    mean = {
        c["case"]: np.nanmean([m["dice"] for m in c["metrics"].values()])
        for c in summary["metric_per_case"]
    }
    order = re.findall(r"<a href='cases/([^']+)\.html'>", html)
    assert order == sorted(cases, key=lambda c: mean[c])
    for case in cases:
        data = _case_data(eval_report / "cases" / f"{case}.html")
        assert set(data["layers"]) == {"reference", "prediction"}
        assert data["image"]["dtype"] == "int16"  # CT keeps Hounsfield units
        assert [lab["name"] for lab in data["labels"]] == ["liver", "kidney", "spleen"]
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html


def test_evaluate_report_flag_writes_a_report(eval_folder, tmp_path):
    from voxseg.cli import app

    pred = tmp_path / "pred"
    shutil.copytree(eval_folder, pred)
    ref = eval_folder.parent / "raw" / "Dataset001_Organs" / "labelsTs"
    out = tmp_path / "metrics"
    result = CliRunner().invoke(app, ["evaluate", str(pred), str(ref), "-o", str(out), "--report"])
    assert result.exit_code == 0, result.output
    index = (out / "report" / "index.html").read_text()
    assert "organs_test_000" in index
    assert (out / "report" / "cases" / "organs_test_000.html").is_file()


def test_dataset_report_has_statistics_check_and_reference_viewers(eval_folder, tmp_path):
    raw = eval_folder.parent / "raw" / "Dataset001_Organs"
    index = write_report(raw, tmp_path / "r", num_processes=1)
    html = index.read_text()
    for heading in ("Labels", "Spacing and size", "Intensities", "Dataset check"):
        assert f"<h3>{heading}</h3>" in html
    pages = sorted((tmp_path / "r" / "cases").glob("*.html"))
    assert [p.stem for p in pages] == [f"organs_{i:03d}" for i in range(3)]
    assert set(_case_data(pages[0])["layers"]) == {"reference"}


def test_model_report_has_plan_rules_and_training_curves(tiny_model, tmp_path):
    index = write_report(tiny_model, tmp_path / "r")
    html = index.read_text()
    assert "Training: " in html and "fold all" in html
    assert "why these values" in html  # the planner's explanations
    assert html.count('<svg class="plot"') >= 3  # loss, learning rate, seconds/iteration
    src = collect(tiny_model / "fold_all")
    assert src.kind == "model" and [f.fold for f in src.models[0].folds] == ["all"]


def test_nothing_to_report_names_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VoxsegError, match="empty: nothing to report"):
        write_report(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(VoxsegError, match="missing: not found"):
        write_report(tmp_path / "missing", tmp_path / "out")


def test_a_large_ct_case_is_subsampled_within_the_budget():
    shape, spacing = (300, 512, 512), (2.5, 0.8, 0.8)
    s = strides_for(shape, spacing, max_inplane=256, max_voxels=2_500_000)
    kept = [math.ceil(n / k) for n, k in zip(shape, s, strict=True)]
    assert kept[1] <= 256 and kept[2] <= 256
    assert math.prod(kept) <= 2_500_000
    # in-plane stride 2 (256 voxels, 1.6 mm); then slices while their spacing < 3 × the
    # in-plane one, else in-plane: z 5 mm, in-plane 2.4 mm, z 7.5 mm, in-plane 3.2 mm → fits
    assert s == (3, 4, 4)
    # a cropped liver-sized box keeps the in-plane detail and drops slices
    assert strides_for((239, 234, 351), (2.0, 0.8, 0.8)) == (2, 2, 2)


def test_ticks_are_round_numbers():
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3, 47) == [10, 20, 30, 40]


def test_pipeline_and_auto_folders_report_every_model(tiny_model, tmp_path):
    """A pipeline's stages/<stage>/ model folders, and an auto model whose summary.json names
    its runs, are each reported with their training."""
    pipeline = tmp_path / "pipeline"
    for stage in ("cord", "lesion"):
        shutil.copytree(tiny_model, pipeline / "stages" / stage)
    (pipeline / "pipeline.json").write_text("{}")
    src = collect(pipeline)
    assert [m.name for m in src.models] == ["stages/cord", "stages/lesion"]
    html = write_report(pipeline, tmp_path / "r1").read_text()
    assert "Training: stages/cord" in html and "Training: stages/lesion" in html

    auto = tmp_path / "auto"
    shutil.copytree(tiny_model, auto)
    summary = {
        "winner": "3d_fullres",
        "why": "the only run",
        "runs": [{"configuration": "3d_fullres", "fold": "all", "model": str(tiny_model)}],
        "ranking": [{"name": "3d_fullres", "foreground_dice": 0.5}],
    }
    (auto / "summary.json").write_text(json.dumps(summary))
    src = collect(auto)
    assert src.kind == "auto" and [m.folder for m in src.models] == [tiny_model]
    html = write_report(auto, tmp_path / "r2").read_text()
    assert "voxseg auto" in html and "the only run" in html


def test_without_case_pages_the_tables_stay_and_link_nowhere(eval_folder, tmp_path):
    index = write_report(eval_folder, tmp_path / "r", cases=False)
    html = index.read_text()
    assert "organs_test_000" in html and "Cases (worst mean Dice first)" in html
    assert "cases/" not in html
    assert not (tmp_path / "r" / "cases").exists()


def test_lesion_detection_of_a_pipeline_evaluation_is_shown(eval_folder, tmp_path):
    from types import SimpleNamespace

    from voxseg.io import read_image
    from voxseg.pipelines.evaluate import lesion_summary

    folder = tmp_path / "pred"
    shutil.copytree(eval_folder, folder)
    refs = eval_folder.parent / "raw" / "Dataset001_Organs" / "labelsTs"
    pairs = [
        (p.name[: -len(".nii.gz")], read_image(p), read_image(refs / p.name))
        for p in sorted(folder.glob("*.nii.gz"))
    ]
    spec = SimpleNamespace(lesion_labels=["kidney"], labels={"kidney": 2}, lesion_overlap=0.0)
    lesions = lesion_summary(pairs, spec)
    (folder / "pipeline_summary.json").write_text(json.dumps({"lesions": lesions}))
    html = write_report(folder, tmp_path / "r", cases=False).read_text()
    k = lesions["kidney"]
    assert "Lesion-wise detection" in html
    n_ref = k["n_ref"]
    row = f'>kidney</td><td data-sort="{float(n_ref)!r}">{n_ref}</td>'
    assert row in html
    case0 = k["per_case"]["organs_test_000"]  # its kidney was removed from the prediction
    assert case0["n_pred"] == 0 and case0["detected_ref"] == 0
    assert f">{case0['n_ref']} / 0 / 0</td>" in html


def test_cases_without_images_show_their_label_maps(eval_folder, tmp_path):
    from voxseg.evaluation import evaluate_folder

    refs = tmp_path / "refs"  # references alone: no imagesTs/ beside them, no dataset.json
    shutil.copytree(eval_folder.parent / "raw" / "Dataset001_Organs" / "labelsTs", refs)
    pred = tmp_path / "pred"
    pred.mkdir()
    for p in eval_folder.glob("*.nii.gz"):
        shutil.copy(p, pred / p.name)
    evaluate_folder(pred, refs, labels={"liver": 1, "kidney": 2, "spleen": 3})
    write_report(pred, tmp_path / "r", num_processes=1)
    data = _case_data(tmp_path / "r" / "cases" / "organs_test_000.html")
    assert "image" not in data and set(data["layers"]) == {"reference", "prediction"}
    assert [lab["name"] for lab in data["labels"]] == ["liver", "kidney", "spleen"]
