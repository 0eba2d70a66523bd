"""``cord``: T2w-like spinal cord with CSF, vertebrae and intramedullary lesions.

The cord is an elliptical tube along the superior–inferior axis whose centre and width
vary smoothly with height; a CSF ring (bright on T2) surrounds it inside a dark bony
canal, with vertebral bodies and bright discs in front and muscle and fat around. Lesions
are small ellipsoids elongated along the cord, mostly hyperintense, clipped to the cord;
about a third of the cases have none. Thick axial slices (anisotropic spacing), a bias
field, Rician noise and an arbitrary per-case intensity gain make it MR-like.

``target`` picks the labels: ``both`` (cord 1, lesion 2), ``cord`` (cord incl. lesions 1)
or ``lesion`` (lesion 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from voxseg.io import Image
from voxseg.synth._common import (
    SYNTH,
    Blob,
    Phantom,
    SynthCase,
    centred_geometry,
    check_choice,
    check_orientation,
    paint_blob,
    partial_volume,
    physical_coords,
    pick_orientation,
    random_rotation,
    rician,
    slabs,
    slice_spacing,
    smooth_field,
    uniform,
    wobble,
)

MUSCLE, FAT, BONE, BODY, DISC, CSF, CORD, LESION = range(8)


@SYNTH.register("cord")
@dataclass(frozen=True)
class Cord(Phantom):
    """Spinal cord phantom (channel ``T2w``); labels depend on ``target``."""

    num_train: int = 20
    num_test: int = 5
    inplane_spacing: tuple[float, float] = (0.5, 0.9)
    slice_spacing: tuple[float, float] = (1.5, 3.0)
    target: str = "both"
    lesion_free_fraction: float = 0.3
    orientation: str = "fixed"

    kind: ClassVar[str] = "cord"
    default_shape: ClassVar[tuple[int, int, int]] = (40, 64, 64)
    min_shape: ClassVar[tuple[int, int, int]] = (8, 40, 40)
    channel_names: ClassVar[dict[str, str]] = {"0": "T2w"}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.kind, "target", self.target, ("both", "cord", "lesion"))
        check_orientation(self.kind, self.orientation)

    def labels(self) -> dict[str, int]:
        if self.target == "both":
            return {"background": 0, "cord": 1, "lesion": 2}
        return {"background": 0, self.target: 1}

    def make_case(self, rng: np.random.Generator, index: int) -> SynthCase:
        shape = self.grid_shape()
        spacing = slice_spacing(rng, self.inplane_spacing, self.slice_spacing)
        orient = pick_orientation(rng, index, self.orientation)
        centre = rng.uniform(-30, 30, 3)
        geometry = centred_geometry(shape, spacing, centre, orient.direction)
        tissue = _anatomy(geometry, centre, rng)
        has_lesions = rng.uniform() >= self.lesion_free_fraction
        if has_lesions:
            _lesions(geometry, tissue, rng)

        values = {
            MUSCLE: (0.3, 0.05),
            FAT: (0.8, 0.05),
            BONE: (0.12, 0.03),
            BODY: (0.35, 0.04),
            DISC: (0.6, 0.05),
            CSF: (1.0, 0.03),
            CORD: (0.45, 0.03),
        }
        mean = np.zeros(LESION + 1, dtype=np.float32)
        amp = np.zeros(LESION + 1, dtype=np.float32)
        for code, (m, a) in values.items():
            mean[code], amp[code] = m * rng.uniform(0.92, 1.08), a
        bright = rng.uniform() < 0.8
        mean[LESION] = uniform(rng, (0.65, 0.85) if bright else (0.2, 0.3))
        amp[LESION] = 0.03
        clean = mean[tissue] + amp[tissue] * smooth_field(rng, shape, cell=4.0)
        signal = partial_volume(clean, 0.6)
        signal *= 1.0 + 0.2 * smooth_field(rng, shape, cell=16.0)
        mr = rician(rng, signal, uniform(rng, (0.03, 0.05))) * np.float32(rng.uniform(300, 1500))

        label = np.zeros(shape, dtype=np.uint8)
        if self.target in ("both", "cord"):
            label[(tissue == CORD) | (tissue == LESION)] = 1
        label[tissue == LESION] = 2 if self.target == "both" else 1
        image = Image(
            mr.astype(np.float32), geometry.spacing, geometry.origin, geometry.direction_matrix
        )
        return SynthCase(
            orient.apply(image),
            orient.apply(image.with_array(label)),
            {"orientation": orient.name, "lesion_voxels": int((tissue == LESION).sum())},
        )


def _anatomy(geometry, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tissue map of cord, CSF, canal, vertebral bodies, discs, muscle and fat."""
    ax0, ay0 = uniform(rng, (5.0, 6.5)), uniform(rng, (3.5, 4.5))
    csf_x, csf_y = uniform(rng, (2.0, 3.0)), uniform(rng, (2.5, 3.5))
    wall = uniform(rng, (3.0, 5.0))
    curve = [
        (uniform(rng, (0.0, 2.5)), uniform(rng, (80, 200)), rng.uniform(0, 2 * np.pi)),
        (uniform(rng, (1.0, 4.0)), uniform(rng, (80, 200)), rng.uniform(0, 2 * np.pi)),
    ]
    offset = rng.uniform(-3, 3, 2)
    swell = (uniform(rng, (0.0, 0.12)), uniform(rng, (60, 160)), rng.uniform(0, 2 * np.pi))
    pitch, phase = uniform(rng, (24.0, 32.0)), rng.uniform(0, 1)
    body_depth = uniform(rng, (22.0, 28.0))
    tissue = np.zeros(geometry.shape, dtype=np.uint8)
    for zs in slabs(geometry.shape[0]):
        box = (zs, slice(0, geometry.shape[1]), slice(0, geometry.shape[2]))
        p = physical_coords(geometry, box) - centre
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        xc = offset[0] + curve[0][0] * np.sin(2 * np.pi * z / curve[0][1] + curve[0][2])
        yc = offset[1] + curve[1][0] * np.sin(2 * np.pi * z / curve[1][1] + curve[1][2])
        grow = 1.0 + swell[0] * np.sin(2 * np.pi * z / swell[1] + swell[2])
        ax, ay = ax0 * grow, ay0 * grow
        dx, dy = x - xc, y - yc
        t = np.full(x.shape, MUSCLE, dtype=np.uint8)
        t[dy > ay + csf_y + wall + 14.0] = FAT
        front = yc - ay - csf_y - wall  # anterior edge of the canal (LPS: anterior is -y)
        in_body = (np.abs(dx) < 15.0) & (y < front) & (y > front - body_depth)
        disc = ((z / pitch + phase) % 1.0) < 0.25
        t[in_body] = BODY
        t[in_body & disc] = DISC
        canal = np.hypot(dx / (ax + csf_x + wall), (dy - 0.5) / (ay + csf_y + wall))
        t[canal < 1] = BONE
        t[np.hypot(dx / (ax + csf_x), (dy - 0.5) / (ay + csf_y)) < 1] = CSF
        t[np.hypot(dx / ax, dy / ay) < 1] = CORD
        tissue[zs] = t
    return tissue


def _lesions(geometry, tissue: np.ndarray, rng: np.random.Generator) -> None:
    """Paint 1–3 lesions, elongated along z, inside the cord."""
    cord = tissue == CORD
    where = np.argwhere(cord)
    if len(where) == 0:
        return
    for _ in range(int(rng.integers(1, 4))):
        at = where[rng.integers(len(where))]
        centre = geometry.index_to_physical(at)
        radii = np.array(
            [uniform(rng, (1.0, 2.2)), uniform(rng, (1.0, 2.2)), uniform(rng, (2.5, 9.0))]
        )
        blob = Blob(np.zeros(3), radii, random_rotation(rng, 0.3), wobble(rng, 3, 0.15))
        paint_blob(geometry, blob, np.ones(3), centre, [(tissue, LESION)], cord)
