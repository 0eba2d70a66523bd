"""Generate the bad-input corpus: one small raw dataset per kind of bad input.

Every kind starts from the same valid 3D dataset (three cases ``case_000`` … ``case_002``,
8×12×12 CT-like images with a two-value label map) and breaks ``case_001`` — or
``dataset.json``, or the folder — in one way. ``KINDS`` maps each kind to its maker and to
what it is about (the file a message must name, whether ``predict``/``evaluate`` apply).

    python tests/data/bad_inputs/make_corpus.py OUT_DIR     # writes OUT_DIR/<kind>/
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxseg.io import Image, write_image

SHAPE = (8, 12, 12)
SPACING = (2.0, 1.0, 1.0)
BAD = "case_001"
IMAGE = f"imagesTr/{BAD}_0000.nii.gz"
LABEL = f"labelsTr/{BAD}.nii.gz"


def _image(seed: int, shape=SHAPE, spacing=SPACING, direction=None) -> Image:
    rng = np.random.default_rng(seed)
    arr = (rng.normal(40, 20, size=shape)).astype(np.int16)
    return Image(arr, spacing=spacing, **_geometry(direction))


def _label(seed: int, shape=SHAPE, spacing=SPACING, dtype=np.uint8, direction=None) -> Image:
    arr = np.zeros(shape, dtype=dtype)
    arr[2:6, 3:9, 3:9] = 1
    return Image(arr, spacing=spacing, **_geometry(direction))


def _geometry(direction) -> dict:
    return {} if direction is None else {"direction": direction}


def base_dataset(root: Path) -> Path:
    """The valid dataset every kind starts from."""
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(3):
        write_image(_image(i), root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
        write_image(_label(i), root / "labelsTr" / f"case_{i:03d}.nii.gz")
    info = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "organ": 1},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(info, indent=2))
    return root


def _replace(root: Path, rel: str, data: bytes) -> None:
    (root / rel).write_bytes(data)


def _truncate(root: Path, rel: str, keep: float = 0.5) -> None:
    data = (root / rel).read_bytes()
    _replace(root, rel, data[: int(len(data) * keep)])


def _convert(root: Path, ending: str, keep: float | None) -> None:
    """Switch the dataset to ``ending`` (every file rewritten) and truncate case_001's image."""
    from voxseg.io import read_image

    for folder in ("imagesTr", "labelsTr"):
        for f in sorted((root / folder).iterdir()):
            stem = f.name[: -len(".nii.gz")]
            write_image(read_image(f), root / folder / f"{stem}{ending}", compress=False)
            f.unlink()
    info = json.loads((root / "dataset.json").read_text())
    info["file_ending"] = ending
    (root / "dataset.json").write_text(json.dumps(info))
    rel = f"imagesTr/{BAD}_0000{ending}"
    if keep is None:
        _replace(root, rel, b"")
    else:
        _truncate(root, rel, keep)


def _to_png(root: Path, keep: float | None) -> None:
    """A 2D dataset of PNGs; case_001's image truncated (or emptied)."""
    for folder in ("imagesTr", "labelsTr"):
        for f in sorted((root / folder).iterdir()):
            f.unlink()
    for i in range(3):
        rng = np.random.default_rng(i)
        img = rng.integers(0, 255, size=(1, 32, 32)).astype(np.uint8)
        lab = np.zeros((1, 32, 32), np.uint8)
        lab[0, 8:20, 8:20] = 1
        write_image(Image(img), root / "imagesTr" / f"case_{i:03d}_0000.png")
        write_image(Image(lab), root / "labelsTr" / f"case_{i:03d}.png")
    info = json.loads((root / "dataset.json").read_text())
    info["file_ending"] = ".png"
    (root / "dataset.json").write_text(json.dumps(info))
    rel = f"imagesTr/{BAD}_0000.png"
    if keep is None:
        _replace(root, rel, b"")
    else:
        _truncate(root, rel, keep)


