"""Overlay PNGs: the reference is outlined in its label colour, the prediction filled."""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

from voxseg.data.colors import label_color
from voxseg.inference.overlay import save_overlay
from voxseg.io import Image


def _has_color(path, hex_color: str, tol: int = 40) -> bool:
    rgb = np.asarray(PILImage.open(path).convert("RGB")).astype(int)
    want = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return bool(np.all(np.abs(rgb - want) < tol, axis=-1).sum() > 10)


def test_reference_outline_and_prediction_fill_in_label_colours(tmp_path, rng):
    image = Image(rng.normal(0, 1, (12, 40, 40)).astype(np.float32), (2.0, 1.0, 1.0))
    ref = np.zeros((12, 40, 40), np.uint8)
    ref[3:9, 10:30, 10:30] = 2
    pred = np.zeros_like(ref)
    pred[3:9, 5:15, 25:35] = 1
    without = save_overlay(tmp_path / "a.png", image, image.with_array(pred))
    with_ref = save_overlay(
        tmp_path / "case_007.png",
        image,
        image.with_array(pred),
        reference=image.with_array(ref),
        labels={"liver": 1, "kidney": 2},
    )
    assert not _has_color(without, label_color(2))  # label 2 is only in the reference
    assert _has_color(with_ref, label_color(2), tol=20)  # its outline, drawn opaque
    assert _has_color(without, "#f0a0b0", tol=45)  # label 1 fill (red over grey at 45 %)
