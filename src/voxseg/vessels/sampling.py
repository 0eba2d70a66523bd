"""Centerline-guided patch datasets for local vessel models (SeqSeg's patch sampler).

Rules (SeqSeg / BloodVesselML3D, see ``reference.md``): every centerline is walked, the
longest first and each from its end of larger radius; a point already covered by an
earlier (longer) centerline is skipped, so a shared trunk is sampled once. The step is
``step_factor``·r, times ``dense_factor`` at bifurcations and in large vessels. Each point
gives ``patches_per_point`` patches (``patches_at_bifurcation`` at bifurcations): the first
exactly centred with side ``size_mean``·r, the others with side ~ N(size_mean, size_std)·r
and the centre moved by N(0, shift_std)·r in the plane normal to the tangent. Every side has
at least ``min_voxels`` voxels. The mask is binarised and its components that do not touch
the centerline point are removed.

Patches keep the native voxel size and a size proportional to the radius, as in SeqSeg:
the planner of the training engine chooses the target spacing and patch size, and the
trainer pads/crops. The output is a raw dataset (``imagesTr/{case}_{k:04d}_0000…``,
``labelsTr``, ``dataset.json``), ``splits.json`` keeping all patches of a case in one
fold, and ``patch_stats.csv``. Patches are drawn from a per-case random stream, so a rerun
draws the same patches and skips the files already written.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.spatial import cKDTree

from voxseg.config import atomic_write_text, write_json
from voxseg.data import Dataset, kfold_splits, write_dataset_json
from voxseg.errors import VoxsegError
from voxseg.io import Image, PolyData, read_vtp, write_image
from voxseg.io.vtp import BIFURCATION_ID, CENTERLINE_RADIUS
from voxseg.progress import ProgressReporter
from voxseg.vessels.centerline import extract_centerline, require_centerline
from voxseg.vessels.local import component_at_centre
from voxseg.vessels.subvolume import box_around, crop

log = logging.getLogger(__name__)

#: The per-patch table of a patch dataset (one :class:`PatchRecord` per row).
PATCH_STATS = "patch_stats.csv"
#: The local model's patch holds this percentile of the sampled boxes' sides.
LOCAL_PATCH_PERCENTILE = 90.0


class SamplerConfig(BaseModel):
    """Constants of the patch sampler (defaults: SeqSeg's)."""

    model_config = ConfigDict(extra="forbid")

    step_factor: float = Field(1.5, gt=0, description="step along the centerline, in radii")
    dense_factor: float = Field(
        0.5, gt=0, le=1, description="step multiplier at bifurcations and in large vessels"
    )
    large_radius_factor: float = Field(
        2.0, gt=0, description="a vessel is large above this × the case's median radius"
    )
    patches_per_point: int = Field(3, ge=1)
    patches_at_bifurcation: int = Field(5, ge=1)
    size_mean: float = Field(5.0, gt=0, description="patch side, in radii")
    size_std: float = Field(0.8, ge=0, description="std of the patch side, in radii")
    shift_std: float = Field(0.8, ge=0, description="std of the normal-plane jitter, in radii")
    min_voxels: int = Field(5, ge=1, description="fewest voxels per patch side")
    max_voxels: int = Field(256, ge=5, description="most voxels per patch side")
    label: int | None = Field(None, description="vessel label (default: any non-zero)")
    seed: int = 0
    num_folds: int = Field(5, ge=2)


@dataclass
class PatchRecord:
    """One row of ``patch_stats.csv``."""

    patch: str
    case: str
    line: int
    position_mm: float
    x: float
    y: float
    z: float
    radius: float
    tx: float
    ty: float
    tz: float
    bifurcation: bool
    exact: bool
    side_mm: float
    shift_mm: float
    size_z: int
    size_y: int
    size_x: int
    foreground: float


@dataclass
class SamplePoint:
    """A point of the walk: position (LPS mm), unit tangent, radius, bifurcation flag."""

    line: int
    position_mm: float
    point: np.ndarray
    tangent: np.ndarray
    radius: float
    bifurcation: bool


def walk_centerline(poly: PolyData, config: SamplerConfig) -> list[SamplePoint]:
    """The sampling points of every centerline (longest first, from the larger radius)."""
    radius = np.asarray(poly.point_data[CENTERLINE_RADIUS], dtype=float)
    bif = np.asarray(poly.point_data.get(BIFURCATION_ID, np.full(len(radius), -1))) >= 0
    large = config.large_radius_factor * float(np.median(radius))
    lines = [np.asarray(line) for line in poly.lines if len(line) >= 2]
    lengths = [_arc(poly.points[line])[-1] for line in lines]
    order = np.argsort(lengths)[::-1]
    out: list[SamplePoint] = []
    covered: list[np.ndarray] = []
    for rank, j in enumerate(order):
        line = lines[j]
        if radius[line[-1]] > radius[line[0]]:
            line = line[::-1]
        pts = poly.points[line]
        arc = _arc(pts)
        tree = cKDTree(np.concatenate(covered)) if covered else None
        s = 0.0
        while s <= arc[-1]:
            k = int(np.clip(np.searchsorted(arc, s), 0, len(arc) - 1))
            p = np.array([np.interp(s, arc, pts[:, a]) for a in range(3)])
            r = float(np.interp(s, arc, radius[line]))
            at_bif = bool(bif[line[k]])
            step = config.step_factor * r
            if at_bif or r > large:
                step *= config.dense_factor
            if tree is None or tree.query(p)[0] > 0.5 * r:
                lo, hi = max(k - 2, 0), min(k + 2, len(pts) - 1)
                t = pts[hi] - pts[lo]
                out.append(
                    SamplePoint(rank, float(s), p, t / max(np.linalg.norm(t), 1e-12), r, at_bif)
                )
            s += max(step, 1e-3)
        covered.append(pts)
    return out


def sample_case(
    image: Image,
    mask: Image,
    centerline: PolyData,
    case: str,
    config: SamplerConfig,
) -> list[tuple[str, Image, Image, PatchRecord]]:
    """Draw the patches of one case: ``(patch id, image patch, mask patch, record)``."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, zlib.crc32(case.encode())]))
    arr = mask.array[0] if mask.array.ndim == 4 else mask.array
    binary = (arr > 0) if config.label is None else (arr == config.label)
    geometry = mask.geometry
    out = []
    for sp in walk_centerline(centerline, config):
        u, v = _normals(sp.tangent)
        n = config.patches_at_bifurcation if sp.bifurcation else config.patches_per_point
        for j in range(n):
            if j == 0:
                side, shift = config.size_mean * sp.radius, np.zeros(3)
            else:
                side = max(rng.normal(config.size_mean, config.size_std), 1.0) * sp.radius
                a, b = rng.normal(0.0, config.shift_std * sp.radius, 2)
                shift = a * u + b * v
            box = box_around(geometry, sp.point + shift, side, config.min_voxels, config.max_voxels)
            if box is None or min(box.size) < config.min_voxels:
                continue
            sub_mask = crop(mask.with_array(binary), box)
            piece = component_at_centre(sub_mask.array, sub_mask.geometry, sp.point, sp.radius)
            label = np.zeros(box.size, np.uint8) if piece is None else piece.astype(np.uint8)
            patch_id = f"{case}_{len(out):04d}"
            record = PatchRecord(
                patch_id,
                case,
                sp.line,
                round(sp.position_mm, 4),
                *np.round(sp.point, 4).tolist(),
                round(sp.radius, 4),
                *np.round(sp.tangent, 4).tolist(),
                sp.bifurcation,
                j == 0,
                round(float(side), 4),
                round(float(np.linalg.norm(shift)), 4),
                *box.size,
                round(float(label.mean()), 4),
            )
            out.append((patch_id, crop(image, box), sub_mask.with_array(label), record))
    return out


def case_centerline(dataset: Dataset, case_id: str, mask: Image) -> PolyData:
    """``centerlines/{case}.vtp`` when present, else extracted from the mask."""
    path = dataset.root / "centerlines" / f"{case_id}.vtp"
    if path.is_file():
        poly = read_vtp(path)
        require_centerline(poly, str(path))
        return poly
    return extract_centerline(mask).to_polydata()


def _sample_and_write(root: str, out: str, case_id: str, config: SamplerConfig) -> list[dict]:
    """Worker: sample one case and write the patches not written yet; returns the rows."""
    try:
        dataset = Dataset(root)
        case = dataset.case(case_id)
        if case.label is None:
            raise VoxsegError(f"no label file {dataset.label_path(case_id)}")
        image, mask = dataset.load_case(case)
        poly = case_centerline(dataset, case_id, mask)
        ending = dataset.file_ending
        rows = []
        for patch_id, img, lab, record in sample_case(image, mask, poly, case_id, config):
            channels = [img.channel(c) for c in range(img.num_channels)]
            label_path = Path(out) / "labelsTr" / f"{patch_id}{ending}"
            if not label_path.is_file():
                for c, ch in enumerate(channels):
                    write_image(ch, Path(out) / "imagesTr" / f"{patch_id}_{c:04d}{ending}")
                write_image(lab, label_path)
            rows.append(asdict(record))
        return rows
    except VoxsegError as exc:
        raise VoxsegError(f"case {case_id}: {exc}") from exc
    except Exception as exc:  # surfaced with the case name, not swallowed
        raise VoxsegError(f"case {case_id}: {type(exc).__name__}: {exc}") from exc


def sample_dataset(
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: SamplerConfig | None = None,
    num_processes: int = 1,
) -> Path:
    """Write the patch dataset of every training case of ``dataset`` into ``out``."""
    config = config or SamplerConfig()
    source = Dataset(dataset)
    out = Path(out).absolute()
    if out == source.root:
        raise VoxsegError(f"{out}: the patch dataset must go to another folder")
    cases = [c.case_id for c in source.cases("Tr") if c.label is not None]
    if not cases:
        raise VoxsegError(f"{source.root}: no training cases with labels in labelsTr/")
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {}
    with ProgressReporter("sampling patches", len(cases), log) as bar:
        if num_processes <= 1:
            for case_id in cases:
                rows[case_id] = _sample_and_write(str(source.root), str(out), case_id, config)
                bar.item(f"sampled {case_id} ({len(rows)}/{len(cases)})")
        else:
            with ProcessPoolExecutor(max_workers=num_processes) as pool:
                futures = {
                    pool.submit(_sample_and_write, str(source.root), str(out), c, config): c
                    for c in cases
                }
                for fut in as_completed(futures):
                    rows[futures[fut]] = fut.result()
                    bar.item(f"sampled {futures[fut]} ({len(rows)}/{len(cases)})")
    all_rows = [r for c in cases for r in rows[c]]
    if not all_rows:
        raise VoxsegError(f"{source.root}: no patch could be drawn (centerlines outside images?)")
    write_dataset_json(
        out,
        channel_names=dict(source.info.channel_names),
        labels={"background": 0, "vessel": 1},
        num_training=len(all_rows),
        file_ending=source.file_ending,
        name=f"{source.name}_patches",
        description=f"centerline-guided patches of {source.name} (voxseg vessels sample)",
    )
    if len(cases) >= 2:
        groups = {r["patch"]: r["case"] for r in all_rows}
        folds = kfold_splits(list(groups), min(config.num_folds, len(cases)), config.seed, groups)
        write_json(out / "splits.json", folds)
    write_json(out / "sampler.json", {"source": str(source.root), **config.model_dump()})
    _write_csv(out / PATCH_STATS, all_rows)
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _arc(pts: np.ndarray) -> np.ndarray:
    return np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]


def _normals(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane normal to ``t``."""
    helper = np.array([1.0, 0, 0]) if abs(t[0]) < 0.9 else np.array([0, 1.0, 0])
    u = np.cross(t, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(t, u)


def is_patch_dataset(root: str | os.PathLike[str]) -> bool:
    """Does ``root`` hold a centerline patch dataset (its ``patch_stats.csv``)?"""
    return (Path(root) / PATCH_STATS).is_file()


def local_patch_size(
    root: str | os.PathLike[str],
    spacing: list[float] | tuple[float, ...],
    percentile: float = LOCAL_PATCH_PERCENTILE,
    multiple: int = 4,
    min_voxels: int = 8,
) -> list[int]:
    """The local model's patch (voxels at ``spacing``, z y x) for the patch dataset ``root``.

    Each sampled box has side ``size·r`` (``r`` the centerline radius at its point, ``size``
    ~ N(size_mean, size_std), SeqSeg's 5 ± 0.8), and the tracer asks the model for boxes of
    ``box_scale·r`` (5·r). The patch holds the ``percentile`` (90th) of the sampled sides in
    mm, rounded up to a multiple of ``multiple`` voxels (at least ``min_voxels``), so the
    model sees whole cross-sections of all but the largest vessels. The planner's own rule
    (the median patch shape) gives the median box: with radii of a few voxels that is about
    10³, too small to hold the larger vessels the tracer boxes around.
    """
    path = Path(root) / PATCH_STATS
    if not path.is_file():
        raise VoxsegError(f"{path}: not found; is {root} a patch dataset (voxseg vessels sample)?")
    with open(path, newline="") as f:
        sides = [float(row["side_mm"]) for row in csv.DictReader(f)]
    if not sides:
        raise VoxsegError(f"{path}: no patches")
    side = float(np.percentile(sides, percentile))
    voxels = side / np.asarray(spacing, dtype=float)
    return [int(max(min_voxels, multiple * np.ceil(v / multiple))) for v in voxels]