def _nifti_header_dims(root: Path, rel: str, dims: tuple[int, ...]) -> None:
    raw = bytearray(gzip.decompress((root / rel).read_bytes()))
    struct.pack_into(f"<{len(dims) + 1}h", raw, 40, len(dims), *dims)
    _replace(root, rel, gzip.compress(bytes(raw)))


def _dataset_json(root: Path, change: Callable[[dict], dict | str]) -> None:
    info = json.loads((root / "dataset.json").read_text())
    new = change(info)
    text = new if isinstance(new, str) else json.dumps(new)
    (root / "dataset.json").write_text(text)


def _write(root: Path, rel: str, image: Image) -> None:
    write_image(image, root / rel)


def _bad_gzip(root: Path) -> None:
    data = bytearray((root / IMAGE).read_bytes())
    for i in range(20, min(len(data) - 8, 120)):
        data[i] ^= 0x5A
    _replace(root, IMAGE, bytes(data))


def _unicode(root: Path) -> Path:
    target = root.parent / f"{root.name} — Dätensätz ✓"
    shutil.move(root, target)
    return target


def _symlinks(root: Path) -> None:
    store = root.parent / f"{root.name}_store"
    store.mkdir()
    for rel in (IMAGE, LABEL):
        dest = store / Path(rel).name
        shutil.move(root / rel, dest)
        os.symlink(dest, root / rel)


def _mismatched_channels(root: Path) -> None:
    _write(root, IMAGE, Image(np.stack([_image(1).array, _image(9).array]), SPACING))


def _two_d(root: Path) -> None:
    write_image(Image(_image(1).array[:1], spacing=(1.0, 1.0, 1.0)), root / IMAGE)


def _float(values) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        lab = _label(1, dtype=np.float32)
        lab.array[lab.array == 1] = values
        _write(root, LABEL, lab)

    return make


def _direction(matrix) -> Callable[[Path], None]:
    """Image and label whose NIfTI sform has the rotation part ``matrix`` (patched into the
    header: ITK and nibabel refuse to write a singular direction)."""

    def make(root: Path) -> None:
        rows = np.asarray(matrix, float) * np.asarray(SPACING[::-1])
        for rel in (IMAGE, LABEL):
            raw = bytearray(gzip.decompress((root / rel).read_bytes()))
            struct.pack_into("<2h", raw, 252, 0, 1)  # qform_code 0, sform_code 1
            for i in range(3):  # srow_x, srow_y, srow_z
                struct.pack_into("<4f", raw, 280 + 16 * i, *rows[i], 0.0)
            _replace(root, rel, gzip.compress(bytes(raw)))

    return make


def _values(values: dict[str, float]) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        img = _image(1)
        arr = img.array.astype(np.float32)
        arr[0, 0, 0] = values["first"]
        _write(root, IMAGE, img.with_array(arr))

    return make


@dataclass(frozen=True)
class Kind:
    """A kind of bad input: how to make it, the file its message must name, whether it is
    an image ``predict`` can be given (``predict``) or a label map ``evaluate`` can be given
    (``evaluate``), and whether voxseg accepts it (a valid corner case, not an error)."""

    make: Callable[[Path], Path | None]
    names: str
    predict: bool = False
    evaluate: bool = False
    accepted: bool = False


def _shifted(rel: str, **geometry) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        maker = _label if rel == LABEL else _image
        _write(root, rel, maker(1, **geometry))

    return make


