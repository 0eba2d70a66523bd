"""Export to nnU-Net v2: the result passes a mirror of nnU-Net's own integrity check.

``nnunet_verify`` re-implements ``nnunetv2.experiment_planning.verify_dataset_integrity``
(nnU-Net 2.x) with its readers (SimpleITKIO: SimpleITK, arrays stacked per file, 4D files
are channels; NaturalImage2DIO: an RGB PNG is 3 channels) without importing voxseg's reader.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.data import export_nnunet, write_dataset_json
from voxseg.data.export import NNUNET_KEYS
from voxseg.errors import DatasetError, VoxsegError
from voxseg.io import Image, write_image

SITK_ENDINGS = (".nii.gz", ".nrrd", ".mha", ".gipl")
NATURAL_ENDINGS = (".png", ".bmp", ".tif")
NIBABEL_ENDINGS = (".nii", ".nii.gz")


def _read_nnunet(files: list[Path], ending: str) -> tuple[np.ndarray, tuple]:
    """(channels, spacing) as nnU-Net's reader for ``ending`` returns them."""
    arrays, spacings = [], []
    for f in files:
        if ending in NATURAL_ENDINGS:
            a = np.asarray(PILImage.open(f))
            arrays.append(a.transpose(2, 0, 1)[:, None] if a.ndim == 3 else a[None, None])
            spacings.append((999, 1, 1))
        else:
            img = sitk.ReadImage(str(f))
            a = sitk.GetArrayFromImage(img)
            assert a.ndim in (3, 4), f"{f}: nnU-Net reads 2D sitk files differently"
            arrays.append(a[None] if a.ndim == 3 else a)
            spacings.append(tuple(img.GetSpacing())[::-1][-3:])
    assert len({a.shape[1:] for a in arrays}) == 1, "channel files differ in shape"
    return np.vstack(arrays), spacings[0]


def nnunet_verify(folder: Path) -> None:
    """nnU-Net v2's verify_dataset_integrity, as assertions."""
    dj = json.loads((folder / "dataset.json").read_text())
    for key in ("labels", "channel_names", "numTraining", "file_ending"):
        assert key in dj, f"dataset.json lacks {key}"
    ending = dj["file_ending"]
    reader = dj.get("overwrite_image_reader_writer")
    assert reader in (None, "SimpleITKIO") or ending in SITK_ENDINGS + NATURAL_ENDINGS
    assert ending in SITK_ENDINGS + NATURAL_ENDINGS + NIBABEL_ENDINGS, "no nnU-Net reader"
    files = sorted(p.name for p in (folder / "imagesTr").iterdir() if p.name.endswith(ending))
    # get_identifiers_from_splitted_dataset_folder: crop the ending and _XXXX
    ids = sorted({f[: -(len(ending) + 5)] for f in files})
    assert len(ids) == dj["numTraining"]
    labels = {p.name for p in (folder / "labelsTr").iterdir() if p.name.endswith(ending)}
    assert all(f"{i}{ending}" in labels for i in ids), "not every case has a label"
    # LabelManager: all labels (regions flattened), ignore appended, consecutive
    values = sorted(
        {v for k, x in dj["labels"].items() if k != "ignore" for v in np.atleast_1d(x).tolist()}
    )
    if "ignore" in dj["labels"]:
        values.append(dj["labels"]["ignore"])
    assert all(np.ediff1d(values) == 1), "labels must be consecutive"
    if any(isinstance(v, list) for v in dj["labels"].values()):
        assert dj.get("regions_class_order") is not None
    for i in ids:
        pattern = re.compile(re.escape(i) + r"_\d\d\d\d" + re.escape(ending))
        image_files = [folder / "imagesTr" / f for f in files if pattern.fullmatch(f)]
        images, spacing = _read_nnunet(image_files, ending)
        seg, seg_spacing = _read_nnunet([folder / "labelsTr" / f"{i}{ending}"], ending)
        assert not np.isnan(images).any() and not np.isnan(seg).any()
        assert images.shape[1:] == seg.shape[1:], f"{i}: shape mismatch"
        assert np.allclose(spacing, seg_spacing), f"{i}: spacing mismatch"
        assert len(images) == len(dj["channel_names"]), f"{i}: wrong number of channels"
        assert set(np.unique(seg).tolist()) <= set(values), f"{i}: unexpected labels"


