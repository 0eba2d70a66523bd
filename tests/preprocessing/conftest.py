"""Small synthetic datasets (random ellipsoids) in nnU-Net raw format, fixed seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxseg.data.dataset import write_dataset_json
from voxseg.io import Image, write_image


def ellipsoid_case(
    rng: np.random.Generator, shape: tuple[int, int, int], n_classes: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """A body (nonzero region with a zero border) holding ``n_classes`` ellipsoids."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    centre = np.asarray(shape) / 2
    body = (((grid - centre) / (np.asarray(shape) * 0.42)) ** 2).sum(-1) <= 1
    image = np.where(body, rng.normal(100, 10, shape), 0).astype(np.float32)
    seg = np.zeros(shape, np.uint8)
    for k in range(1, n_classes + 1):
        c = centre + rng.uniform(-0.15, 0.15, 3) * np.asarray(shape)
        r = np.maximum(np.asarray(shape) * rng.uniform(0.08, 0.16, 3), 1.0)
        inside = (((grid - c) / r) ** 2).sum(-1) <= 1
        seg[inside & body] = k
        image[inside & body] += 50 * k
    return image, seg


def make_dataset(
    root: Path,
    n_cases: int = 3,
    shape: tuple[int, int, int] = (12, 24, 20),
    spacing: tuple[float, float, float] = (2.0, 1.0, 1.0),
    channel_names: dict[int, str] | None = None,
    direction: np.ndarray | None = None,
    seed: int = 0,
) -> Path:
    """Write a raw dataset with ``n_cases`` ellipsoid cases."""
    rng = np.random.default_rng(seed)
    channel_names = channel_names or {0: "CT"}
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n_cases):
        image, seg = ellipsoid_case(rng, shape)
        geo = {"spacing": spacing, "origin": (1.0, -2.0, 3.0)}
        if direction is not None:
            geo["direction"] = direction
        for c in range(len(channel_names)):
            write_image(
                Image(image * (c + 1), **geo), root / "imagesTr" / f"c{i:02d}_{c:04d}.nii.gz"
            )
        write_image(Image(seg, **geo), root / "labelsTr" / f"c{i:02d}.nii.gz")
    write_dataset_json(root, channel_names, {"background": 0, "a": 1, "b": 2}, n_cases)
    return root


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "Dataset001_Test")


@pytest.fixture
def dataset_factory():
    """``make_dataset`` for tests that need other shapes, spacings or directions."""
    return make_dataset


@pytest.fixture
def ellipsoids():
    """``ellipsoid_case(rng, shape)`` → ``(image, seg)``."""
    return ellipsoid_case
