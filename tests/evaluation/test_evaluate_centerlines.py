import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.io import read_image, write_image
from voxseg.synth import generate


def test_centerline_metrics_through_evaluate(tmp_path):
    root = generate(
        "vessels",
        tmp_path / "Dataset003_Vessels",
        num_train=2,
        num_test=0,
        shape=(40, 48, 48),
        seed=2,
    )
    refs = root / "labelsTr"
    preds = tmp_path / "pred"
    shutil.copytree(refs, preds)  # perfect prediction for case 0 ...
    cases = sorted(p.name for p in refs.iterdir())
    empty = read_image(preds / cases[1])
    write_image(empty.with_array(np.zeros_like(empty.array)), preds / cases[1])  # ... none for 1
    result = CliRunner().invoke(
        app, ["evaluate", str(preds), str(refs), "--centerlines", str(root / "centerlines")]
    )
    assert result.exit_code == 0, result.output
    import json

    summary = json.loads((preds / "summary.json").read_text())
    per_case = {c["case"]: c["centerline"] for c in summary["metric_per_case"]}
    overlaps = sorted(v["centerline_overlap"] for v in per_case.values())
    assert overlaps[0] == 0.0
    assert overlaps[1] == pytest.approx(1.0, abs=0.02)
    assert summary["centerline_mean"]["centerline_overlap"] == pytest.approx(np.mean(overlaps))
    assert "centerline overlap" in result.output
