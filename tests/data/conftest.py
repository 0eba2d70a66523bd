"""Tiny generated raw datasets for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxseg.data import write_dataset_json
from voxseg.io import Image, write_image

SPACING = (3.0, 0.8, 0.8)
ORIGIN = (10.0, -5.0, 2.0)


def make_raw_dataset(
    root: Path,
    num_cases: int = 3,
    num_channels: int = 2,
    shape: tuple[int, int, int] = (4, 6, 5),
    num_test: int = 1,
    seed: int = 0,
) -> Path:
    """A valid raw dataset: labels 0..2, random images, every case with some foreground."""
    rng = np.random.default_rng(seed)
    for split, n in (("Tr", num_cases), ("Ts", num_test)):
        for i in range(n):
            case = f"case_{split.lower()}{i:03d}"
            for c in range(num_channels):
                arr = rng.normal(size=shape).astype(np.float32)
                write_image(
                    Image(arr, SPACING, ORIGIN), root / f"images{split}" / f"{case}_{c:04d}.nii.gz"
                )
            label = rng.integers(0, 3, size=shape).astype(np.uint8)
            label.flat[:3] = (0, 1, 2)
            if split == "Tr":
                write_image(
                    Image(label, SPACING, ORIGIN), root / f"labels{split}" / f"{case}.nii.gz"
                )
    write_dataset_json(
        root,
        {i: f"mod{i}" for i in range(num_channels)},
        {"background": 0, "liver": 1, "tumor": 2},
        num_cases,
    )
    return root


@pytest.fixture
def make_dataset():
    """The factory :func:`make_raw_dataset`, for tests that need more than one dataset."""
    return make_raw_dataset


@pytest.fixture
def raw_dataset(tmp_path: Path) -> Path:
    return make_raw_dataset(tmp_path / "Dataset001_X")
