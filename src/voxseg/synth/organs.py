"""``organs``: CT-like abdomen with liver, kidneys and spleen inside a body outline.

Each case draws its own spacing (thick slices, finer in-plane), its own orientation (plain
LPS, RAS-like flips, a flipped slice axis, permuted axes or a slightly oblique grid) and
its own anatomy: smooth deformed ellipsoids placed in a frame normalised to the field of
view, so a larger ``--shape`` gives the same anatomy with more voxels. With ``lesions`` the
liver holds its own lesion label (4): round lesions of 4–10 mm diameter in physical size
whatever the grid, 1–4 per case, lesion-free in ``LESION_FREE_FRACTION`` of the cases.
Unlabelled tissue (muscle, bowel, vessels, spine) shares the organs' Hounsfield range, so a
threshold alone cannot segment them; partial-volume blur and correlated noise complete the
picture.
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
    check_orientation,
    correlated_noise,
    paint_blob,
    partial_volume,
    physical_coords,
    pick_orientation,
    random_rotation,
    slabs,
    slice_spacing,
    smooth_field,
    uniform,
    wobble,
)

# Tissue codes of the hidden tissue map (labels and intensities are looked up from it).
AIR, FAT, MUSCLE, SHELL, MARROW, DISC, AORTA, IVC, BOWEL, GAS = range(10)
LIVER, LIVER_LESION, KIDNEY, MEDULLA, SPLEEN = range(10, 15)
N_TISSUES = 15

LABELS = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3}
LESION_LABEL = 4
_LABEL_OF = np.zeros(N_TISSUES, dtype=np.uint8)
_LABEL_OF[[LIVER, LIVER_LESION]] = 1
_LABEL_OF[[KIDNEY, MEDULLA]] = 2
_LABEL_OF[SPLEEN] = 3
_LABEL_OF_WITH_LESIONS = _LABEL_OF.copy()
_LABEL_OF_WITH_LESIONS[LIVER_LESION] = LESION_LABEL

#: ``lesions``: lesion diameters in mm (physical, whatever the grid), lesions per case (1–4)
#: and the share of lesion-free cases.
LESION_DIAMETER_MM = (4.0, 10.0)
LESION_COUNT = (1, 4)
LESION_FREE_FRACTION = 0.15
#: A lesion lies this far (mm) inside the liver and from other lesions, so none is clipped
#: below its drawn size or merges with another.
LESION_CLEARANCE_MM = 1.5


@SYNTH.register("organs")
@dataclass(frozen=True)
class Organs(Phantom):
    """CT abdomen phantom: labels liver 1, kidney 2, spleen 3, with ``lesions`` also liver
    lesion 4 (channel ``CT``)."""

    num_train: int = 24
    num_test: int = 6
    inplane_spacing: tuple[float, float] = (0.7, 1.0)
    slice_spacing: tuple[float, float] = (2.0, 3.0)
    orientation: str = "vary"
    lesions: bool = False

    kind: ClassVar[str] = "organs"
    default_shape: ClassVar[tuple[int, int, int]] = (48, 96, 96)
    min_shape: ClassVar[tuple[int, int, int]] = (8, 24, 24)
    channel_names: ClassVar[dict[str, str]] = {"0": "CT"}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_orientation(self.kind, self.orientation)

    def labels(self) -> dict[str, int]:
        return {**LABELS, "lesion": LESION_LABEL} if self.lesions else dict(LABELS)

    def make_case(self, rng: np.random.Generator, index: int) -> SynthCase:
        shape = self.grid_shape()
        spacing = slice_spacing(rng, self.inplane_spacing, self.slice_spacing)
        orient = pick_orientation(rng, index, self.orientation)
        centre = np.array([rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-400, -100)])
        geometry = centred_geometry(shape, spacing, centre, orient.direction)
        half = (np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0)[::-1]  # (x, y, z) mm

        tissue = _body(geometry, centre, half, rng)
        _organs(geometry, centre, half, tissue, rng, self.lesions)

        mean, texture_amp = _intensities(rng)
        texture = smooth_field(rng, shape, cell=5.0)
        clean = mean[tissue] + texture_amp[tissue] * texture
        ct = partial_volume(clean, 0.6)
        ct += correlated_noise(rng, shape, std=uniform(rng, (8.0, 18.0)), corr=0.6)
        ct = np.clip(np.rint(ct), -1024, 3071).astype(np.int16)

        image = Image(ct, geometry.spacing, geometry.origin, geometry.direction_matrix)
        label = image.with_array((_LABEL_OF_WITH_LESIONS if self.lesions else _LABEL_OF)[tissue])
        return SynthCase(orient.apply(image), orient.apply(label), {"orientation": orient.name})


def _body(geometry, centre: np.ndarray, half: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tissue map of air, body (fat rim, muscle), spine, aorta and IVC, slab by slab."""
    ax, ay = rng.uniform(0.82, 0.93), rng.uniform(0.62, 0.76)
    oy = rng.uniform(-0.04, 0.04)
    fat = rng.uniform(0.04, 0.09)
    outline = wobble(rng, 4, 0.06, max_freq=1.5)
    sx, sy = rng.uniform(-0.03, 0.03), oy + ay * rng.uniform(0.5, 0.58)
    spine_r = rng.uniform(0.085, 0.11)
    pitch, phase = rng.uniform(0.28, 0.36), rng.uniform(0, 1)
    vessels = [  # (tissue, x, y, radius)
        (AORTA, sx + rng.uniform(0.06, 0.12), sy - spine_r - rng.uniform(0.05, 0.08), 0.055),
        (IVC, sx - rng.uniform(0.1, 0.16), sy - spine_r - rng.uniform(0.04, 0.07), 0.06),
    ]
    tissue = np.zeros(geometry.shape, dtype=np.uint8)
    for zs in slabs(geometry.shape[0]):
        box = (zs, slice(0, geometry.shape[1]), slice(0, geometry.shape[2]))
        u = ((physical_coords(geometry, box) - centre) / half).astype(np.float32)
        ux, uy, uz = u[..., 0], u[..., 1], u[..., 2]
        theta = np.arctan2(uy - oy, ux)
        deform = 1.0 + _angular(outline, theta, uz)
        rho = np.sqrt((ux / ax) ** 2 + ((uy - oy) / ay) ** 2)
        inner = np.sqrt((ux / (ax - fat)) ** 2 + ((uy - oy) / (ay - fat)) ** 2)
        t = np.zeros(u.shape[:-1], dtype=np.uint8)
        t[rho < deform] = FAT
        t[inner < deform] = MUSCLE
        r_spine = np.hypot(ux - sx, uy - sy) / spine_r
        disc = ((uz / pitch + phase) % 1.0) < 0.2
        t[r_spine < 1.0] = SHELL
        t[(r_spine < 0.8) & ~disc] = MARROW
        t[(r_spine < 1.0) & disc] = DISC
        for code, vx, vy, vr in vessels:
            t[np.hypot(ux - vx, uy - vy) < vr] = code
        tissue[zs] = t
    return tissue


