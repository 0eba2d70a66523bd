"""``spine``: CT-like vertebrae along an S-curved spine in a large field of view.

An anatomical chain of 17 vertebrae (T1–T12, L1–L5, growing in size downwards) follows a
smooth sagittal S-curve with a little lateral bend; each vertebra is a rounded cylindrical
body plus a posterior arch (ring around the canal, spinous and transverse processes) with
a dense cortical shell. The field of view shows a random window of 4–7 vertebrae inside a
body outline, so the spine fills a small part of the image (localise, then segment).
Unlabelled ribs and a contrast-filled aorta share the bone's Hounsfield range.

Labels: ``vertebra`` 1, or with ``multiclass`` one label per vertebra (``T1`` = 1 …
``L5`` = 17).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import ndimage

from voxseg.io import Image
from voxseg.synth._common import (
    SYNTH,
    Phantom,
    SynthCase,
    box_around,
    centred_geometry,
    correlated_noise,
    partial_volume,
    physical_coords,
    slabs,
    slice_spacing,
    smooth_field,
    uniform,
)

AIR, FAT, MUSCLE, DISC, AORTA, RIB, MARROW, SHELL = range(8)
NAMES = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]


@SYNTH.register("spine")
@dataclass(frozen=True)
class Spine(Phantom):
    """Spine phantom (channel ``CT``): binary vertebra label, or one label per vertebra."""

    num_train: int = 16
    num_test: int = 4
    inplane_spacing: tuple[float, float] = (1.6, 2.2)
    slice_spacing: tuple[float, float] = (2.0, 3.0)
    multiclass: bool = False

    kind: ClassVar[str] = "spine"
    default_shape: ClassVar[tuple[int, int, int]] = (56, 112, 112)
    min_shape: ClassVar[tuple[int, int, int]] = (16, 48, 48)
    channel_names: ClassVar[dict[str, str]] = {"0": "CT"}

    def labels(self) -> dict[str, int]:
        if self.multiclass:
            return {"background": 0, **{n: i + 1 for i, n in enumerate(NAMES)}}
        return {"background": 0, "vertebra": 1}

    def make_case(self, rng: np.random.Generator, index: int) -> SynthCase:
        shape = self.grid_shape()
        spacing = slice_spacing(rng, self.inplane_spacing, self.slice_spacing)
        centre = np.array([rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-300, 300)])
        geometry = centred_geometry(shape, spacing, centre)
        half = (np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0)[::-1]

        body_ax, body_ay = half[0] * rng.uniform(0.8, 0.92), half[1] * rng.uniform(0.68, 0.8)
        tissue = _body(geometry, centre, body_ax, body_ay, rng)
        chain = _Chain(rng, centre, half, body_ay)
        which = np.zeros(shape, dtype=np.uint8)
        chain.paint(geometry, tissue, which, body_ax)

        mean = np.array(
            [
                -1000,
                rng.normal(-100, 10),
                rng.normal(45, 6),
                rng.normal(90, 8),
                rng.normal(190, 30),
                rng.normal(420, 50),
                rng.normal(230, 30),
                rng.normal(750, 80),
            ],
            dtype=np.float32,
        )
        amp = np.array([5, 12, 12, 8, 6, 40, 40, 60], dtype=np.float32)
        clean = mean[tissue] + amp[tissue] * smooth_field(rng, shape, cell=4.0)
        ct = partial_volume(clean, 0.6)
        ct += correlated_noise(rng, shape, std=uniform(rng, (12.0, 28.0)), corr=0.6)
        ct = np.clip(np.rint(ct), -1024, 3071).astype(np.int16)

        label = which if self.multiclass else (which > 0).astype(np.uint8)
        image = Image(ct, geometry.spacing, geometry.origin, geometry.direction_matrix)
        return SynthCase(
            image,
            image.with_array(label),
            {"vertebrae": sorted(int(v) for v in np.unique(which) if v)},
        )


def _body(geometry, centre, ax: float, ay: float, rng: np.random.Generator) -> np.ndarray:
    fat = uniform(rng, (8.0, 18.0))
    tissue = np.zeros(geometry.shape, dtype=np.uint8)
    for zs in slabs(geometry.shape[0]):
        box = (zs, slice(0, geometry.shape[1]), slice(0, geometry.shape[2]))
        p = physical_coords(geometry, box) - centre
        x, y = p[..., 0], p[..., 1]
        t = np.full(x.shape, AIR, dtype=np.uint8)
        t[(x / ax) ** 2 + (y / ay) ** 2 < 1] = FAT
        t[(x / (ax - fat)) ** 2 + (y / (ay - fat)) ** 2 < 1] = MUSCLE
        tissue[zs] = t
    return tissue


class _Chain:
    """The 17 vertebrae along an S-curve; arc length ``s`` runs from T1 downwards."""

    def __init__(self, rng: np.random.Generator, centre, half, body_ay: float) -> None:
        k = np.arange(17) / 16.0
        self.radius = (13.0 + 7.0 * k) * rng.uniform(0.9, 1.1)
        self.height = (15.0 + 9.0 * k) * rng.uniform(0.9, 1.1)
        disc = (5.0 + 4.0 * k) * rng.uniform(0.85, 1.15)
        pitch = self.height + disc
        self.s = np.cumsum(pitch) - pitch / 2
        self.gap = disc
        self.canal = uniform(rng, (7.0, 9.0))
        self.arch = uniform(rng, (4.0, 6.0))
        self.spinous = uniform(rng, (18.0, 26.0))
        self.transverse = uniform(rng, (12.0, 18.0))
        s_mid = rng.uniform(self.s[0] + 0.5 * half[2] - 20, self.s[-1] - 0.5 * half[2] + 20)
        self.s_mid = s_mid
        self.centre = np.asarray(centre, dtype=float)
        # Vertebral body centres sit posteriorly, leaving room for the arch inside the body.
        self.y0 = body_ay - (self.radius.max() * 0.8 + 2 * self.canal + self.spinous + 12.0)
        self.bend = [
            (uniform(rng, (0.0, 6.0)), uniform(rng, (300, 600)), rng.uniform(0, 6.3)),
            (uniform(rng, (10.0, 25.0)), uniform(rng, (350, 550)), rng.uniform(0, 6.3)),
        ]
        self.aorta = (uniform(rng, (9.0, 13.0)), uniform(rng, (0.3, 0.7)))

    def point(self, s: float) -> np.ndarray:
        (axx, lx, px), (ayy, ly, py) = self.bend
        x = axx * np.sin(2 * np.pi * s / lx + px)
        y = self.y0 + ayy * np.sin(2 * np.pi * s / ly + py)
        return self.centre + np.array([x, y, -(s - self.s_mid)])

    def frame(self, s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit vectors: ``t`` along the spine (inferior), ``ap`` posterior, ``lr`` left."""
        t = self.point(s + 0.5) - self.point(s - 0.5)
        t /= np.linalg.norm(t)
        ap = np.array([0.0, 1.0, 0.0]) - t[1] * t
        ap /= np.linalg.norm(ap)
        return t, ap, np.cross(t, ap)

    def paint(self, geometry, tissue: np.ndarray, which: np.ndarray, body_ax: float) -> None:
        muscle_or_fat = tissue != AIR
        vertebra = np.zeros(tissue.shape, dtype=bool)
        for k in range(17):
            c = self.point(self.s[k])
            reach_z = (self.height[k] + self.gap[k]) / 2 + 0.3 * body_ax + 5.0
            box, thin = box_around(geometry, c, body_ax), box_around(geometry, c, reach_z)
            if box is None or thin is None:
                continue
            box = (thin[0], *box[1:])
            t, ap, lr = self.frame(self.s[k])
            d = (physical_coords(geometry, box) - c).astype(np.float32)
            a, v, u = d @ t, d @ ap, d @ lr
            r, h = self.radius[k], self.height[k]
            pitch_half = (h + self.gap[k]) / 2
            slab = np.abs(a) < pitch_half
            rho = np.hypot(u / r, v / (0.8 * r))
            vc = 0.8 * r + self.canal + 1.0
            ring = np.hypot(u, v - vc)
            body = (rho**4 + (a / (h / 2)) ** 4) < 1
            arch = (ring > self.canal) & (ring < self.canal + self.arch) & (v > 0.4 * r)
            arch &= np.abs(a) < 0.4 * h
            spinous = (np.abs(u) < 3.0) & (v > vc) & (v < vc + self.canal + self.spinous)
            spinous &= np.abs(a - 0.3 * (v - vc - self.canal)) < 0.3 * h
            transverse = (np.abs(v - vc) < 3.5) & (np.abs(u) > self.canal)
            transverse &= np.abs(u) < self.canal + self.arch + self.transverse
            transverse &= np.abs(a) < 0.3 * h
            vert = (body | arch | spinous | transverse) & muscle_or_fat[box]

            sub = tissue[box]
            aorta_r, aorta_side = self.aorta
            aorta = np.hypot(u - aorta_side * r, v + 0.8 * r + aorta_r + 3) < aorta_r
            sub[aorta & slab & muscle_or_fat[box]] = AORTA
            sub[(rho < 1) & slab & ~body & muscle_or_fat[box]] = DISC
            if k < 12:  # thoracic: a pair of ribs running forward around the body
                rib_c = np.array([0.0, vc - 0.3 * body_ax])
                ell = np.hypot(u / (0.8 * body_ax), (v - rib_c[1]) / (0.55 * body_ax))
                band = np.abs(ell - 1) * 0.6 * body_ax < 4.0
                rib = band & (v > rib_c[1] - 0.3 * body_ax) & (np.abs(u) > self.canal + 6)
                rib &= np.abs(a + 0.25 * (vc - v)) < 4.0
                sub[rib & muscle_or_fat[box]] = RIB
            which[box][vert] = k + 1
            vertebra[box] |= vert
        marrow = ndimage.binary_erosion(vertebra, iterations=1)
        tissue[vertebra] = SHELL
        tissue[marrow] = MARROW
