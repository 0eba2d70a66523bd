"""A folder of 2D images and a folder of masks → raw dataset.

Images (PNG, BMP, TIFF, JPEG) and masks (PNG, BMP, TIFF; never JPEG, its compression
changes values) are paired by file stem. Mask values such as 0/255 or 0/128/255 map to
consecutive labels 0..K (the mapping is saved in ``dataset.json`` under
``voxseg_label_mapping``). RGB images give 3 channels.

Two output formats, both read by nnU-Net v2:

* ``nii.gz`` (default): pseudo-3D NIfTI ``[1, y, x]`` with z spacing 999, one file per
  channel (``_0000``, ``_0001``, ``_0002`` for R, G, B) — nnU-Net's documented 2D recipe.
* ``png``: one PNG per case (an RGB PNG holds channels R, G, B in ``_0000``, as nnU-Net's
  ``Dataset120_RoadSegmentation``) and PNG masks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from voxseg.data.check import unique_values
from voxseg.data.dataset import write_dataset_json
from voxseg.data.importers._common import finish_output, prepare_output, write_channels
from voxseg.errors import VoxsegError
from voxseg.io import Image, read_image, write_image
from voxseg.io.formats import file_ending

IMAGE_ENDINGS = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
MASK_ENDINGS = (".png", ".bmp", ".tif", ".tiff")
FORMATS = {"nii.gz": ".nii.gz", "png": ".png"}


def import_folder2d(
    images: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    file_format: str = "nii.gz",
    test_fraction: float = 0.0,
    seed: int = 0,
    label_names: list[str] | None = None,
    channel_names: list[str] | None = None,
    overwrite: bool = False,
) -> tuple[Path, dict[int, int]]:
    """Convert paired 2D images and masks; return ``(out, {mask value: label})``."""
    if file_format not in FORMATS:
        raise VoxsegError(f"--format {file_format!r}: use one of {', '.join(FORMATS)}")
    if not 0.0 <= test_fraction < 1.0:
        raise VoxsegError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    ending = FORMATS[file_format]
    image_files = _by_stem(Path(images), IMAGE_ENDINGS, "image")
    mask_files = _by_stem(Path(masks), MASK_ENDINGS, "mask")
    no_image = sorted(set(mask_files) - set(image_files))
    if no_image:
        raise VoxsegError(f"{masks}: masks without an image: {', '.join(no_image)}")
    no_mask = sorted(set(image_files) - set(mask_files))
    if no_mask:
        raise VoxsegError(f"{images}: images without a mask: {', '.join(no_mask)}")
    cases = sorted(image_files)
    if not cases:
        raise VoxsegError(f"{images}: no images ({', '.join(IMAGE_ENDINGS)})")

    values: set[int] = set()
    for case in cases:
        values.update(unique_values(_read_mask(mask_files[case]).array))
    mapping = {v: i for i, v in enumerate(sorted(values | {0}))}
    names = _label_names(mapping, label_names)

    rng = np.random.default_rng(seed)
    n_test = int(round(test_fraction * len(cases)))
    if n_test >= len(cases):
        raise VoxsegError(f"--test-fraction {test_fraction} leaves no training case")
    test = {cases[i] for i in rng.permutation(len(cases))[:n_test]}

    out = prepare_output(out, overwrite)
    channels = set()
    for case in cases:
        split = "Ts" if case in test else "Tr"
        image = read_image(image_files[case])
        if not image.is_2d:
            raise VoxsegError(f"{image_files[case]}: not a 2D image (shape {image.shape})")
        mask = _read_mask(mask_files[case])
        if mask.shape != image.shape:
            raise VoxsegError(
                f"{mask_files[case]}: size {mask.shape[1:]} differs from its image "
                f"{image.shape[1:]} ({image_files[case].name})"
            )
        label = image.channel(0).with_array(_apply(mask.array, mapping))
        channels.add(image.num_channels)
        if ending == ".png":
            write_image(image, out / f"images{split}" / f"{case}_0000{ending}")
        else:
            write_channels(image, out / f"images{split}", case, ending)
        write_image(label, out / f"labels{split}" / f"{case}{ending}")
    if len(channels) != 1:
        raise VoxsegError(f"{images}: images mix grayscale and colour; convert them to one kind")
    num_channels = channels.pop()
    chans = channel_names or (["R", "G", "B"] if num_channels == 3 else ["gray"] * num_channels)
    if len(chans) != num_channels:
        raise VoxsegError(f"{len(chans)} channel name(s) given for {num_channels} channel(s)")
    write_dataset_json(
        out,
        dict(enumerate(chans)),
        names,
        len(cases) - n_test,
        ending,
        voxseg_label_mapping={str(k): v for k, v in mapping.items()},
    )
    finish_output(out)
    return out, mapping


def _by_stem(folder: Path, endings: tuple[str, ...], kind: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise VoxsegError(f"{folder}: folder not found")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        ending = file_ending(p)
        if ending not in endings:
            if kind == "mask" and ending in (".jpg", ".jpeg"):
                raise VoxsegError(f"{p}: JPEG masks lose label values; save masks as PNG")
            continue
        stem = p.name[: -len(ending)]
        if stem in out:
            raise VoxsegError(f"{folder}: two {kind}s named {stem} ({out[stem].name}, {p.name})")
        out[stem] = p
    return out


def _read_mask(path: Path) -> Image:
    mask = read_image(path, is_label=True)
    arr = mask.array
    if np.issubdtype(arr.dtype, np.floating) and np.any(arr != np.round(arr)):
        raise VoxsegError(f"{path}: mask values are not whole numbers")
    return mask


def _apply(arr: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    keys = np.array(sorted(mapping), dtype=np.int64)
    idx = np.searchsorted(keys, arr.astype(np.int64))
    dtype = np.uint8 if len(mapping) <= 256 else np.uint16
    return np.array([mapping[k] for k in keys.tolist()], dtype=dtype)[idx]


def _label_names(mapping: dict[int, int], names: list[str] | None) -> dict[str, int]:
    fg = [v for v in mapping if v != 0]
    if names is None:
        names = ["foreground"] if len(fg) == 1 else [f"class_{v}" for v in fg]
    if len(names) != len(fg):
        raise VoxsegError(
            f"{len(names)} label name(s) given for {len(fg)} mask value(s) {fg} besides 0"
        )
    return {"background": 0, **{n: mapping[v] for n, v in zip(names, fg, strict=True)}}
