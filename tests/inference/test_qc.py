"""``voxseg predict --qc``: members' votes from the sliding window against maps drawn member by
member, and the QC files and report of a predicted folder against the label maps written."""

import csv
import itertools
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.evaluation.qc import member_agreement
from voxseg.inference.sliding_window import WindowSettings, predict_logits_and_votes


class _FixedMap(torch.nn.Module):
    """A 'network' that draws the same label map whatever it sees (strong one-hot logits)."""

    def __init__(self, labels: np.ndarray, classes: int):
        super().__init__()
        onehot = np.stack([labels == k for k in range(classes)]).astype(np.float32)
        self.logits = torch.as_tensor(onehot * 10 - 5)

    def forward(self, x):
        return self.logits[None].expand(x.shape[0], *self.logits.shape)


def _pairwise(maps, label):
    inter = size = 0
    for a, b in itertools.combinations(maps, 2):
        inter += 2 * np.count_nonzero((a == label) & (b == label))
        size += np.count_nonzero(a == label) + np.count_nonzero(b == label)
    return inter / size


def _maps(n: int, shape=(8, 12, 16)) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    maps = []
    for _ in range(n):
        m = np.zeros(shape, np.uint8)
        z, y = rng.integers(1, 4, 2)
        m[z : z + 4, y : y + 6, 3:12] = 1
        m[4:6, 5:8, int(rng.integers(2, 6)) : 10] = 2
        maps.append(m)
    return maps


@pytest.mark.parametrize("folds", [3, 1])
def test_votes_are_the_share_of_members_drawing_each_label(folds):
    """Several folds: each fold is a member; one fold with TTA: each flip is one."""
    maps = _maps(folds)
    shape = maps[0].shape
    settings = WindowSettings(patch_size=shape, tta=folds == 1, mirror_axes=(2,))
    _, votes = predict_logits_and_votes(
        np.zeros((1, *shape), np.float32),
        [_FixedMap(m, 3) for m in maps],
        3,
        settings,
        device=torch.device("cpu"),
        votes="argmax",
    )
    # a flipped pass draws the map flipped back along x
    members = maps if folds > 1 else [maps[0], np.flip(maps[0], 2)]
    expected = np.stack([np.mean([m == k for m in members], axis=0) for k in range(3)])
    np.testing.assert_allclose(votes.numpy(), expected, atol=1e-6)
    dice, _ = member_agreement(votes.numpy()[1:], len(members))
    for k in (1, 2):
        assert dice[k - 1] == pytest.approx(_pairwise(members, k), abs=1e-6)


class _Local(torch.nn.Module):
    """Logits from the window's own content: windows overlapping a voxel disagree on it."""

    def forward(self, x):
        centre = x.mean(dim=(2, 3, 4), keepdim=True)
        return torch.cat([x - centre, centre - x], dim=1) * 3


def test_identical_members_agree_fully_across_overlapping_windows():
    """Windows that disagree with each other are no disagreement between members."""
    data = np.random.default_rng(0).normal(size=(1, 20, 24, 24)).astype(np.float32)
    settings = WindowSettings(patch_size=(8, 8, 8), step=0.5, tta=False)
    logits, votes = predict_logits_and_votes(
        data, [_Local(), _Local()], 2, settings, device=torch.device("cpu"), votes="argmax"
    )
    assert set(np.unique(votes.numpy())) == {0.0, 1.0}
    # the members' sums are bfloat16: their argmax leaves the float32 one only at near-ties
    assert np.mean((votes.numpy()[1] == 1) == (logits.numpy().argmax(0) == 1)) > 0.995
    dice, split = member_agreement(votes.numpy()[1:], 2)
    assert dice[0] == pytest.approx(1.0) and split == 0


def _count(path, value):
    return int(np.count_nonzero(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) == value))


def test_predict_qc_writes_records_a_table_and_a_report(tiny_model, tmp_path):
    # a copy of the shared workspace: the folds added here must not reach other tests
    home = tmp_path / "home"
    shutil.copytree(tiny_model.parents[3], home)
    model = home / tiny_model.relative_to(tiny_model.parents[3])
    images = home / "raw" / "Dataset001_Organs" / "imagesTs"
    # two folds with the same weights: two members that agree exactly (the phantom's plan
    # mirrors no axis, so test-time flips add no member)
    for fold in ("0", "1"):
        shutil.copytree(model / "fold_all", model / f"fold_{fold}", dirs_exist_ok=True)
    out = tmp_path / "pred"
    args = ["predict", "-i", str(images), "-o", str(out), "-m", str(model), "--qc"]
    result = CliRunner().invoke(app, [*args, "--device", "cpu", "--folds", "0", "1"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "qc.csv").open()))
    cases = sorted(p.name.removesuffix("_0000.nii.gz") for p in images.glob("*_0000.nii.gz"))
    assert sorted(r["case"] for r in rows) == cases
    run = json.loads((out / "qc" / "run.json").read_text())
    assert "fingerprint.json" in run["training_volumes"]
    for row in rows:
        pred = out / f"{row['case']}.nii.gz"
        spacing = sitk.ReadImage(str(pred)).GetSpacing()
        voxel_ml = float(np.prod(spacing)) / 1000
        for name, value in (("liver", 1), ("kidney", 2), ("spleen", 3)):
            assert float(row[f"{name}_ml"] or 0) == pytest.approx(
                _count(pred, value) * voxel_ml, rel=1e-5
            )
        assert row["members"] == "2"
        if row["agreement"]:  # NaN (empty) when neither member drew any label
            assert float(row["agreement"]) == pytest.approx(1, abs=1e-5)
            assert float(row["split_fraction"]) == 0
        assert run["training_ranges_ml"]["liver"] is not None
    index = (out / "report" / "index.html").read_text()
    assert "Quality control" in index and "lowest agreement first" in index
    for case in cases:
        page = (out / "report" / "cases" / f"{case}.html").read_text()
        assert "prediction without a reference" in page and "training range" in page
    # a second run skips the predicted cases and keeps their records
    (out / "qc" / f"{cases[0]}.json").unlink()  # a case predicted without --qc before
    again = CliRunner().invoke(app, [*args, "--device", "cpu", "--folds", "0", "1"])
    assert again.exit_code == 0, again.output
    assert "skipped 2" in again.output
    rows = {r["case"]: r for r in csv.DictReader((out / "qc.csv").open())}
    assert sorted(rows) == cases
    assert rows[cases[0]]["members"] == "1" and rows[cases[0]]["agreement"] == ""