def _angular(params: np.ndarray, theta: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Smooth deformation of an outline as a function of angle and height."""
    out = np.zeros_like(theta)
    for k, (_, _, fz, phase, amp) in enumerate(params, start=2):
        out += amp * np.cos(k * theta + phase + fz * z)
    return out


def _organs(
    geometry,
    centre: np.ndarray,
    half: np.ndarray,
    tissue: np.ndarray,
    rng: np.random.Generator,
    lesions: bool = False,
) -> None:
    """Paint bowel, liver (with lesions), kidneys (with medulla) and spleen into ``tissue``;
    ``lesions``: lesions of physical size (:func:`_lesions`) instead of field-relative ones."""
    inside_body = tissue == MUSCLE

    def blob(c, r, jitter=0.04, size=0.1, angle=0.25, amount=0.12) -> Blob:
        return Blob(
            np.asarray(c) + rng.uniform(-jitter, jitter, 3),
            np.asarray(r) * rng.uniform(1 - size, 1 + size, 3),
            random_rotation(rng, angle),
            wobble(rng, 4, amount),
        )

    for _ in range(int(rng.integers(3, 7))):
        code = GAS if rng.uniform() < 0.3 else BOWEL
        c = (rng.uniform(-0.3, 0.45), rng.uniform(-0.5, -0.1), rng.uniform(-0.7, 0.5))
        paint_blob(
            geometry,
            blob(c, (0.09, 0.08, 0.15), 0.0, 0.3),
            half,
            centre,
            [(tissue, code)],
            inside_body,
        )

    liver = blob((-0.36, -0.1, 0.3), (0.42, 0.38, 0.55), amount=0.15)
    paint_blob(geometry, liver, half, centre, [(tissue, LIVER)], inside_body)
    is_liver = tissue == LIVER
    for _ in range(0 if lesions else int(rng.integers(0, 4))):
        c = liver.centre + liver.rot @ (rng.uniform(-0.5, 0.5, 3) * liver.radii)
        paint_blob(
            geometry,
            blob(c, (0.05, 0.05, 0.07), 0.0, 0.4),
            half,
            centre,
            [(tissue, LIVER_LESION)],
            is_liver,
        )
    if lesions:
        _lesions(geometry, tissue, rng)

    for side in (-1, 1):
        kidney = blob((side * 0.32, 0.3, -0.25 + 0.06 * side), (0.11, 0.13, 0.28), amount=0.06)
        paint_blob(geometry, kidney, half, centre, [(tissue, KIDNEY)], inside_body)
        sinus = Blob(
            kidney.centre - np.array([side * 0.03, 0, 0]),
            kidney.radii * 0.55,
            kidney.rot,
            wobble(rng, 3, 0.1),
        )
        paint_blob(geometry, sinus, half, centre, [(tissue, MEDULLA)], tissue == KIDNEY)

    spleen = blob((0.5, 0.2, 0.35), (0.15, 0.22, 0.32), amount=0.12)
    paint_blob(geometry, spleen, half, centre, [(tissue, SPLEEN)], inside_body)


def _lesions(geometry, tissue: np.ndarray, rng: np.random.Generator) -> None:
    """Paint round liver lesions of physical diameter ``LESION_DIAMETER_MM`` into ``tissue``.

    Each centre is drawn among liver voxels at least its radius + ``LESION_CLEARANCE_MM``
    inside the liver (Euclidean distance in mm) and as far from the lesions before it, so the
    labelled lesion keeps its drawn size; a lesion that fits nowhere is left out.
    """
    from scipy import ndimage

    if rng.uniform() < LESION_FREE_FRACTION:
        return
    count = int(rng.integers(LESION_COUNT[0], LESION_COUNT[1] + 1))
    liver = tissue == LIVER
    if not liver.any():
        return
    depth = ndimage.distance_transform_edt(liver, sampling=geometry.spacing)
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(count):
        radius = uniform(rng, LESION_DIAMETER_MM) / 2.0
        index = np.argwhere(depth >= radius + LESION_CLEARANCE_MM)
        points = geometry.index_to_physical(index) if len(index) else index
        for c, r in placed:
            keep = np.linalg.norm(points - c, axis=1) >= r + radius + LESION_CLEARANCE_MM
            points = points[keep]
        if not len(points):
            continue
        at = points[int(rng.integers(len(points)))]
        lesion = Blob(np.zeros(3), np.full(3, radius), np.eye(3), np.zeros((1, 5)))
        paint_blob(geometry, lesion, np.ones(3), at, [(tissue, LIVER_LESION)], liver)
        placed.append((at, radius))


def _intensities(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-case mean HU and texture amplitude of every tissue code."""
    mean = np.zeros(N_TISSUES, dtype=np.float32)
    amp = np.zeros(N_TISSUES, dtype=np.float32)
    table = {
        AIR: (-1000, 5),
        FAT: (rng.normal(-100, 10), 12),
        MUSCLE: (rng.normal(45, 6), 10),
        SHELL: (rng.normal(700, 60), 60),
        MARROW: (rng.normal(250, 30), 30),
        DISC: (rng.normal(85, 8), 8),
        AORTA: (rng.normal(170, 30), 6),
        IVC: (rng.normal(110, 15), 6),
        BOWEL: (rng.uniform(0, 70), 15),
        GAS: (rng.uniform(-850, -600), 60),
        LIVER: (rng.normal(62, 8), 7),
        LIVER_LESION: (rng.normal(28, 8), 4),
        KIDNEY: (rng.normal(155, 20), 10),
        MEDULLA: (rng.normal(95, 12), 8),
        SPLEEN: (rng.normal(50, 7), 7),
    }
    for code, (m, a) in table.items():
        mean[code], amp[code] = m, a
    return mean, amp