KINDS: dict[str, Kind] = {
    # damaged files
    "truncated_nifti": Kind(lambda r: _truncate(r, IMAGE), IMAGE, predict=True),
    "zero_byte_nifti": Kind(lambda r: _replace(r, IMAGE, b""), IMAGE, predict=True),
    "truncated_label": Kind(lambda r: _truncate(r, LABEL), LABEL, evaluate=True),
    "truncated_nrrd": Kind(lambda r: _convert(r, ".nrrd", 0.6), f"{BAD}_0000.nrrd"),
    "zero_byte_nrrd": Kind(lambda r: _convert(r, ".nrrd", None), f"{BAD}_0000.nrrd"),
    "truncated_mha": Kind(lambda r: _convert(r, ".mha", 0.6), f"{BAD}_0000.mha"),
    "zero_byte_mha": Kind(lambda r: _convert(r, ".mha", None), f"{BAD}_0000.mha"),
    "truncated_png": Kind(lambda r: _to_png(r, 0.5), f"{BAD}_0000.png"),
    "zero_byte_png": Kind(lambda r: _to_png(r, None), f"{BAD}_0000.png"),
    "wrong_magic": Kind(lambda r: _replace(r, IMAGE, b"\x89PNG\r\n\x1a\n" + b"x" * 400), IMAGE),
    "text_not_image": Kind(lambda r: _replace(r, IMAGE, b"patient notes\n" * 30), IMAGE),
    "gzip_not_gzip": Kind(
        lambda r: _replace(r, IMAGE, b"\x1f\x8b\x08\x00" + os.urandom(300)), IMAGE, predict=True
    ),
    "corrupt_deflate_stream": Kind(_bad_gzip, IMAGE, predict=True),
    "huge_claimed_dimensions": Kind(
        lambda r: _nifti_header_dims(r, IMAGE, (2000, 2000, 2000)), IMAGE, predict=True
    ),
    # voxel values
    "nan_intensities": Kind(_values({"first": float("nan")}), IMAGE),
    "inf_intensities": Kind(_values({"first": float("inf")}), IMAGE),
    "float_labels": Kind(_float(0.5), LABEL, evaluate=True),
    "label_not_in_dataset_json": Kind(_float(7), LABEL),
    "negative_labels": Kind(_float(-1), LABEL),
    # shapes and geometry
    "4d_where_3d": Kind(_mismatched_channels, IMAGE, predict=True),
    "2d_file_in_3d_dataset": Kind(_two_d, IMAGE),
    "label_shape_off_by_one": Kind(_shifted(LABEL, shape=(8, 12, 13)), LABEL, evaluate=True),
    "label_spacing_off_1e-3": Kind(_shifted(LABEL, spacing=(2.001, 1.0, 1.0)), LABEL),
    "label_direction_off_1e-3": Kind(
        _shifted(LABEL, direction=np.array([[1, 0, 0], [0, 1, 1e-3], [0, -1e-3, 1]])), LABEL
    ),
    "zero_direction": Kind(_direction([[1, 0, 0], [0, 0, 0], [0, 0, 1]]), IMAGE, predict=True),
    "non_orthogonal_direction": Kind(
        _direction([[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]), IMAGE, predict=True
    ),
    # pairing
    "image_without_label": Kind(lambda r: (r / LABEL).unlink(), LABEL),
    "label_without_image": Kind(lambda r: (r / IMAGE).unlink(), LABEL),
    # dataset.json
    "dataset_json_missing_keys": Kind(
        lambda r: _dataset_json(r, lambda d: {k: v for k, v in d.items() if k != "labels"}),
        "dataset.json",
    ),
    "dataset_json_wrong_types": Kind(
        lambda r: _dataset_json(r, lambda d: {**d, "numTraining": "three", "labels": [0, 1]}),
        "dataset.json",
    ),
    "dataset_json_duplicate_label_values": Kind(
        lambda r: _dataset_json(r, lambda d: {**d, "labels": {"background": 0, "a": 1, "b": 1}}),
        "dataset.json",
    ),
    "dataset_json_not_json": Kind(
        lambda r: _dataset_json(r, lambda d: json.dumps(d)[:-5]), "dataset.json"
    ),
    # valid corner cases: accepted
    "unicode_and_spaces_in_paths": Kind(_unicode, "", accepted=True),
    "symlinked_cases": Kind(_symlinks, "", accepted=True),
}


def make(kind: str, out: Path) -> Path:
    """Write the dataset of ``kind`` under ``out/<kind>`` and return its folder."""
    root = base_dataset(out / kind)
    moved = KINDS[kind].make(root)
    return moved if isinstance(moved, Path) else root


def main(argv: list[str]) -> None:
    out = Path(argv[1] if len(argv) > 1 else Path(__file__).parent / "corpus")
    for kind in KINDS:
        print(make(kind, out))


if __name__ == "__main__":
    main(sys.argv)
