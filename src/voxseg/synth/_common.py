"""Shared machinery of the phantom generators: options, seeding, geometry, image effects.

A phantom kind is a frozen dataclass (its options) subclassing :class:`Phantom`; it draws
one case at a time from its own random stream (:func:`case_rng`), so a case depends only
on ``(seed, kind, split, index)`` and never on how many other cases were asked for.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from voxseg._registry import Registry
from voxseg.config import write_json
from voxseg.data import DATASET_FOLDERS, write_dataset_json
from voxseg.errors import VoxsegError
from voxseg.io import Geometry, Image, write_image

SPLITS = ("Tr", "Ts")

#: Direction of an axis-aligned array: ``z`` → LPS z (superior), ``y`` → posterior, ``x`` →
#: left (ITK's identity direction, seen through voxseg's ``[z, y, x]`` column order).
AXIS_ALIGNED = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

#: Phantom kinds by name: each entry is a :class:`Phantom` dataclass (its options).
SYNTH: Registry[Phantom] = Registry("synth")

#: Folders a generator writes below the dataset root (removed first by ``overwrite``): the
#: raw layout's, and ``images/``, ``masks/``, ``test/`` of the 2D image-folder layout.
OUTPUT_FOLDERS = (*DATASET_FOLDERS, "images", "masks", "test")


@dataclass
class SynthCase:
    """One generated case: the image (``[c, z, y, x]``), its label map and kind extras."""

    image: Image
    label: Image
    extras: dict[str, Any] = field(default_factory=dict)


def case_rng(seed: int, kind: str, split: str, index: int) -> np.random.Generator:
    """The random stream of one case, independent of every other case."""
    return np.random.default_rng(
        np.random.SeedSequence([int(seed), zlib.crc32(kind.encode()), SPLITS.index(split), index])
    )


@dataclass(frozen=True)
class Phantom:
    """Options shared by every kind; subclasses add their own and draw the cases."""

    num_train: int = 20
    num_test: int = 5
    seed: int = 0
    shape: tuple[int, int, int] | None = None
    scale: float = 1.0
    overwrite: bool = False

    kind: ClassVar[str] = ""
    default_shape: ClassVar[tuple[int, int, int]] = (32, 32, 32)
    min_shape: ClassVar[tuple[int, int, int]] = (8, 16, 16)
    channel_names: ClassVar[dict[str, str]] = {"0": "CT"}
    file_ending: ClassVar[str] = ".nii.gz"

    def __post_init__(self) -> None:
        if self.num_train < 1 or self.num_test < 0:
            raise VoxsegError(
                f"synth {self.kind}: need num_train >= 1 and num_test >= 0, "
                f"got {self.num_train} and {self.num_test}"
            )
        if self.seed < 0:
            raise VoxsegError(f"synth {self.kind}: seed must be >= 0, got {self.seed}")
        if self.scale <= 0:
            raise VoxsegError(f"synth {self.kind}: scale must be > 0, got {self.scale}")
        shape = self.grid_shape()
        if any(s < m for s, m in zip(shape, self.min_shape, strict=True)):
            raise VoxsegError(
                f"synth {self.kind}: shape {shape} is too small; each axis needs at least "
                f"{self.min_shape}"
            )

    def grid_shape(self) -> tuple[int, int, int]:
        """The array shape ``(z, y, x)`` of every case (``shape`` or ``scale`` × default)."""
        if self.shape is not None:
            if len(self.shape) != 3:
                raise VoxsegError(f"synth {self.kind}: shape needs 3 values (Z Y X): {self.shape}")
            return tuple(int(s) for s in self.shape)
        return tuple(max(1, round(s * self.scale)) for s in self.default_shape)

    def labels(self) -> dict[str, int]:
        raise NotImplementedError

    def make_case(self, rng: np.random.Generator, index: int) -> SynthCase:
        raise NotImplementedError

    def write_extras(self, root: Path, split: str, case_id: str, case: SynthCase) -> None:
        """Write files beyond image and label (centerlines, seeds); nothing by default."""

    def options(self) -> dict[str, Any]:
        """The options as JSON-ready values (recorded in ``synth.json``)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def case_id(self, split: str, index: int) -> str:
        return f"{self.kind}_{index:03d}" if split == "Tr" else f"{self.kind}_test_{index:03d}"

    def cases(self) -> list[tuple[str, int]]:
        """``(split, index)`` of every case to generate."""
        return [("Tr", i) for i in range(self.num_train)] + [
            ("Ts", i) for i in range(self.num_test)
        ]

    def write(self, out: str | os.PathLike[str], workers: int = 1) -> Path:
        """Generate every case into the raw dataset folder ``out``; returns ``out``.

        ``workers > 1`` generates cases in that many processes (same arrays: every case
        has its own random stream).
        """
        root = prepare_output(out, self.overwrite)
        jobs = self.cases()
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                list(pool.map(self._generate_one, [root] * len(jobs), *zip(*jobs, strict=True)))
        else:
            for split, index in jobs:
                self._generate_one(root, split, index)
        self.write_metadata(root)
        return root

    def _generate_one(self, root: Path, split: str, index: int) -> None:
        case_id = self.case_id(split, index)
        case = self.make_case(case_rng(self.seed, self.kind, split, index), index)
        self.write_case(root, split, case_id, case)
        self.write_extras(root, split, case_id, case)

    def write_case(self, root: Path, split: str, case_id: str, case: SynthCase) -> None:
        """Image channels as ``images{split}/{case}_{c:04d}`` and the label map."""
        image = case.image
        channels = (
            [image]
            if image.array.ndim == 3
            else [image.channel(c) for c in range(image.num_channels)]
        )
        for c, channel in enumerate(channels):
            write_image(channel, root / f"images{split}" / f"{case_id}_{c:04d}{self.file_ending}")
        write_image(case.label, root / f"labels{split}" / f"{case_id}{self.file_ending}")

    def write_metadata(self, root: Path) -> None:
        write_dataset_json(
            root,
            channel_names=dict(self.channel_names),
            labels=self.labels(),
            num_training=self.num_train,
            file_ending=self.file_ending,
            name=f"synth_{self.kind}",
            description=f"voxseg synthetic '{self.kind}' phantom (seed {self.seed})",
        )
        write_json(root / "synth.json", {"kind": self.kind, "options": self.options()})


