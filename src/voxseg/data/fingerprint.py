"""The dataset fingerprint: what planning needs to know about a raw dataset.

Per case: shape, spacing, orientation code, shape after crop-to-nonzero, label voxel
counts and volumes, and the volume of every connected object of each label (what the planner
compares with a configuration's voxel to find structures too small for it). Per channel:
foreground intensity statistics (mean, std, min, max, percentiles 0.5 / 99.5) from a bounded
random sample of foreground voxels — nnU-Net v2 samples 1e7 voxels in total, spread evenly
over the labelled cases.

Computed in parallel over cases and cached as ``preprocessed/<dataset>/fingerprint.json``;
the cache is reused while every raw file keeps its size and modification time.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, Field

from voxseg.config import load_model, write_json
from voxseg.data.dataset import Case, Dataset
from voxseg.errors import VoxsegError

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = 4
#: object volumes kept per label and case (the largest; a label of speckles keeps these)
MAX_OBJECTS_PER_LABEL = 1000
DEFAULT_SAMPLES_TOTAL = 10_000_000

R = TypeVar("R")


class ChannelStats(BaseModel):
    """Foreground intensity statistics of one channel over the whole dataset."""

    mean: float
    std: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float
    num_samples: int


class CaseFingerprint(BaseModel):
    case_id: str
    shape: list[int]
    spacing: list[float]
    orientation: str
    direction: list[list[float]] = Field(description="direction matrix (columns: array axes)")
    shape_after_crop: list[int]
    label_voxels: dict[str, int] = Field(default_factory=dict, description="label value → count")
    label_volumes_mm3: dict[str, float] = Field(
        default_factory=dict, description="label value → volume (area in mm² for 2D images)"
    )
    label_object_volumes_mm3: dict[str, list[float]] = Field(
        default_factory=dict,
        description="label value → volume of each connected object (26-connected; in 2D "
        "8-connected areas in mm²), largest first, at most MAX_OBJECTS_PER_LABEL",
    )
    label_centroids: dict[str, list[float]] = Field(
        default_factory=dict,
        description="label value → centroid per array axis inside the nonzero box, "
        "-1 (first voxel) … +1 (last voxel); 0 for an axis of length 1",
    )
    label_object_hosts: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="label value → {host label value: number of its objects}: an object's "
        "host is the most common label in the one-voxel shell around it (0: background)",
    )


class Fingerprint(BaseModel):
    """Cached per dataset; ``sources`` (file → [size, mtime_ns]) detects raw data changes."""

    version: int = FINGERPRINT_VERSION
    dataset: str
    num_channels: int
    samples_total: int
    seed: int
    cases: list[CaseFingerprint]
    channels: list[ChannelStats | None]
    sources: dict[str, list[int]] = Field(default_factory=dict)

    @property
    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases], dtype=float)

    @property
    def is_2d(self) -> bool:
        """Every case is pseudo-3D (one slice)."""
        return all(c.shape[0] == 1 for c in self.cases)

    @property
    def median_relative_size_after_crop(self) -> float:
        """Median over cases of (voxels after crop) / (voxels before)."""
        return float(
            np.median([np.prod(c.shape_after_crop) / np.prod(c.shape) for c in self.cases])
        )


def source_stamps(dataset: Dataset) -> dict[str, list[int]]:
    """Size and modification time (ns) of every image and label file of the training cases."""
    out: dict[str, list[int]] = {}
    for path in [dataset.root / "dataset.json"] + [
        p for case in dataset.cases() for p in [*case.images, case.label] if p is not None
    ]:
        st = path.stat()
        out[str(path.relative_to(dataset.root))] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def fingerprint_case(
    dataset_root: str, case: Case, samples: int, seed: int
) -> tuple[CaseFingerprint, list[np.ndarray]]:
    """Fingerprint one case; also return up to ``samples`` foreground intensities per channel."""
    from voxseg.spatial.crop import nonzero_bbox
    from voxseg.spatial.orientation import orientation_code

    image, label = Dataset(dataset_root).load_case(case)
    seg = None if label is None else np.asarray(label.array)
    bbox = nonzero_bbox(image.array)
    spacing = np.asarray(image.spacing, dtype=float)
    voxel = float(np.prod(spacing[1:] if image.shape[0] == 1 else spacing))
    counts: dict[str, int] = {}
    centroids: dict[str, list[float]] = {}
    intensities: list[np.ndarray] = []
    if seg is not None:
        counts, centroids = label_counts_and_centroids(seg, bbox)
        foreground = seg > 0
        rng = np.random.default_rng(case_seed(case.case_id, seed))
        n_fg = int(foreground.sum())
        idx = np.flatnonzero(foreground)
        if n_fg and samples > 0:
            idx = rng.choice(idx, size=samples, replace=True)
        for c in range(image.num_channels):
            intensities.append(image.array[c].reshape(-1)[idx].astype(np.float32))
    fp = CaseFingerprint(
        case_id=case.case_id,
        shape=list(image.shape),
        spacing=[float(s) for s in spacing],
        orientation=orientation_code(image.direction),
        direction=np.asarray(image.direction, dtype=float).tolist(),
        shape_after_crop=[int(b - a) for a, b in bbox],
        label_voxels=counts,
        label_volumes_mm3={k: v * voxel for k, v in counts.items()},
        label_object_volumes_mm3=object_volumes(seg, voxel) if seg is not None else {},
        label_centroids=centroids,
        label_object_hosts=object_hosts(seg) if seg is not None else {},
    )
    return fp, intensities


def label_counts_and_centroids(
    seg: np.ndarray, bbox: Sequence[tuple[int, int]]
) -> tuple[dict[str, int], dict[str, list[float]]]:
    """Voxels per label value present, and the centroid of every nonzero label per array
    axis, scaled to -1 … +1 across ``bbox``.

    One pass of small ``bincount`` calls per z slice (no sort as in ``np.unique``, no index
    grids the size of the volume): label counts along z, y and x accumulate as projections.
    """
    seg = np.asarray(seg)
    if seg.size == 0:
        return {}, {}
    if not np.issubdtype(seg.dtype, np.integer):
        seg = seg.astype(np.int64)
    offset = int(seg.min())
    n = int(seg.max()) - offset + 1
    nz, ny, nx = seg.shape
    proj = [np.zeros((n, nz)), np.zeros((n, ny)), np.zeros((n, nx))]
    yy = np.repeat(np.arange(ny), nx)
    xx = np.tile(np.arange(nx), ny)
    for z in range(nz):
        s = seg[z].reshape(-1).astype(np.int64) - offset
        proj[0][:, z] = np.bincount(s, minlength=n)
        proj[1] += np.bincount(s * ny + yy, minlength=n * ny).reshape(n, ny)
        proj[2] += np.bincount(s * nx + xx, minlength=n * nx).reshape(n, nx)
    totals = proj[0].sum(axis=1)
    counts: dict[str, int] = {}
    centroids: dict[str, list[float]] = {}
    for i in np.flatnonzero(totals):
        value = int(i) + offset
        counts[str(value)] = int(totals[i])
        if value == 0:
            continue
        pos = []
        for a, (lo, hi) in enumerate(bbox):
            c = float(proj[a][i] @ np.arange(seg.shape[a])) / totals[i]
            half = (hi - lo - 1) / 2
            pos.append(0.0 if half <= 0 else float(np.clip((c - lo - half) / half, -1, 1)))
        centroids[str(value)] = pos
    return counts, centroids


def object_volumes(seg: np.ndarray, voxel_volume: float) -> dict[str, list[float]]:
    """Volume of every connected object (26-connected) of each nonzero label, largest first
    (at most ``MAX_OBJECTS_PER_LABEL``); each label is labelled inside its own bounding box."""
    from scipy import ndimage

    seg = np.asarray(seg)
    if not np.issubdtype(seg.dtype, np.integer):
        seg = seg.astype(np.int64)
    out: dict[str, list[float]] = {}
    structure = np.ones((3,) * seg.ndim, dtype=bool)
    for i, box in enumerate(ndimage.find_objects(seg), start=1):
        if box is None:
            continue
        objects, n = ndimage.label(seg[box] == i, structure=structure)
        sizes = np.sort(np.bincount(objects.ravel(), minlength=n + 1)[1:])[::-1]
        out[str(i)] = [round(float(v) * voxel_volume, 3) for v in sizes[:MAX_OBJECTS_PER_LABEL]]
    return out


def object_hosts(seg: np.ndarray) -> dict[str, dict[str, int]]:
    """For each nonzero label, how many of its connected objects (26-connected) sit in each
    host label: the most common value in the object's one-voxel shell (26-neighbourhood;
    ties: the smaller value; 0 is background). A lesion drawn inside an organ has that
    organ as its host; an organ in the body has 0. Shells of touching objects of one label
    count for the object with the larger number."""
    from scipy import ndimage

    seg = np.asarray(seg)
    if not np.issubdtype(seg.dtype, np.integer):
        seg = seg.astype(np.int64)
    structure = np.ones((3,) * seg.ndim, dtype=bool)
    out: dict[str, dict[str, int]] = {}
    for i, box in enumerate(ndimage.find_objects(seg), start=1):
        if box is None:
            continue
        grown = tuple(
            slice(max(0, s.start - 1), min(n, s.stop + 1))
            for s, n in zip(box, seg.shape, strict=True)
        )
        region = seg[grown].astype(np.int64)
        objects, n = ndimage.label(region == i, structure=structure)
        owner = ndimage.grey_dilation(objects, footprint=structure)
        shell = (objects == 0) & (owner > 0)
        top = int(region.max()) + 1
        pairs = np.bincount(owner[shell] * top + region[shell], minlength=(n + 1) * top)
        votes = pairs.reshape(n + 1, top)[1:]
        hosts = np.argmax(votes, axis=1)
        hosts[votes.sum(axis=1) == 0] = 0  # an object filling the whole image
        counts = np.bincount(hosts, minlength=top)
        out[str(i)] = {str(int(h)): int(c) for h, c in enumerate(counts) if c}
    return out


def case_seed(case_id: str, seed: int) -> list[int]:
    """A per-case random seed, stable across runs and processes (no ``hash()``)."""
    digest = hashlib.sha256(case_id.encode("utf-8")).digest()
    return [seed, int.from_bytes(digest[:8], "little")]


def channel_stats(values: np.ndarray) -> ChannelStats:
    """mean, std, min, max, p0.5, p99.5 of sampled intensities (float64 accumulation)."""
    v = values.astype(np.float64)
    lo, hi = np.percentile(v, [0.5, 99.5])
    return ChannelStats(
        mean=float(v.mean()),
        std=float(v.std()),
        min=float(v.min()),
        max=float(v.max()),
        percentile_00_5=float(lo),
        percentile_99_5=float(hi),
        num_samples=int(v.size),
    )


def compute_fingerprint(
    dataset: Dataset,
    *,
    num_processes: int = 1,
    samples_total: int = DEFAULT_SAMPLES_TOTAL,
    seed: int = 0,
) -> Fingerprint:
    """Fingerprint every training case (in parallel) and pool the channel statistics."""
    cases = dataset.cases()
    if not cases:
        raise VoxsegError(f"{dataset.root}: no training cases in imagesTr/")
    labelled = max(1, sum(c.label is not None for c in cases))
    per_case = samples_total // labelled
    results = map_with_progress(
        fingerprint_case,
        [(str(dataset.root), c, per_case, seed) for c in cases],
        num_processes=num_processes,
        description="fingerprint",
        names=[c.case_id for c in cases],
    )
    n_channels = dataset.info.num_channels
    pooled: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    for _, intensities in results:
        for c, values in enumerate(intensities):
            pooled[c].append(values)
    channels = [
        channel_stats(np.concatenate(p)) if p and sum(a.size for a in p) else None for p in pooled
    ]
    return Fingerprint(
        dataset=dataset.name,
        num_channels=n_channels,
        samples_total=samples_total,
        seed=seed,
        cases=[fp for fp, _ in results],
        channels=channels,
        sources=source_stamps(dataset),
    )


def fingerprint_path(preprocessed_dataset_dir: str | os.PathLike[str]) -> Path:
    return Path(preprocessed_dataset_dir) / "fingerprint.json"


def load_or_compute_fingerprint(
    dataset: Dataset,
    preprocessed_dataset_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    num_processes: int = 1,
    samples_total: int = DEFAULT_SAMPLES_TOTAL,
    seed: int = 0,
    validate: bool = True,
) -> Fingerprint:
    """The cached fingerprint when the raw files are unchanged, else a fresh one (cached)."""
    path = fingerprint_path(preprocessed_dataset_dir)
    if not force and path.is_file():
        cached = load_model(Fingerprint, path)
        if (
            cached.version == FINGERPRINT_VERSION
            and cached.samples_total == samples_total
            and cached.seed == seed
            and cached.sources == source_stamps(dataset)
        ):
            return cached
    if validate:
        from voxseg.data.check import ensure_valid

        ensure_valid(dataset.root, num_processes=num_processes)
    fp = compute_fingerprint(
        dataset,
        num_processes=num_processes,
        samples_total=samples_total,
        seed=seed,
    )
    write_json(path, fp)
    return fp


def map_with_progress(
    func: Callable[..., R],
    arguments: Sequence[tuple[Any, ...]],
    *,
    num_processes: int = 1,
    description: str = "",
    names: Sequence[str] | None = None,
) -> list[R]:
    """``[func(*a) for a in arguments]`` over a process pool, each item reported as it
    finishes (:class:`voxseg.progress.ProgressReporter`).

    Workers fork from a forkserver that imported ``func``'s module once (fast start, and
    safe with torch: the server never ran an OpenMP region); each worker gets
    ``cpu_count // workers`` torch threads.

    Results keep the order of ``arguments``. An exception in a worker is re-raised as a
    :class:`VoxsegError` naming the item (``names[i]``) that failed.
    """
    from voxseg.progress import ProgressReporter, note_step
    from voxseg.workers import worker_pool

    names = list(names) if names is not None else [str(i) for i in range(len(arguments))]
    results: list[Any] = [None] * len(arguments)
    total = len(arguments)
    note_step(f"{description}: 0 of {total} done")
    with ProgressReporter(description, total, log) as bar:
        if num_processes <= 1 or len(arguments) <= 1:
            for i, args in enumerate(arguments):
                note_step(f"{description} {names[i]} ({i + 1}/{total}), {i} done")
                results[i] = _call_named(func, names[i], args)
                bar.item(f"{description} {names[i]} ({i + 1}/{total})")
            return results
        workers = min(num_processes, len(arguments))
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([func.__module__])
        threads = max(1, (os.cpu_count() or 1) // workers)
        with worker_pool(
            workers, context=ctx, initializer=_init_worker, initargs=(threads,)
        ) as pool:
            futures = {
                pool.submit(_call_named, func, names[i], args): i
                for i, args in enumerate(arguments)
            }
            for done, fut in enumerate(as_completed(futures), 1):
                results[futures[fut]] = fut.result()
                bar.item(f"{description} {names[futures[fut]]} ({done}/{total})")
    return results


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _call_named(func: Callable[..., R], name: str, args: tuple[Any, ...]) -> R:
    try:
        return func(*args)
    except VoxsegError as exc:
        raise VoxsegError(f"{name}: {exc}") from exc
    except Exception as exc:
        raise VoxsegError(f"{name}: {type(exc).__name__}: {exc}") from exc


__all__ = [
    "CaseFingerprint",
    "ChannelStats",
    "Fingerprint",
    "compute_fingerprint",
    "fingerprint_case",
    "load_or_compute_fingerprint",
    "map_with_progress",
]
