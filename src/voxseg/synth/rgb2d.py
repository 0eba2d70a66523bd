"""``rgb2d``: 2D RGB images of thin curvilinear structures (roads, vessels) over texture.

Written in nnU-Net v2's 2D natural-image convention (``NaturalImage2DIO``): one RGB PNG
per case, ``imagesTr/{case}_0000.png``, with ``channel_names`` ``{"0": "R", "1": "G",
"2": "B"}``, ``file_ending`` ``.png`` and label PNGs of values 0/1 (as nnU-Net's
``Dataset120_RoadSegmentation``). With ``raw_folder`` it writes a plain folder instead,
``images/{case}.png`` + ``masks/{case}.png`` (mask values 0/255; held-out cases under
``test/``), the input of the 2D-folder importer.

Curves are smooth random walks of 1.5–4.5 px width, some branching, anti-aliased from their
exact distance; unlabelled rectangles in road-like colours and a smooth illumination field
keep colour thresholding imperfect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy import ndimage

from voxseg.config import write_json
from voxseg.errors import VoxsegError
from voxseg.io import PSEUDO_3D_SPACING, Image, write_image
from voxseg.synth._common import SYNTH, Phantom, SynthCase, smooth_field, uniform
from voxseg.synth.vessels import Branch, tube_distance


@SYNTH.register("rgb2d")
@dataclass(frozen=True)
class Rgb2d(Phantom):
    """2D RGB curvilinear-structure phantom: label ``line`` 1."""

    num_train: int = 40
    num_test: int = 10
    raw_folder: bool = False

    kind: ClassVar[str] = "rgb2d"
    default_shape: ClassVar[tuple[int, int, int]] = (1, 256, 256)
    min_shape: ClassVar[tuple[int, int, int]] = (1, 32, 32)
    channel_names: ClassVar[dict[str, str]] = {"0": "R", "1": "G", "2": "B"}
    file_ending: ClassVar[str] = ".png"

    def grid_shape(self) -> tuple[int, int, int]:
        shape = super().grid_shape()
        if self.shape is None:
            return (1, *shape[1:])
        if shape[0] != 1:
            raise VoxsegError(f"synth rgb2d: images are 2D, so shape must be 1 Y X; got {shape}")
        return shape

    def labels(self) -> dict[str, int]:
        return {"background": 0, "line": 1}

    def make_case(self, rng: np.random.Generator, index: int) -> SynthCase:
        _, h, w = self.grid_shape()
        curves = _curves(rng, h, w)
        phi = tube_distance(curves, (1, h, w), (1.0, 1.0, 1.0))[0]
        frac = np.clip(0.5 + phi, 0.0, 1.0)[..., None]

        palette = np.array([[0.30, 0.42, 0.22], [0.48, 0.40, 0.30], [0.36, 0.36, 0.30]])
        mix = np.stack([smooth_field(rng, (h, w), 40.0) for _ in range(2)], axis=-1)
        weights = np.exp(np.concatenate([mix, np.zeros((h, w, 1), np.float32)], -1))
        weights /= weights.sum(-1, keepdims=True)
        rgb = weights @ palette.astype(np.float32)
        rgb += 0.06 * np.stack([smooth_field(rng, (h, w), 3.0) for _ in range(3)], axis=-1)
        _rectangles(rng, rgb)
        colour = uniform(rng, (0.45, 0.65)) + rng.normal(0, 0.03, 3)
        line = colour + 0.04 * smooth_field(rng, (h, w), 8.0)[..., None]
        rgb = rgb * (1 - frac) + line * frac
        rgb *= (1.0 + 0.15 * smooth_field(rng, (h, w), 64.0))[..., None]
        rgb = ndimage.gaussian_filter(rgb, (0.7, 0.7, 0))
        rgb += rng.normal(0, uniform(rng, (0.02, 0.04)), rgb.shape)
        pixels = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)

        image = Image(np.moveaxis(pixels, -1, 0)[:, None], (PSEUDO_3D_SPACING, 1.0, 1.0))
        label = image.with_array((phi > 0).astype(np.uint8)[None])
        return SynthCase(image, label)

    def write_case(self, root: Path, split: str, case_id: str, case: SynthCase) -> None:
        if self.raw_folder:
            base = root if split == "Tr" else root / "test"
            mask = case.label.with_array(case.label.array * np.uint8(255))
            write_image(case.image, base / "images" / f"{case_id}.png")
            write_image(mask, base / "masks" / f"{case_id}.png")
            return
        write_image(case.image, root / f"images{split}" / f"{case_id}_0000.png")
        write_image(case.label, root / f"labels{split}" / f"{case_id}.png")

    def write_metadata(self, root: Path) -> None:
        if self.raw_folder:
            write_json(root / "synth.json", {"kind": self.kind, "options": self.options()})
            return
        super().write_metadata(root)


def _curves(rng: np.random.Generator, h: int, w: int) -> list[Branch]:
    """3–6 smooth random walks entering from the border, some with a side branch."""
    size = float(max(h, w))
    curves: list[Branch] = []
    for _ in range(int(rng.integers(3, 7))):
        side = int(rng.integers(4))
        t = rng.uniform(0.1, 0.9)
        start = [
            (0.0, t * (w - 1)),
            (h - 1.0, t * (w - 1)),
            (t * (h - 1), 0.0),
            (t * (h - 1), w - 1.0),
        ][side]
        inward = [0.0, np.pi, np.pi / 2, -np.pi / 2][side] + rng.uniform(-0.7, 0.7)
        radius = uniform(rng, (0.75, 2.25))
        pts = _walk(rng, np.array(start), inward, uniform(rng, (0.6, 1.5)) * size, size)
        curves.append(_branch(len(curves), pts, radius))
        if rng.uniform() < 0.5 and len(pts) > 20:
            at = pts[int(rng.integers(len(pts) // 4, 3 * len(pts) // 4))]
            heading = rng.uniform(0, 2 * np.pi)
            side_pts = _walk(rng, at, heading, uniform(rng, (0.2, 0.5)) * size, size)
            curves.append(_branch(len(curves), side_pts, radius * rng.uniform(0.6, 1.0)))
    return curves


def _walk(
    rng: np.random.Generator, start: np.ndarray, heading: float, length: float, size: float
) -> np.ndarray:
    """A smooth random walk in ``(y, x)`` pixels with a step of one pixel."""
    pts = [np.asarray(start, dtype=float)]
    turn = 0.0
    for _ in range(int(length)):
        turn = 0.95 * turn + rng.normal(0, 0.6 / size)
        heading += turn
        pts.append(pts[-1] + np.array([np.cos(heading), np.sin(heading)]))
    return np.array(pts)


def _branch(i: int, pts_yx: np.ndarray, radius: float) -> Branch:
    points = np.column_stack([np.zeros(len(pts_yx)), pts_yx])
    return Branch(i, -1, 0, points, np.full(len(pts_yx), radius))


def _rectangles(rng: np.random.Generator, rgb: np.ndarray) -> None:
    """Unlabelled rotated rectangles (buildings) in colours close to the lines'."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(3, 9))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        a, b = rng.uniform(0.02, 0.08) * h, rng.uniform(0.02, 0.08) * w
        angle = rng.uniform(0, np.pi)
        u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
        v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
        inside = (np.abs(u) < a) & (np.abs(v) < b)
        rgb[inside] = uniform(rng, (0.4, 0.75)) + rng.normal(0, 0.04, 3)
