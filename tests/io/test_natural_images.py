"""2D natural images (PNG, BMP, TIFF, JPEG): channels, pseudo-3D axes, label safety."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from voxseg.errors import VoxsegError
from voxseg.io import PSEUDO_3D_SPACING, Image, read_image, write_image

LOSSLESS = [".png", ".bmp", ".tif"]


def _rgb(rng) -> Image:
    return Image(rng.integers(0, 256, size=(3, 1, 9, 11), dtype=np.uint8))


def _gray(rng, dtype=np.uint8) -> Image:
    return Image(rng.integers(0, np.iinfo(dtype).max, size=(1, 9, 11), dtype=dtype))


@pytest.mark.parametrize("ending", LOSSLESS)
def test_rgb_round_trip_is_three_channels(tmp_path, rng, ending):
    image = _rgb(rng)
    path = write_image(image, tmp_path / f"photo{ending}")
    # Pillow (independent reader) sees an ordinary 2D RGB picture.
    np.testing.assert_array_equal(
        np.asarray(PILImage.open(path)), np.moveaxis(image.array[:, 0], 0, -1)
    )
    back = read_image(path)
    assert back.array.shape == (3, 1, 9, 11) and back.array.dtype == np.uint8
    assert back.spacing[0] == PSEUDO_3D_SPACING
    np.testing.assert_array_equal(back.array, image.array)


@pytest.mark.parametrize(
    ("ending", "dtype"),
    [(".png", np.uint8), (".png", np.uint16), (".bmp", np.uint8), (".tif", np.uint8),
     (".tif", np.uint16), (".tif", np.float32)],
)  # fmt: skip
def test_grayscale_round_trip_is_pseudo_3d(tmp_path, rng, ending, dtype):
    image = _gray(rng, np.uint16 if dtype == np.float32 else dtype)
    image = image.with_array(image.array.astype(dtype))
    path = write_image(image, tmp_path / f"gray{ending}")
    assert np.asarray(PILImage.open(path)).shape == (9, 11)  # the z axis is dropped on disk
    back = read_image(path)
    assert back.array.shape == (1, 9, 11) and back.array.dtype == dtype
    assert back.spacing[0] == PSEUDO_3D_SPACING
    np.testing.assert_array_equal(back.array, image.array)


def test_rgba_and_gray_alpha_drop_the_alpha_channel(tmp_path, rng):
    rgba = rng.integers(0, 256, size=(9, 11, 4), dtype=np.uint8)
    PILImage.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    back = read_image(tmp_path / "rgba.png")
    assert back.array.shape == (3, 1, 9, 11)
    np.testing.assert_array_equal(back.array[:, 0], np.moveaxis(rgba[..., :3], -1, 0))
    PILImage.fromarray(rgba[..., :2].copy(), "LA").save(tmp_path / "la.png")
    gray = read_image(tmp_path / "la.png")
    assert gray.array.shape == (1, 9, 11)
    np.testing.assert_array_equal(gray.array[0], rgba[..., 0])


def test_tiff_stack_round_trips_as_volume(tmp_path, rng):
    image = Image(rng.normal(size=(4, 9, 11)).astype(np.float32), spacing=(2.0, 0.5, 0.25))
    back = read_image(write_image(image, tmp_path / "stack.tif"))
    np.testing.assert_array_equal(back.array, image.array)


def test_jpeg_is_refused_for_labels_but_read_for_images(tmp_path, rng):
    smooth = np.add.outer(np.arange(16), np.arange(20)).astype(np.uint8)[None] * 5
    path = write_image(Image(smooth), tmp_path / "photo.jpg")
    back = read_image(path)
    assert back.array.shape == (1, 16, 20)
    assert np.abs(back.array.astype(int) - smooth).mean() < 3  # lossy, but close
    with pytest.raises(VoxsegError, match="photo.jpg: JPEG cannot hold a label map"):
        read_image(path, is_label=True)
    PILImage.fromarray(smooth[0]).save(tmp_path / "mask.jpeg")
    with pytest.raises(VoxsegError, match="lossy"):
        read_image(tmp_path / "mask.jpeg", is_label=True)


@pytest.mark.parametrize(("high", "dtype"), [(5, np.uint8), (300, np.uint16)])
def test_labels_are_written_to_png_as_uint8_or_uint16(tmp_path, high, dtype):
    labels = np.zeros((1, 6, 8), dtype=np.int64)
    labels[0, 1:4, 2:5] = high
    labels[0, 5, 7] = 1
    path = write_image(Image(labels), tmp_path / "mask.png")
    assert np.asarray(PILImage.open(path)).dtype == dtype
    back = read_image(path, is_label=True)
    np.testing.assert_array_equal(back.array, labels)


def test_palette_png_label_keeps_its_indices(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    pil = PILImage.fromarray(indices, "P")
    pil.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pil.save(tmp_path / "voc.png")
    np.testing.assert_array_equal(read_image(tmp_path / "voc.png", is_label=True).array[0], indices)
    assert read_image(tmp_path / "voc.png").array.shape == (3, 1, 2, 3)  # as an image: colours


def test_colour_label_with_different_channels_is_refused(tmp_path, rng):
    path = write_image(_rgb(rng), tmp_path / "mask.png")
    with pytest.raises(VoxsegError, match="mask.png: a label image must be grayscale"):
        read_image(path, is_label=True)


def test_lossy_conversions_and_volumes_are_refused(tmp_path, rng):
    with pytest.raises(VoxsegError, match="0..255"):
        write_image(_gray(rng, np.uint16), tmp_path / "deep.bmp")
    with pytest.raises(VoxsegError, match="whole numbers"):
        write_image(Image(rng.normal(size=(1, 4, 4))), tmp_path / "float.png")
    with pytest.raises(VoxsegError, match="holds 2D images"):
        write_image(Image(np.zeros((3, 4, 4), np.uint8)), tmp_path / "volume.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("ending", [".png", ".bmp", ".jpg"])
def test_truncated_natural_image_raises_voxseg_error(tmp_path, rng, ending):
    path = write_image(_rgb(rng), tmp_path / f"photo{ending}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VoxsegError, match=f"photo{ending}"):
        read_image(path)
