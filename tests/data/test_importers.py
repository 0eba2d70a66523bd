"""Importers: each input layout, built in a temp folder, becomes a dataset that checks clean.

Outputs are compared with independent readers (nibabel, Pillow, SimpleITK directly).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.data import Dataset, check_dataset
from voxseg.data.importers import import_folder2d, import_msd, import_ovseg, import_seqseg
from voxseg.errors import VoxsegError
from voxseg.io import PolyData, write_vtp

runner = CliRunner()


def _sitk_volume(arr: np.ndarray, spacing=(0.7, 0.8, 2.0), origin=(5.0, -3.0, 1.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)  # ITK order x, y, z
    img.SetOrigin(origin)
    return img


# --- MSD --------------------------------------------------------------------------------


def _make_msd(root: Path, rng: np.random.Generator) -> Path:
    task = root / "Task01_BrainTumour"
    for d in ("imagesTr", "labelsTr", "imagesTs"):
        (task / d).mkdir(parents=True)
    training = []
    for i in range(3):
        chans = [_sitk_volume(rng.normal(size=(4, 5, 6)).astype(np.float32)) for _ in range(2)]
        sitk.WriteImage(sitk.JoinSeries(chans), str(task / f"imagesTr/BRATS_{i:03d}.nii.gz"))
        lab = rng.integers(0, 3, size=(4, 5, 6)).astype(np.uint8)
        sitk.WriteImage(_sitk_volume(lab), str(task / f"labelsTr/BRATS_{i:03d}.nii.gz"))
        training.append(
            {
                "image": f"./imagesTr/BRATS_{i:03d}.nii.gz",
                "label": f"./labelsTr/BRATS_{i:03d}.nii.gz",
            }
        )
    chans = [_sitk_volume(rng.normal(size=(4, 5, 6)).astype(np.float32)) for _ in range(2)]
    sitk.WriteImage(sitk.JoinSeries(chans), str(task / "imagesTs/BRATS_900.nii.gz"))
    (task / "imagesTr/._BRATS_000.nii.gz").write_bytes(b"macOS resource fork")
    meta = {
        "name": "BRATS",
        "description": "tiny",
        "tensorImageSize": "4D",
        "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "edema", "2": "tumour"},
        "numTraining": 3,
        "numTest": 1,
        "training": training,
        "test": ["./imagesTs/BRATS_900.nii.gz"],
    }
    (task / "dataset.json").write_text(json.dumps(meta))
    return task


def test_import_msd_splits_4d_into_channels(tmp_path, rng):
    task = _make_msd(tmp_path, rng)
    out = import_msd(task, tmp_path / "out", num_processes=1)
    assert check_dataset(out, num_processes=1).errors == []
    info = Dataset(out).info
    assert info.channel_names == {"0": "FLAIR", "1": "T1w"}
    assert info.labels == {"background": 0, "edema": 1, "tumour": 2}
    assert info.numTraining == 3
    four_d = nib.load(task / "imagesTr/BRATS_001.nii.gz")
    for c in range(2):
        ch = nib.load(out / f"imagesTr/BRATS_001_{c:04d}.nii.gz")
        np.testing.assert_array_equal(ch.get_fdata(), four_d.get_fdata()[..., c])
        np.testing.assert_allclose(ch.affine, four_d.affine, atol=1e-5)
    label = (out / "labelsTr/BRATS_002.nii.gz").read_bytes()
    assert label == (task / "labelsTr/BRATS_002.nii.gz").read_bytes()
    assert (out / "imagesTs/BRATS_900_0001.nii.gz").is_file()


def test_import_msd_cli_and_overwrite(tmp_path, rng):
    task = _make_msd(tmp_path, rng)
    args = ["dataset", "import", "msd", str(task), str(tmp_path / "out"), "-p", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.output
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()}
    # the same command again finds its own finished output: nothing to do, exit 0
    again = runner.invoke(app, [*args[:-2], "-p", "2"])
    assert again.exit_code == 0, again.output
    assert "already imported" in again.output
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before
    # a source that changed asks for a new import: the finished folder is refused
    (task / "imagesTr" / "notes.txt").write_text("added later")
    changed = runner.invoke(app, args)
    assert changed.exit_code == 1 and "--overwrite" in changed.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_an_import_stopped_in_its_closing_check_is_redone(tmp_path, rng, monkeypatch):
    """The import command ends with the dataset check: a Ctrl-C there (dataset.json already
    written) leaves the folder marked unfinished, so the same command imports again."""
    import voxseg.data.check as check

    task = _make_msd(tmp_path, rng)
    clean = import_msd(task, tmp_path / "clean", num_processes=1)
    out = tmp_path / "out"
    args = ["dataset", "import", "msd", str(task), str(out), "-p", "1"]

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(check, "check_dataset", stopped)
        assert runner.invoke(app, args).exit_code != 0
    assert (out / "dataset.json").exists() and (out / ".voxseg_import_unfinished").exists()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "did not finish; importing again" in result.output
    assert _tree(out) == _tree(clean)
    assert not (out / ".voxseg_import_unfinished").exists()
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def _tree(folder: Path) -> dict[str, bytes]:
    """The files of ``folder`` (hidden ones aside) and their bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def test_an_interrupted_import_is_redone_by_the_same_command(tmp_path, rng, monkeypatch):
    """An import stopped after its cases (before dataset.json) leaves a folder the same
    command replaces without --overwrite; the same command then finds it finished."""
    import voxseg.data.importers.msd as msd

    task = _make_msd(tmp_path, rng)
    clean = import_msd(task, tmp_path / "clean", num_processes=1)
    out = tmp_path / "out"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(msd, "write_dataset_json", killed)
        with pytest.raises(KeyboardInterrupt):
            import_msd(task, out, num_processes=1)
    assert (out / "imagesTr").is_dir() and not (out / "dataset.json").exists()
    args = ["dataset", "import", "msd", str(task), str(out), "-p", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "did not finish; importing again" in result.output
    assert _tree(out) == _tree(clean)
    assert not (out / ".voxseg_import_unfinished").exists()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "already imported" in again.output


# --- ovseg ------------------------------------------------------------------------------


def test_import_ovseg_matches_by_name_and_infers_labels(tmp_path, rng):
    raw = tmp_path / "raw_data" / "kits"
    (raw / "images").mkdir(parents=True)
    (raw / "labels").mkdir()
    for i in range(3):
        arr = rng.normal(size=(5, 4, 6)).astype(np.float32)
        sitk.WriteImage(_sitk_volume(arr), str(raw / "images" / f"case_{i}.nii.gz"))
        if i < 2:  # case_2 has no label: it becomes a test case
            lab = np.zeros((5, 4, 6), np.uint8)
            lab[1:3, 1:3, 1:4] = 1
            lab[2, 2, 2] = 3
            sitk.WriteImage(_sitk_volume(lab), str(raw / "labels" / f"case_{i}.nii.gz"))
    out = import_ovseg(raw, tmp_path / "out", num_processes=1)
    report = check_dataset(out, num_processes=1)
    assert report.errors == []
    info = Dataset(out).info
    assert info.labels == {"background": 0, "label_1": 1, "label_3": 3}
    assert info.numTraining == 2
    assert Dataset(out).case_ids("Ts") == ["case_2"]
    src = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labels/case_1.nii.gz")))
    dst = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr/case_1.nii.gz")))
    np.testing.assert_array_equal(src, dst)


def test_import_ovseg_multichannel_with_names_via_cli(tmp_path, rng):
    raw = tmp_path / "raw"
    for d in ("images", "labels"):
        (raw / d).mkdir(parents=True)
    for i in range(2):
        chans = [_sitk_volume(rng.normal(size=(3, 4, 5)).astype(np.float32)) for _ in range(2)]
        sitk.WriteImage(sitk.JoinSeries(chans), str(raw / f"images/p{i}.nii.gz"))
        lab = (rng.random((3, 4, 5)) > 0.5).astype(np.uint8)
        sitk.WriteImage(_sitk_volume(lab), str(raw / f"labels/p{i}.nii.gz"))
    out = tmp_path / "out"
    args = ["dataset", "import", "ovseg", str(raw), str(out), "-p", "1"]
    args += ["--channel-names", "T2", "--channel-names", "ADC", "--labels", "lesion=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    info = Dataset(out).info
    assert info.channel_names == {"0": "T2", "1": "ADC"}
    assert info.labels == {"background": 0, "lesion": 1}
    ch1 = nib.load(out / "imagesTr/p1_0001.nii.gz").get_fdata()
    np.testing.assert_allclose(ch1, nib.load(raw / "images/p1.nii.gz").get_fdata()[..., 1])


def test_import_ovseg_label_without_image(tmp_path, rng):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "labels").mkdir()
    sitk.WriteImage(_sitk_volume(np.zeros((2, 2, 2), np.uint8)), str(raw / "labels/x.nii.gz"))
    with pytest.raises(VoxsegError, match="labels without an image: x"):
        import_ovseg(raw, tmp_path / "out")


# --- 2D folders -------------------------------------------------------------------------


def _make_folder2d(root: Path, rng: np.random.Generator, n: int = 5) -> tuple[Path, Path]:
    images, masks = root / "img", root / "mask"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for i in range(n):
        rgb = rng.integers(0, 256, size=(7, 9, 3)).astype(np.uint8)
        PILImage.fromarray(rgb).save(images / f"s{i}.png" if i % 2 else images / f"s{i}.jpg")
        mask = rng.choice(np.array([0, 128, 255], np.uint8), size=(7, 9))
        PILImage.fromarray(mask).save(masks / f"s{i}.png")
    return images, masks


@pytest.mark.parametrize("fmt", ["nii.gz", "png"])
def test_import_folder2d_maps_mask_values(tmp_path, rng, fmt):
    images, masks = _make_folder2d(tmp_path, rng)
    out, mapping = import_folder2d(
        images, masks, tmp_path / "out", file_format=fmt, test_fraction=0.4, seed=1
    )
    assert mapping == {0: 0, 128: 1, 255: 2}
    assert check_dataset(out, num_processes=1).errors == []
    ds = Dataset(out)
    info = ds.info
    assert info.labels == {"background": 0, "class_128": 1, "class_255": 2}
    assert info.channel_names == {"0": "R", "1": "G", "2": "B"}
    assert info.model_extra["voxseg_label_mapping"] == {"0": 0, "128": 1, "255": 2}
    assert len(ds.case_ids("Tr")) == 3 and len(ds.case_ids("Ts")) == 2
    assert info.numTraining == 3
    case = "s1" if "s1" in ds.case_ids("Tr") else ds.case_ids("Tr")[0]
    split = "Tr"
    rgb = np.asarray(PILImage.open(next(images.glob(f"{case}.*"))))
    mask = np.asarray(PILImage.open(masks / f"{case}.png"))
    ending = ".png" if fmt == "png" else ".nii.gz"
    if fmt == "png":
        got = np.asarray(PILImage.open(out / f"images{split}/{case}_0000.png"))
        np.testing.assert_array_equal(got, rgb)
        lab = np.asarray(PILImage.open(out / f"labels{split}/{case}.png"))
    else:
        for c in range(3):
            nii = nib.load(out / f"images{split}/{case}_{c:04d}.nii.gz")
            assert nii.header.get_zooms()[2] == pytest.approx(999.0)
            # nibabel is x-major: [x, y, z]
            np.testing.assert_array_equal(nii.get_fdata()[:, :, 0].T, rgb[..., c])
        lab = nib.load(out / f"labels{split}/{case}{ending}").get_fdata()[:, :, 0].T
    np.testing.assert_array_equal(lab, np.searchsorted([0, 128, 255], mask))


def test_import_folder2d_cli_prints_mapping_and_refuses_jpeg_masks(tmp_path, rng):
    images, masks = _make_folder2d(tmp_path, rng, n=3)
    out = tmp_path / "out"
    args = ["dataset", "import", "folder2d", str(images), str(masks), str(out)]
    result = runner.invoke(app, [*args, "--label-names", "grey", "--label-names", "white"])
    assert result.exit_code == 0, result.output
    assert "128 → 1" in result.output and "255 → 2" in result.output
    assert Dataset(out).info.labels == {"background": 0, "grey": 1, "white": 2}
    PILImage.fromarray(np.zeros((7, 9), np.uint8)).save(masks / "s0.jpg")
    bad = runner.invoke(app, [*args, "--overwrite"])
    assert bad.exit_code == 1 and "s0.jpg" in bad.output


# --- SeqSeg -----------------------------------------------------------------------------


def _tube_case(rng: np.random.Generator) -> tuple[sitk.Image, sitk.Image, PolyData]:
    """A straight vessel along z through (y=5, x=6) and its centerline in LPS mm."""
    shape = (12, 10, 12)
    img = _sitk_volume(rng.normal(size=shape).astype(np.float32), (0.5, 0.5, 1.0), (3, 4, 5))
    mask = np.zeros(shape, np.uint8)
    zz, yy, xx = np.indices(shape)
    mask[(yy - 5) ** 2 + (xx - 6) ** 2 <= 4] = 255
    seg = _sitk_volume(mask, (0.5, 0.5, 1.0), (3, 4, 5))
    pts = np.array([img.TransformIndexToPhysicalPoint((6, 5, int(z))) for z in range(1, 11)])
    poly = PolyData(
        pts,
        lines=[np.arange(len(pts))],
        point_data={"MaximumInscribedSphereRadius": np.full(len(pts), 1.0)},
    )
    return img, seg, poly


def _make_seqseg(root: Path, rng: np.random.Generator) -> Path:
    for d in ("images", "truths", "centerlines", "seeds"):
        (root / d).mkdir(parents=True)
    for i in range(2):
        img, seg, poly = _tube_case(rng)
        sitk.WriteImage(img, str(root / f"images/aorta{i}.mha"))
        sitk.WriteImage(seg, str(root / f"truths/aorta{i}.mha"))
        write_vtp(poly, root / f"centerlines/aorta{i}.vtp")
    (root / "seeds" / "seeds.json").write_text(json.dumps([[[6, 7, 8], [0, 0, 1], 1.0]]))
    return root


def test_import_seqseg_keeps_centerlines_and_seeds(tmp_path, rng):
    data = _make_seqseg(tmp_path / "seqseg", rng)
    out = import_seqseg(data, tmp_path / "out", num_processes=1)
    assert check_dataset(out, num_processes=1).errors == []
    ds = Dataset(out)
    assert ds.info.labels == {"background": 0, "vessel": 1}
    case = ds.cases("Tr")[1]
    assert case.extras["centerline"].read_bytes() == (data / "centerlines/aorta1.vtp").read_bytes()
    assert json.loads((out / "seeds/seeds.json").read_text())[0][2] == 1.0
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(data / "truths/aorta1.mha")))
    _, label = ds.load_case(case)
    np.testing.assert_array_equal(label.array, (truth > 0).astype(np.uint8))


def test_import_seqseg_refuses_misaligned_or_radiusless_centerlines(tmp_path, rng):
    data = _make_seqseg(tmp_path / "seqseg", rng)
    img, seg, poly = _tube_case(rng)
    ras = PolyData(poly.points * np.array([-1, -1, 1]), poly.lines, point_data=poly.point_data)
    write_vtp(ras, data / "centerlines/aorta0.vtp")
    with pytest.raises(VoxsegError, match="aorta0.vtp: only 0% of the centerline"):
        import_seqseg(data, tmp_path / "out", num_processes=1)
    out = import_seqseg(data, tmp_path / "out", check_alignment=False, overwrite=True)
    assert (out / "centerlines/aorta0.vtp").is_file()
    write_vtp(PolyData(poly.points, poly.lines), data / "centerlines/aorta1.vtp")
    result = runner.invoke(
        app,
        ["dataset", "import", "seqseg", str(data), str(tmp_path / "o2"), "--no-check-alignment"],
    )
    assert result.exit_code == 1 and "MaximumInscribedSphereRadius" in result.output