def test_export_nifti_dataset_passes_nnunet_rules(raw_dataset, tmp_path):
    out = export_nnunet(raw_dataset, tmp_path / "nnUNet_raw", 7)
    assert out.name == "Dataset007_X"
    nnunet_verify(out)
    dj = json.loads((out / "dataset.json").read_text())
    assert set(dj) <= set(NNUNET_KEYS)
    assert dj["labels"] == {"background": 0, "liver": 1, "tumor": 2}
    src = raw_dataset / "imagesTr/case_tr001_0001.nii.gz"
    assert (out / "imagesTr/case_tr001_0001.nii.gz").read_bytes() == src.read_bytes()
    assert (out / "imagesTs/case_ts000_0000.nii.gz").is_file()


def test_export_converts_mhd_to_nifti(tmp_path, rng):
    root = tmp_path / "mhd"
    for i in range(2):
        img = Image(rng.normal(size=(3, 4, 5)).astype(np.float32), (2.0, 1.0, 0.5), (1, 2, 3))
        write_image(img, root / f"imagesTr/c{i}_0000.mhd")
        lab = img.with_array((img.array > 0).astype(np.uint8))
        write_image(lab, root / f"labelsTr/c{i}.mhd")
    write_dataset_json(root, {0: "CT"}, {"background": 0, "fg": 1}, 2, ".mhd")
    out = export_nnunet(root, tmp_path / "nn", 12, name="Mine")
    assert out.name == "Dataset012_Mine"
    nnunet_verify(out)
    a = sitk.ReadImage(str(root / "imagesTr/c1_0000.mhd"))
    b = sitk.ReadImage(str(out / "imagesTr/c1_0000.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)


def test_export_rgb_png_keeps_one_file_per_case(tmp_path, rng):
    root = tmp_path / "road"
    for i in range(2):
        rgb = rng.integers(0, 256, size=(3, 1, 6, 7)).astype(np.uint8)
        write_image(Image(rgb, (999.0, 1.0, 1.0)), root / f"imagesTr/r{i}_0000.png")
        write_image(Image(rgb[0] > 127, (999.0, 1.0, 1.0)), root / f"labelsTr/r{i}.png")
    write_dataset_json(root, {0: "R", 1: "G", 2: "B"}, {"background": 0, "road": 1}, 2, ".png")
    out = export_nnunet(root, tmp_path / "nn", 120)
    nnunet_verify(out)
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["r0_0000.png", "r1_0000.png"]


def test_export_refuses_non_consecutive_labels(raw_dataset, tmp_path):
    data = json.loads((raw_dataset / "dataset.json").read_text())
    data["labels"] = {"background": 0, "liver": 1, "tumor": 2, "extra": 4}
    (raw_dataset / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(VoxsegError, match="consecutive"):
        export_nnunet(raw_dataset, tmp_path / "nn", 1)


def test_export_refuses_invalid_dataset_and_id_clash(raw_dataset, tmp_path):
    (tmp_path / "nn" / "Dataset003_Other").mkdir(parents=True)
    with pytest.raises(VoxsegError, match="already used"):
        export_nnunet(raw_dataset, tmp_path / "nn", 3)
    (raw_dataset / "labelsTr/case_tr000.nii.gz").unlink()
    with pytest.raises(DatasetError, match="case_tr000"):
        export_nnunet(raw_dataset, tmp_path / "nn", 4)


def test_export_cli(raw_dataset, tmp_path):
    runner = CliRunner()
    args = ["dataset", "export-nnunet", str(raw_dataset), str(tmp_path / "nn"), "--id", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    nnunet_verify(tmp_path / "nn" / "Dataset005_X")
    assert runner.invoke(app, args).exit_code == 1  # exists
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