def prepare_output(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Create ``out``; refuse an existing dataset unless ``overwrite`` (then clear it)."""
    root = Path(out)
    if (root / "dataset.json").exists() or any((root / f).exists() for f in OUTPUT_FOLDERS):
        if not overwrite:
            raise VoxsegError(
                f"{root}: already holds a dataset; choose another folder or pass --overwrite"
            )
        for name in OUTPUT_FOLDERS:
            if (root / name).is_dir():
                shutil.rmtree(root / name)
        for name in ("dataset.json", "synth.json"):
            (root / name).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    return root


# --------------------------------------------------------------------------- geometry


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    if hi < lo:
        raise VoxsegError(f"range ({lo}, {hi}) has its upper bound below its lower bound")
    return float(rng.uniform(lo, hi))


def slice_spacing(
    rng: np.random.Generator, inplane: tuple[float, float], slices: tuple[float, float]
) -> tuple[float, float, float]:
    """Spacing ``(z, y, x)`` of a case with thick slices: one in-plane spacing drawn from
    ``inplane`` for rows and columns, then the slice step from ``slices``."""
    step = uniform(rng, inplane)
    return (uniform(rng, slices), step, step)


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix of ``angle`` radians about ``axis`` (Rodrigues' formula)."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def random_rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    """A rotation about a random axis by up to ``max_angle`` radians."""
    return rotation(rng.normal(size=3), rng.uniform(-max_angle, max_angle))


def centred_geometry(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    centre: np.ndarray,
    direction: np.ndarray | None = None,
) -> Geometry:
    """The grid whose central voxel lies at the LPS point ``centre``."""
    direction = AXIS_ALIGNED if direction is None else np.asarray(direction, dtype=float)
    half = np.asarray(spacing) * (np.asarray(shape) - 1) / 2.0
    origin = np.asarray(centre, dtype=float) - direction @ half
    return Geometry(shape, spacing, tuple(origin), direction)


def physical_coords(geometry: Geometry, box: tuple[slice, ...] | None = None) -> np.ndarray:
    """LPS coordinates ``(..., 3)`` of the voxel centres of ``box`` (the whole grid if None)."""
    box = box or tuple(slice(0, n) for n in geometry.shape)
    axes = [np.arange(b.start, b.stop, dtype=np.float64) for b in box]
    step = geometry.direction_matrix * np.asarray(geometry.spacing)[None, :]
    out = np.empty((*(len(a) for a in axes), 3), dtype=np.float64)
    for c in range(3):
        out[..., c] = (
            geometry.origin[c]
            + step[c, 0] * axes[0][:, None, None]
            + step[c, 1] * axes[1][None, :, None]
            + step[c, 2] * axes[2][None, None, :]
        )
    return out


def box_around(geometry: Geometry, centre: np.ndarray, radius: float) -> tuple[slice, ...] | None:
    """Index box covering the ball of ``radius`` mm at the LPS point ``centre`` (None if out)."""
    corners = np.array(
        [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float
    )
    idx = geometry.physical_to_index(np.asarray(centre) + radius * corners)
    lo = np.maximum(np.floor(idx.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + 1, geometry.shape)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def slabs(n: int, size: int = 16) -> list[slice]:
    """Consecutive slices of at most ``size`` along an axis of length ``n``."""
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def reorient(image: Image, perm: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> Image:
    """The same image stored with flipped and permuted array axes; physical space unchanged.

    Flipping axis ``a`` moves the origin to the far end of that axis and negates column
    ``a`` of the direction; permuting reorders spacing and direction columns alike.
    """
    arr = image.array
    lead = arr.ndim - 3
    origin = np.asarray(image.origin, dtype=float)
    direction = image.direction.copy()
    spacing = np.asarray(image.spacing, dtype=float)
    for a in range(3):
        if flips[a]:
            arr = np.flip(arr, axis=lead + a)
            origin = origin + direction[:, a] * spacing[a] * (image.shape[a] - 1)
            direction[:, a] = -direction[:, a]
    arr = np.transpose(arr, tuple(range(lead)) + tuple(lead + p for p in perm))
    return Image(
        np.ascontiguousarray(arr),
        tuple(spacing[list(perm)]),
        tuple(origin),
        direction[:, list(perm)],
    )


#: Orientations a case cycles through with ``orientation="vary"`` (case ``i`` takes entry
#: ``i % 5``): name, axis permutation, axis flips, and whether the grid is oblique.
ORIENTATIONS = (
    ("LPS", (0, 1, 2), (False, False, False), False),
    ("RAS-like", (0, 1, 2), (False, True, True), False),
    ("oblique", (0, 1, 2), (False, False, False), True),
    ("permuted", (2, 1, 0), (False, False, False), False),
    ("flipped-z", (0, 1, 2), (True, False, False), False),
)


@dataclass(frozen=True)
class Orientation:
    """How a case is stored: grid direction before, and axis flips/permutation after drawing."""

    name: str
    direction: np.ndarray
    perm: tuple[int, int, int] = (0, 1, 2)
    flips: tuple[bool, bool, bool] = (False, False, False)

    def apply(self, image: Image) -> Image:
        return reorient(image, self.perm, self.flips)


def pick_orientation(rng: np.random.Generator, index: int, mode: str) -> Orientation:
    """Orientation of case ``index``: axis-aligned (``fixed``) or cycling (``vary``)."""
    name, perm, flips, oblique = ORIENTATIONS[index % len(ORIENTATIONS) if mode == "vary" else 0]
    direction = AXIS_ALIGNED
    if oblique:
        tilt = rotation([1, 0, 0], np.deg2rad(rng.uniform(-5, 5)))
        spin = rotation([0, 0, 1], np.deg2rad(rng.choice([-1, 1]) * rng.uniform(4, 12)))
        direction = spin @ tilt @ AXIS_ALIGNED
    return Orientation(name, direction, perm, flips)


def check_choice(kind: str, option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise VoxsegError(
            f"synth {kind}: {option} must be one of {', '.join(choices)}; got {value!r}"
        )


def check_orientation(kind: str, mode: str) -> None:
    """The ``orientation`` option of a kind: a mode of :func:`pick_orientation`."""
    check_choice(kind, "orientation", mode, ("vary", "fixed"))


# --------------------------------------------------------------------------- image effects


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], cell: float, dtype=np.float32
) -> np.ndarray:
    """Smooth random field of unit standard deviation, varying over ~``cell`` voxels.

    White noise on a coarse grid (one node per ``cell`` voxels), Gaussian-smoothed and
    linearly interpolated up to ``shape``; cheap even for 512² × 300 volumes.
    """
    coarse = tuple(max(2, int(np.ceil(n / cell)) + 1) for n in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(coarse), 0.8, mode="wrap")
    noise = (noise - noise.mean()) / (noise.std() + 1e-12)
    zoom = [n / c for n, c in zip(shape, coarse, strict=True)]
    out = ndimage.zoom(noise, zoom, order=1, mode="nearest", grid_mode=True)
    return out[tuple(slice(0, n) for n in shape)].astype(dtype, copy=False)


def partial_volume(values: np.ndarray, sigma_voxels: float = 0.6) -> np.ndarray:
    """Scanner point-spread: a Gaussian blur of ``sigma_voxels`` along every array axis."""
    return ndimage.gaussian_filter(values, sigma_voxels, mode="nearest")


def correlated_noise(
    rng: np.random.Generator, shape: tuple[int, ...], std: float, corr: float = 0.6
) -> np.ndarray:
    """Gaussian noise of standard deviation ``std`` with a correlation length of ``corr`` voxels."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    if corr > 0:
        noise = ndimage.gaussian_filter(noise, corr, mode="wrap")
        noise /= noise.std() + 1e-12
    return noise * np.float32(std)


def rician(rng: np.random.Generator, signal: np.ndarray, std: float) -> np.ndarray:
    """Magnitude-MR noise: ``|signal + n1 + i n2|`` with ``n1, n2 ~ N(0, std)``."""
    n1 = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(std)
    n2 = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(std)
    return np.sqrt((signal + n1) ** 2 + n2**2)


def wobble(
    rng: np.random.Generator, n_terms: int, amplitude: float, max_freq: float = 2.0
) -> np.ndarray:
    """Parameters of a smooth radial deformation: rows ``(fx, fy, fz, phase, amp)``."""
    freqs = rng.normal(size=(n_terms, 3))
    freqs *= rng.uniform(0.5, max_freq, size=(n_terms, 1)) / np.linalg.norm(
        freqs, axis=1, keepdims=True
    )
    phase = rng.uniform(0, 2 * np.pi, size=(n_terms, 1))
    amp = amplitude * rng.uniform(0.3, 1.0, size=(n_terms, 1)) / np.sqrt(n_terms)
    return np.hstack([freqs, phase, amp])


def apply_wobble(params: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Evaluate the deformation of :func:`wobble` at points ``q (..., 3)``."""
    out = np.zeros(q.shape[:-1], dtype=q.dtype)
    for fx, fy, fz, phase, amp in params:
        out += amp * np.cos(np.pi * (fx * q[..., 0] + fy * q[..., 1] + fz * q[..., 2]) + phase)
    return out


@dataclass(frozen=True)
class Blob:
    """A smooth, deformed ellipsoid: ``|R^T (p - c) / radii| < 1 + wobble``."""

    centre: np.ndarray
    radii: np.ndarray
    rot: np.ndarray
    deform: np.ndarray

    @property
    def extent(self) -> float:
        """Radius of a ball that contains the blob."""
        return float(np.max(self.radii) * (1.0 + np.abs(self.deform[:, 4]).sum()) + 1e-6)

    def level(self, p: np.ndarray) -> np.ndarray:
        """Negative inside, positive outside (in units of the radii)."""
        q = ((p - self.centre) @ self.rot) / self.radii
        return np.linalg.norm(q, axis=-1) - 1.0 - apply_wobble(self.deform, q)

    def inside(self, p: np.ndarray) -> np.ndarray:
        return self.level(p) < 0


def paint_blob(
    geometry: Geometry,
    blob: Blob,
    scale: np.ndarray,
    centre: np.ndarray,
    targets: list[tuple[np.ndarray, Any]],
    within: np.ndarray | None = None,
) -> None:
    """Write values inside ``blob`` (in coordinates ``(p - centre) / scale``) into arrays.

    ``targets`` pairs an array with the value (scalar or array over the box) to write;
    ``within`` restricts painting to a boolean mask of the whole grid.
    """
    phys_centre = centre + blob.centre * scale
    box = box_around(geometry, phys_centre, blob.extent * float(np.max(scale)))
    if box is None:
        return
    q = ((physical_coords(geometry, box) - centre) / scale).astype(np.float32)
    inside = blob.inside(q)
    if within is not None:
        inside &= within[box]
    for array, value in targets:
        sub = array[box]
        sub[inside] = value[inside] if isinstance(value, np.ndarray) else value
