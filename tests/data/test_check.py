"""Dataset check: a clean dataset passes; each kind of damage is found and names its file."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.data import check as check_mod
from voxseg.data.check import check_dataset, ensure_valid, unique_values
from voxseg.errors import DatasetError
from voxseg.io import Image, read_image, write_image

runner = CliRunner()


def _json(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def _set_json(root: Path, **changes) -> None:
    data = _json(root)
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    (root / "dataset.json").write_text(json.dumps(data))


def _rewrite(path: Path, array=None, **geometry) -> None:
    img = read_image(path)
    arr = img.array if array is None else array
    write_image(
        Image(
            arr,
            geometry.get("spacing", img.spacing),
            geometry.get("origin", img.origin),
            geometry.get("direction", img.direction),
        ),
        path,
    )


LABEL = "labelsTr/case_tr001.nii.gz"
IMAGE0 = "imagesTr/case_tr001_0000.nii.gz"
IMAGE1 = "imagesTr/case_tr001_0001.nii.gz"


def _no_json(r: Path) -> None:
    (r / "dataset.json").unlink()


def _bad_json(r: Path) -> None:
    (r / "dataset.json").write_text("{not json")


def _json_missing_field(r: Path) -> None:
    _set_json(r, channel_names=None)


def _label_without_image(r: Path) -> None:
    (r / IMAGE0).unlink()
    (r / IMAGE1).unlink()


def _image_without_label(r: Path) -> None:
    (r / LABEL).unlink()


def _missing_channel(r: Path) -> None:
    (r / IMAGE1).unlink()


def _channel_gap(r: Path) -> None:
    (r / IMAGE1).rename(r / "imagesTr/case_tr001_0002.nii.gz")


def _extra_channel(r: Path) -> None:
    write_image(read_image(r / IMAGE1), r / "imagesTr/case_tr001_0002.nii.gz")


def _bad_name(r: Path) -> None:
    write_image(read_image(r / IMAGE0), r / "imagesTr/stray.nii.gz")


def _wrong_ending(r: Path) -> None:
    write_image(read_image(r / IMAGE0), r / "imagesTr/case_tr009_0000.nrrd")


def _num_training(r: Path) -> None:
    _set_json(r, numTraining=7)


def _label_shape(r: Path) -> None:
    _rewrite(r / LABEL, np.zeros((4, 6, 6), np.uint8))


def _label_spacing(r: Path) -> None:
    _rewrite(r / LABEL, spacing=(2.5, 0.8, 0.8))


def _label_origin(r: Path) -> None:
    _rewrite(r / LABEL, origin=(10.0, -5.0, 7.0))


def _label_direction(r: Path) -> None:
    _rewrite(r / LABEL, direction=np.diag([1.0, -1.0, 1.0]))


def _channel_spacing(r: Path) -> None:
    _rewrite(r / IMAGE1, spacing=(3.0, 0.9, 0.8))


def _undeclared_label(r: Path) -> None:
    arr = read_image(r / LABEL).array.copy()
    arr[0, 0, 0] = 5
    _rewrite(r / LABEL, arr)


def _nan_image(r: Path) -> None:
    arr = read_image(r / IMAGE1).array.copy()
    arr[1, 2, 3] = np.nan
    _rewrite(r / IMAGE1, arr)


def _fractional_label(r: Path) -> None:
    arr = read_image(r / LABEL).array.astype(np.float32)
    arr[0, 0, 1] = 0.5
    _rewrite(r / LABEL, arr)


def _truncated(r: Path) -> None:
    data = (r / LABEL).read_bytes()
    raw = gzip.decompress(data)
    (r / LABEL).write_bytes(gzip.compress(raw[: len(raw) - 40]))


def _garbage(r: Path) -> None:
    (r / IMAGE0).write_bytes(b"this is not an image")


def _ignore_not_highest(r: Path) -> None:
    _set_json(r, labels={"background": 0, "liver": 1, "ignore": 2, "tumor": 3})


def _regions_without_order(r: Path) -> None:
    _set_json(r, labels={"background": 0, "whole": [1, 2], "tumor": 2})


def _rgb_label(r: Path) -> None:
    arr = read_image(r / LABEL).array
    _rewrite(r / LABEL, np.stack([arr, arr, arr]))


DAMAGES: list[tuple[Callable[[Path], None], str, str]] = [
    (_no_json, "dataset.json", "missing"),
    (_bad_json, "dataset.json", "not valid JSON"),
    (_json_missing_field, "dataset.json", "channel_names"),
    (_label_without_image, LABEL, "no image for this label"),
    (_image_without_label, LABEL, "missing"),
    (_missing_channel, IMAGE1, "missing"),
    (_channel_gap, IMAGE1, "missing"),
    (_extra_channel, IMAGE0, "3 channel(s)"),
    (_bad_name, "imagesTr/stray.nii.gz", "does not match"),
    (_wrong_ending, "imagesTr/case_tr009_0000.nrrd", "file_ending"),
    (_num_training, "dataset.json", "numTraining is 7"),
    (_label_shape, LABEL, "shape"),
    (_label_spacing, LABEL, "spacing (2.5, 0.8, 0.8) differs from (3, 0.8, 0.8) of " + IMAGE0),
    (_label_origin, LABEL, "origin"),
    (_label_direction, LABEL, "direction differs from " + IMAGE0),
    (_channel_spacing, IMAGE1, "spacing"),
    (_undeclared_label, LABEL, "label values [5] not declared"),
    (_nan_image, IMAGE1, "1 NaN"),
    (_fractional_label, LABEL, "non-integer label values (e.g. 0.5)"),
    (_truncated, LABEL, "unreadable"),
    (_garbage, IMAGE0, "unreadable"),
    (_ignore_not_highest, "dataset.json", "ignore"),
    (_regions_without_order, "dataset.json", "regions_class_order"),
    (_rgb_label, LABEL, "channels"),
]


def test_valid_nnunet_folder_checks_clean(raw_dataset):
    report = check_dataset(raw_dataset, num_processes=1)
    assert report.errors == [] and report.warnings == []
    assert report.num_cases == {"Tr": 3, "Ts": 1}
    result = runner.invoke(app, ["dataset", "check", str(raw_dataset)])
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output


def test_dataset_found_by_name_in_workspace(tmp_path, make_dataset):
    home = tmp_path / "home"
    make_dataset(home / "raw" / "Dataset004_Liver")
    result = runner.invoke(app, ["dataset", "check", "Liver", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert "Dataset004_Liver" in result.output


@pytest.mark.parametrize(("damage", "path", "text"), DAMAGES, ids=[d[0].__name__ for d in DAMAGES])
def test_each_damage_is_named(raw_dataset, damage, path, text):
    damage(raw_dataset)
    report = check_dataset(raw_dataset, num_processes=1)
    hits = [p for p in report.errors if p.path == path and text in p.message]
    assert hits, f"expected an error for {path} containing {text!r}, got {report.errors}"
    result = runner.invoke(app, ["dataset", "check", str(raw_dataset), "-p", "1"])
    assert result.exit_code == 1
    assert f"{path}: " in result.output


def test_empty_label_is_a_warning(raw_dataset):
    _rewrite(raw_dataset / LABEL, np.zeros((4, 6, 5), np.uint8))
    report = check_dataset(raw_dataset, num_processes=1)
    assert report.errors == []
    assert [str(w) for w in report.warnings] == [f"{LABEL}: label map is empty (only background)"]
    result = runner.invoke(app, ["dataset", "check", str(raw_dataset)])
    assert result.exit_code == 0
    assert "warning:" in result.output


def test_all_problems_found_at_once_in_parallel(raw_dataset):
    _nan_image(raw_dataset)
    _label_spacing(raw_dataset)
    _num_training(raw_dataset)
    _undeclared_label_other = raw_dataset / "labelsTr/case_tr002.nii.gz"
    arr = read_image(_undeclared_label_other).array.copy()
    arr[0, 0, 0] = 9
    _rewrite(_undeclared_label_other, arr)
    serial = check_dataset(raw_dataset, num_processes=1)
    parallel = check_dataset(raw_dataset, num_processes=2)
    assert serial.errors == parallel.errors
    assert {p.path for p in serial.errors} == {
        IMAGE1,
        LABEL,
        "dataset.json",
        "labelsTr/case_tr002.nii.gz",
    }


def test_worker_exception_becomes_a_problem(raw_dataset, monkeypatch):
    def boom(*args, **kwargs):
        raise ZeroDivisionError("bug in a check")

    monkeypatch.setattr(check_mod, "_check_case", boom)
    report = check_dataset(raw_dataset, num_processes=1)
    assert len(report.errors) == 4  # 3 training cases + 1 test case
    assert all("ZeroDivisionError" in p.message for p in report.errors)


def test_headers_only_skips_voxels(raw_dataset):
    _nan_image(raw_dataset)
    assert check_dataset(raw_dataset, num_processes=1, read_voxels=False).errors == []
    result = runner.invoke(app, ["dataset", "check", str(raw_dataset), "--headers-only"])
    assert result.exit_code == 0


def test_ensure_valid_raises_with_every_message_and_caches(raw_dataset, monkeypatch):
    ensure_valid(raw_dataset, num_processes=1)
    assert (raw_dataset / check_mod.CACHE_NAME).is_file()
    with monkeypatch.context() as m:  # unchanged dataset: the cached result is used
        m.setattr(check_mod, "check_dataset", lambda *a, **k: pytest.fail("checked again"))
        ensure_valid(raw_dataset, num_processes=1)
    _nan_image(raw_dataset)
    _num_training(raw_dataset)
    with pytest.raises(DatasetError) as info:
        ensure_valid(raw_dataset, num_processes=1)
    assert len(info.value.problems) == 2
    assert any(IMAGE1 in p for p in info.value.problems)
    assert any("numTraining" in p for p in info.value.problems)


def test_unique_values_matches_numpy(rng):
    arr = rng.integers(-3, 40, size=(5, 7, 9)).astype(np.int16)
    assert unique_values(arr, chunk=17) == np.unique(arr).tolist()
    wide = np.array([0, 5, 10_000_000], dtype=np.int64)
    assert unique_values(wide) == [0, 5, 10_000_000]


def test_header_geometry_matches_full_read(tmp_path):
    img = Image(
        np.zeros((2, 3, 4), np.float32),
        spacing=(2.0, 0.5, 0.7),
        origin=(1.0, 2.0, 3.0),
        direction=np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]]),
    )
    write_image(img, tmp_path / "a.nii.gz")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(tmp_path / "a.nii.gz"))
    reader.ReadImageInformation()
    geom, channels = check_mod.header_geometry(reader)
    assert channels == 1
    assert geom.is_close(read_image(tmp_path / "a.nii.gz").geometry)
    assert geom.shape == (2, 3, 4) and geom.spacing == pytest.approx((2.0, 0.5, 0.7))


def test_rgb_png_dataset_in_nnunet_layout_checks_clean(tmp_path, rng):
    """nnU-Net stores RGB PNGs as one _0000.png holding channels R, G, B."""
    from voxseg.data import write_dataset_json

    root = tmp_path / "Dataset120_Road"
    for i in range(2):
        rgb = rng.integers(0, 256, size=(3, 1, 8, 9)).astype(np.uint8)
        write_image(Image(rgb, (999.0, 1.0, 1.0)), root / f"imagesTr/img{i}_0000.png")
        mask = (rng.random((1, 8, 9)) > 0.5).astype(np.uint8)
        write_image(Image(mask, (999.0, 1.0, 1.0)), root / f"labelsTr/img{i}.png")
    write_dataset_json(root, {0: "R", 1: "G", 2: "B"}, {"background": 0, "road": 1}, 2, ".png")
    report = check_dataset(root, num_processes=1)
    assert report.errors == [], report.errors
    from voxseg.data import Dataset

    ds = Dataset(root)
    image, label = ds.load_case(ds.cases()[0])
    assert image.array.shape == (3, 1, 8, 9) and label.shape == (1, 8, 9)


def test_spacing_and_origin_of_fixture_are_kept(raw_dataset):
    img = read_image(raw_dataset / IMAGE0)
    assert img.spacing == pytest.approx((3.0, 0.8, 0.8))
    assert img.origin == pytest.approx((10.0, -5.0, 2.0))
