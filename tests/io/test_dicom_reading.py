"""Reading DICOM series the rest of the way: compressed transfer syntaxes, enhanced
multi-frame images, broken series (duplicates, gaps, uneven spacing, no pixels)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from voxseg.errors import VoxsegError
from voxseg.io.dicom import read_dicom_folder
from voxseg.synth.dicom import series_datasets, write_datasets

SHAPE = (4, 64, 48)


def _datasets(rng, spacing=(2.0, 0.8, 0.8), **kw):
    values = rng.integers(-1000, 2000, size=SHAPE)
    return values, series_datasets(values, spacing=spacing, first_position=(1, 2, 3), **kw)


def _jpeg_lossless(ds):
    """JPEG Lossless (process 14, SV1) through GDCM, which pydicom cannot encode."""
    img = sitk.GetImageFromArray(ds.pixel_array.astype(np.int16))
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.SetUseCompression(True)
    writer.SetCompressor("JPEG")
    path = f"/tmp/{ds.SOPInstanceUID}.dcm"
    writer.SetFileName(path)
    writer.Execute(img)
    encoded = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = encoded.file_meta.TransferSyntaxUID
    ds.PixelData = encoded.PixelData
    ds["PixelData"].VR = "OB"


@pytest.mark.parametrize("syntax", ["rle", "jpeg-ls", "jpeg2000", "jpeg-lossless"], ids=lambda s: s)
def test_compressed_series_decode(tmp_path, rng, syntax):
    values, datasets = _datasets(rng, intercept=-1024)
    for ds in datasets:
        if syntax == "jpeg-lossless":
            _jpeg_lossless(ds)
        else:
            ds.compress(
                {"rle": RLELossless, "jpeg-ls": JPEGLSLossless, "jpeg2000": JPEG2000Lossless}[
                    syntax
                ]
            )
    write_datasets(datasets, tmp_path / "s")
    assert pydicom.dcmread(
        next((tmp_path / "s").iterdir())
    ).file_meta.TransferSyntaxUID.is_compressed
    image, _ = read_dicom_folder(tmp_path / "s")
    assert image.array.dtype == np.int16
    np.testing.assert_array_equal(image.array, values)


def test_undecodable_transfer_syntax_names_the_packages(tmp_path, rng):
    _, datasets = _datasets(rng)
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder
        ds.PixelData = b"\x00\x00"
        ds["PixelData"].VR = "OB"
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00"])
    write_datasets(datasets, tmp_path / "s")
    with pytest.raises(VoxsegError, match="pip install pylibjpeg") as err:
        read_dicom_folder(tmp_path / "s")
    assert "MPEG2" in str(err.value)


def test_enhanced_multiframe_ct_reads_like_its_classic_series(tmp_path, rng):
    import highdicom as hd

    values, datasets = _datasets(rng, intercept=-1024)
    write_datasets(datasets, tmp_path / "classic")
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=datasets,
        series_instance_uid=pydicom.uid.generate_uid(),
        series_number=2,
        sop_instance_uid=pydicom.uid.generate_uid(),
        instance_number=1,
    )
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "multi.dcm")
    classic, _ = read_dicom_folder(tmp_path / "classic")
    multi, series = read_dicom_folder(tmp_path / "enhanced")
    np.testing.assert_array_equal(multi.array, classic.array)
    np.testing.assert_array_equal(multi.array, values)
    assert multi.geometry.is_close(classic.geometry)
    assert len(series.files) == 1 and len(series.slices) == SHAPE[0]


def _positions_changed(tmp_path, rng, change):
    _, datasets = _datasets(rng)
    change(datasets)
    write_datasets(datasets, tmp_path / "s")
    return tmp_path / "s"


def test_duplicate_positions_are_named(tmp_path, rng):
    def dup(datasets):
        datasets[2].ImagePositionPatient = datasets[1].ImagePositionPatient

    with pytest.raises(VoxsegError, match="duplicate slice position"):
        read_dicom_folder(_positions_changed(tmp_path, rng, dup))


def test_missing_slice_is_named_and_resampled_on_request(tmp_path, rng):
    values, datasets = _datasets(rng)
    write_datasets(datasets[:2] + datasets[3:], tmp_path / "s")
    with pytest.raises(VoxsegError, match="a missing slice.*--resample-uneven"):
        read_dicom_folder(tmp_path / "s")
    image, series = read_dicom_folder(tmp_path / "s", resample_uneven=True)
    assert image.shape == SHAPE and series.resampled
    np.testing.assert_array_equal(image.array[[0, 1, 3]], values[[0, 1, 3]])
    np.testing.assert_array_equal(
        image.array[2], np.rint((values[1] + values[3]) / 2.0).astype(np.int16)
    )


def test_uneven_spacing_is_named(tmp_path, rng):
    def shift(datasets):
        pos = [float(v) for v in datasets[3].ImagePositionPatient]
        datasets[3].ImagePositionPatient = [pos[0], pos[1], pos[2] + 0.7]

    with pytest.raises(VoxsegError, match="uneven slice spacing"):
        read_dicom_folder(_positions_changed(tmp_path, rng, shift))


def test_dicom_without_pixel_data_and_mixed_sizes_are_named(tmp_path, rng):
    _, datasets = _datasets(rng)
    del datasets[1].PixelData
    paths = write_datasets(datasets, tmp_path / "s")
    with pytest.raises(VoxsegError, match="without pixel data") as err:
        read_dicom_folder(tmp_path / "s")
    assert paths[1].name in str(err.value)
    _, other = _datasets(rng)
    other[0].Rows = 32
    other[0].PixelData = other[0].PixelData[: 32 * 48 * 2]
    write_datasets(other, tmp_path / "m")
    with pytest.raises(VoxsegError, match="mixed series"):
        read_dicom_folder(tmp_path / "m")


def test_a_folder_of_two_series_is_listed_until_one_is_chosen(tmp_path, rng):
    """Two series in one folder (a localizer beside the scan): no silent pick of either;
    the error names both with modality, number, description and slice count."""
    values, scan = _datasets(rng, series_number=2, description="Abdomen 1.0")
    scout_values = rng.integers(-1000, 0, size=(2, 64, 48))
    scout = series_datasets(
        scout_values,
        spacing=(5.0, 1.0, 1.0),
        first_position=(0, 0, 0),
        series_number=1,
        description="Topogram",
        study_uid=scan[0].StudyInstanceUID,
    )
    write_datasets(scan + scout, tmp_path / "study")
    with pytest.raises(VoxsegError, match="holds 2 image series") as err:
        read_dicom_folder(tmp_path / "study")
    text = str(err.value)
    assert "--series-uid" in text
    assert f"CT #2 'Abdomen 1.0' (4 slices, {scan[0].SeriesInstanceUID})" in text
    assert f"CT #1 'Topogram' (2 slices, {scout[0].SeriesInstanceUID})" in text
    image, series = read_dicom_folder(tmp_path / "study", series=scan[0].SeriesInstanceUID)
    np.testing.assert_array_equal(image.array, values)
    assert series.uid == scan[0].SeriesInstanceUID
    for selector in ("uid:" + scout[0].SeriesInstanceUID, "desc:topo*", "number:1", "Topogram"):
        image, _ = read_dicom_folder(tmp_path / "study", series=selector)
        np.testing.assert_array_equal(image.array, scout_values)
    with pytest.raises(VoxsegError, match="no series matches 'desc:head'") as err:
        read_dicom_folder(tmp_path / "study", series="desc:head")
    assert "Topogram" in str(err.value) and "Abdomen 1.0" in str(err.value)
    with pytest.raises(VoxsegError, match="2 series match 'modality:CT'"):
        read_dicom_folder(tmp_path / "study", series="modality:CT")
    with pytest.raises(VoxsegError, match="unknown key 'colour'"):
        read_dicom_folder(tmp_path / "study", series="colour:red")


@pytest.mark.parametrize(
    "variant", ["int16", "implicit-vr", "12-bit-signed", "12-bit-unsigned", "trailing-element"]
)
def test_pixels_read_from_the_file_end_equal_pydicom(tmp_path, rng, monkeypatch, variant):
    """Native slices are read from the end of each file without a second parse; what comes
    back equals pydicom's ``pixel_array`` × slope + intercept, for every encoding variant
    (a trailing element after PixelData falls back to pydicom)."""
    import voxseg.io.dicom as dicom

    values, datasets = _datasets(rng, slope=0.5, intercept=-1024)
    for ds in datasets:
        if variant == "implicit-vr":
            ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        elif variant.startswith("12-bit"):
            stored = rng.integers(-2048, 2048, size=SHAPE[1:]).astype(np.int16)
            ds.BitsStored, ds.HighBit = 12, 11
            if variant == "12-bit-unsigned":
                stored = (stored + 2048).astype(np.uint16)
                ds.PixelRepresentation = 0
            ds.PixelData = stored.tobytes()
        elif variant == "trailing-element":
            ds.add_new(0xFFFCFFFC, "OB", b"\0\0")
    paths = write_datasets(datasets, tmp_path / "s")
    expected = np.stack(
        [
            pydicom.dcmread(p).pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            for p, ds in zip(paths, datasets, strict=True)
        ]
    )
    expected = expected[np.argsort([float(ds.ImagePositionPatient[2]) for ds in datasets])]
    if variant != "trailing-element":  # read without pydicom touching the pixels
        monkeypatch.setattr(dicom, "_decoded_slices", None)
    image, _ = read_dicom_folder(tmp_path / "s")
    np.testing.assert_array_equal(image.array, expected)
    if variant == "int16":
        np.testing.assert_array_equal(image.array, values)
