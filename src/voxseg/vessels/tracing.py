"""Sequential vessel tracing from seed points (SeqSeg; Sveinsson Cepero et al. 2024).

Each step cuts a box of side ``box_scale``·r around the current point, asks a local
segmenter for the vessel probability, keeps the piece at the centre, finds its open ends
(caps), draws local centerlines from the entry cap to every other cap and takes the point
``next_point_fraction`` along each as a candidate. The candidate most aligned with the
current direction continues the branch, the others are queued as new branches. Local
probabilities are merged into the global volume by a Gaussian-weighted running average.
Every constant is a field of :class:`TracingConfig`; every step is a :class:`TraceStep`.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import edt
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from voxseg.errors import VoxsegError
from voxseg.io import Geometry, Image, release_pages
from voxseg.vessels.centerline import Centerline, components_at, extract_centerline
from voxseg.vessels.local import LocalResult, LocalSettings, analyse, component_at_centre
from voxseg.vessels.seeds import Seed
from voxseg.vessels.subvolume import Box, box_around, crop, sub_geometry

Segmenter = Callable[[Image], Image]


class TracingConfig(BaseModel):
    """Constants of the tracing loop (defaults: SeqSeg's, see ``reference.md``)."""

    model_config = ConfigDict(extra="forbid")

    box_scale: float = Field(5.0, gt=0, description="box side in radii (SeqSeg: 5)")
    min_box_voxels: int = Field(8, ge=3, description="fewest voxels per box side")
    max_box_voxels: int = Field(160, ge=8, description="most voxels per box side")
    threshold: float = Field(0.5, description="local probability → vessel")
    centre_tolerance: float = Field(
        1.0, ge=0, description="the local piece may start this many radii from the centre"
    )
    min_cap_voxels: int = Field(3, ge=1, description="smaller open ends are noise")
    next_point_fraction: float = Field(
        0.8, gt=0, le=1, description="next point this far along the local centerline (4/5)"
    )
    max_angle_deg: float = Field(
        135.0, description="candidates turning more than this from the direction are rejected"
    )
    radius_shrink_weight: float = Field(
        2 / 3, ge=0, le=1, description="a shrinking radius is blended: w·new + (1−w)·old"
    )
    max_radius_growth: float = Field(1.5, ge=1, description="radius grows at most ×this/step")
    min_radius_mm: float = Field(0.46, ge=0, description="a branch stops below this radius")
    max_steps_per_branch: int = Field(100, ge=1)
    max_steps_inside: int = Field(
        5, ge=1, description="a branch stops after this many steps inside other branches"
    )
    max_steps: int = Field(1000, ge=1, description="global step limit")
    max_branches: int = Field(100, ge=1, description="global branch limit")
    max_retries: int = Field(2, ge=0, description="retries with a larger, shifted box")
    retry_enlarge: float = Field(0.5, ge=0, description="box grows by this share per retry")
    retry_shift: float = Field(0.5, description="box moves forward by this many radii per retry")
    duplicate_distance: float = Field(
        1.0, ge=0, description="new branches closer than this many radii to traced ones are dropped"
    )
    assembly_sigma: float = Field(
        0.25, gt=0, description="Gaussian weight sigma as a share of the box side"
    )
    global_threshold: float = Field(0.5, description="merged probability → segmentation")
    path_penalty_scale: float = Field(1000.0, ge=0, description="TEASAR centring penalty")
    path_penalty_exponent: float = Field(8.0, ge=1)
    centerline: bool = Field(True, description="extract the global centerline at the end")
    both_ways: bool = Field(
        True,
        description="a seed with a direction is traced forwards, then backwards from the seed",
    )
    seed_search_mm: float = Field(
        16.0, gt=0, description="box side (mm) that estimates the radius of a seed without one"
    )
    min_steps: int = Field(3, ge=0, description="a trace with fewer successful steps is short")
    min_length_radii: float = Field(
        5.0, ge=0, description="a trace shorter than this many seed radii (largest seed) is short"
    )

    def local_settings(self) -> LocalSettings:
        return LocalSettings(
            threshold=self.threshold,
            centre_tolerance=self.centre_tolerance,
            min_cap_voxels=self.min_cap_voxels,
            next_point_fraction=self.next_point_fraction,
            max_angle_deg=self.max_angle_deg,
            path_penalty_scale=self.path_penalty_scale,
            path_penalty_exponent=self.path_penalty_exponent,
        )


@dataclass
class TraceStep:
    """One step of the loop, as written to ``steps.json``."""

    index: int
    branch: int
    step: int
    point: list[float]
    direction: list[float] | None
    radius: float
    box: list[list[int]] | None
    status: str
    reason: str = ""
    caps: int = 0
    candidates: int = 0
    attempt: int = 0


@dataclass
class BranchStart:
    """A queued branch: where it starts, and the branch and step it came from."""

    point: np.ndarray
    direction: np.ndarray | None
    radius: float
    parent: int = -1
    from_step: int = -1
    seed: int = -1
    backward: bool = False


@dataclass
class TraceResult:
    """The trace on the image's grid ``geometry``: segmentation (uint8) and probability
    (float32) of the traced ``region`` (the index box the local boxes reached; ``None``
    when no box found a vessel, then both are all zeros), the step log and the centerline.
    :attr:`segmentation` and :attr:`probabilities` give them on the whole grid."""

    geometry: Geometry
    region: Box | None
    region_segmentation: np.ndarray
    region_probabilities: np.ndarray
    steps: list[TraceStep]
    seeds: list[Seed]
    config: TracingConfig
    centerline: Centerline | None = None
    seconds: float = 0.0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def region_lo(self) -> tuple[int, int, int]:
        """The traced region's first index (the origin when nothing was traced)."""
        return (0, 0, 0) if self.region is None else tuple(self.region.lo)

    @property
    def segmentation(self) -> Image:
        return self._on_grid(self.region_segmentation)

    @property
    def probabilities(self) -> Image:
        return self._on_grid(self.region_probabilities)

    def _on_grid(self, block: np.ndarray) -> Image:
        full = np.zeros(self.geometry.shape, block.dtype)
        if self.region is not None:
            full[self.region.slices] = block
        return Image.from_geometry(full, self.geometry)

    @property
    def num_branches(self) -> int:
        return len({s.branch for s in self.steps})

    @property
    def length(self) -> float:
        """Traced length (mm): the distance between successive points of every branch."""
        return _trace_length(self.steps)

    def branch_ends(self) -> list[dict[str, Any]]:
        """Per branch: its successful steps and why it stopped."""
        return _branch_ends(self.steps)

    def steps_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "num_steps": len(self.steps),
            "num_branches": self.num_branches,
            "length_mm": round(self.length, 3),
            "warnings": self.warnings,
            "branch_ends": self.branch_ends(),
            "config": self.config.model_dump(mode="json"),
            "seeds": [
                {
                    "point": s.point.tolist(),
                    "direction": None if s.direction is None else s.direction.tolist(),
                    "radius": s.radius,
                }
                for s in self.seeds
            ],
            "steps": [asdict(s) for s in self.steps],
            "skipped_branches": self.skipped,
        }

    def write(
        self, out: str | os.PathLike[str], file_ending: str = ".nii.gz", image: Image | None = None
    ) -> Path:
        """Write every output into the folder ``out`` (see :mod:`voxseg.vessels.outputs`);
        ``image`` (the traced image) is the background of the overview picture."""
        from voxseg.vessels.outputs import write_trace

        return write_trace(self, out, file_ending, image)

    def write_labels(self, path: str | os.PathLike[str], value: int = 1) -> Path:
        """The segmentation as a label map (the vessel as ``value``) on the image's grid."""
        from voxseg.vessels.outputs import write_label_map

        return write_label_map(self, path, value)


class _Assembly:
    """Gaussian-weighted running average of local probabilities over the global grid, kept
    in blocks of ``block``³ voxels allocated where boxes land: a tree in a large field of
    view touches a small part of it (a dense pair of float32 volumes was 8 bytes per voxel
    of the field)."""

    def __init__(self, shape: tuple[int, int, int], sigma_share: float, block: int = 32) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.sigma_share = sigma_share
        self.block = block
        self.blocks: dict[tuple[int, ...], np.ndarray] = {}  # [sum, weight] per block

    def add(self, prob: np.ndarray, box: Box, centre_index: np.ndarray, spacing) -> None:
        size = np.asarray(box.size)
        sigma = self.sigma_share * size * np.asarray(spacing)
        axes = [
            np.exp(-(((np.arange(lo, hi) - c) * s) ** 2) / (2 * sg**2))
            for lo, hi, c, s, sg in zip(box.lo, box.hi, centre_index, spacing, sigma, strict=True)
        ]
        w = (axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]).astype(
            np.float32
        )
        wp = w * prob
        lo, hi, b = np.asarray(box.lo), np.asarray(box.hi), self.block
        for key in itertools.product(
            *(range(a // b, (z - 1) // b + 1) for a, z in zip(lo, hi, strict=True))
        ):
            start = np.asarray(key) * b
            block = self.blocks.get(key)
            if block is None:
                block = self.blocks[key] = np.zeros((2, b, b, b), dtype=np.float32)
            a, z = np.maximum(lo, start), np.minimum(hi, start + b)
            src, dst = _slices(a, z, lo), _slices(a, z, start)
            block[0][dst] += wp[src]
            block[1][dst] += w[src]

    def region(self) -> Box | None:
        """The index box of the blocks in use (clipped to the grid); None before any box."""
        if not self.blocks:
            return None
        keys = np.asarray(list(self.blocks))
        lo = keys.min(axis=0) * self.block
        hi = np.minimum((keys.max(axis=0) + 1) * self.block, self.shape)
        return Box(tuple(int(v) for v in lo), tuple(int(v) for v in hi), self.shape)

    def probabilities(self, region: Box | None = None, release: bool = False) -> np.ndarray:
        """The averaged probability on ``region`` (default: the whole grid); 0 where no box
        reached. ``release`` empties the assembly block by block as they are read (its blocks
        hold two values per voxel they cover; the result's pages fill as they go)."""
        if region is None:
            region = Box((0, 0, 0), self.shape, self.shape)
        out = np.zeros(region.size, dtype=np.float32)
        rlo, rhi, b = np.asarray(region.lo), np.asarray(region.hi), self.block
        for key in list(self.blocks):
            block = self.blocks.pop(key) if release else self.blocks[key]
            start = np.asarray(key) * b
            a, z = np.maximum(rlo, start), np.minimum(rhi, start + b)
            if np.any(z <= a):
                continue
            src, dst = _slices(a, z, start), _slices(a, z, rlo)
            total, weight = block[0][src], block[1][src]
            np.divide(total, weight, out=out[dst], where=weight > 0)
        return out


def _slices(lo: np.ndarray, hi: np.ndarray, origin: np.ndarray) -> tuple[slice, ...]:
    """Index slices of ``[lo, hi)`` in an array whose first voxel is ``origin``."""
    return tuple(slice(int(a - o), int(z - o)) for a, z, o in zip(lo, hi, origin, strict=True))


class _Tubes:
    """Traced points with radii and branch ids, for the "inside traced vessel" rules."""

    def __init__(self) -> None:
        self.points: list[np.ndarray] = []
        self.radii: list[float] = []
        self.branch: list[int] = []

    def add(self, point: np.ndarray, radius: float, branch: int) -> None:
        self.points.append(point)
        self.radii.append(radius)
        self.branch.append(branch)

    def inside(self, point: np.ndarray, exclude: Sequence[int] = (), scale: float = 1.0) -> bool:
        if not self.points:
            return False
        pts = np.asarray(self.points)
        keep = ~np.isin(np.asarray(self.branch), list(exclude))
        d = np.linalg.norm(pts[keep] - point, axis=1)
        return bool(np.any(d < scale * np.asarray(self.radii)[keep]))


def trace(
    image: Image,
    seeds: Sequence[Seed],
    segmenter: Segmenter,
    config: TracingConfig | None = None,
    progress: Callable[[TraceStep], None] | None = None,
) -> TraceResult:
    """Trace the vessel tree reachable from ``seeds`` in ``image`` (``[z, y, x]`` or
    ``[c, z, y, x]``) with ``segmenter`` (``Image -> probability Image``)."""
    cfg = config or TracingConfig()
    settings = cfg.local_settings()
    if not seeds:
        raise VoxsegError("tracing needs at least one seed")
    t0 = time.perf_counter()
    geometry = image.geometry
    spacing = np.asarray(geometry.spacing)
    _check_seeds_in_image(seeds, geometry)
    seeds = [_with_radius(i, s, image, segmenter, cfg) for i, s in enumerate(seeds)]
    assembly = _Assembly(geometry.shape, cfg.assembly_sigma)
    tubes = _Tubes()
    steps: list[TraceStep] = []
    skipped: list[dict[str, Any]] = []
    queue: deque[BranchStart] = deque(
        BranchStart(s.point, s.direction, float(s.radius), seed=i) for i, s in enumerate(seeds)
    )
    queued_points: list[tuple[np.ndarray, float]] = []
    n_branches = 0

    def log(**kw: Any) -> TraceStep:
        step = TraceStep(index=len(steps), **kw)
        steps.append(step)
        if progress is not None:
            progress(step)
        return step

    while queue and len(steps) < cfg.max_steps and n_branches < cfg.max_branches:
        start = queue.popleft()
        if start.parent >= 0 and tubes.inside(start.point, exclude=[start.parent]):
            skipped.append({"point": start.point.tolist(), "reason": "inside a traced branch"})
            continue
        branch = n_branches
        n_branches += 1
        point, direction, radius = start.point, start.direction, start.radius
        inside_count = 0
        first_step = len(steps)
        if cfg.both_ways and start.seed >= 0 and not start.backward and direction is not None:
            backward = BranchStart(point, -direction, radius, branch, first_step, start.seed, True)
        else:
            backward = None
        for k in range(cfg.max_steps_per_branch + 1):
            base = {
                "branch": branch,
                "step": k,
                "point": _round(point),
                "direction": None if direction is None else _round(direction),
                "radius": round(float(radius), 4),
            }
            stop = _stop_before_step(cfg, steps, k, radius)
            if stop:
                log(box=None, status="stopped", reason=stop, **base)
                break
            local, box, attempt = _local_step(
                image, point, direction, radius, segmenter, cfg, settings
            )
            if box is None:
                log(box=None, status="stopped", reason="point outside the image", **base)
                break
            if k == 0 and start.seed >= 0 and not start.backward and not local.found_vessel:
                raise VoxsegError(_no_vessel_at_seed(start.seed, seeds[start.seed], cfg, local))
            if local.found_vessel:
                centre = geometry.physical_to_index(point)
                prob = np.where(local.component, local.probability, 0.0)
                assembly.add(prob.astype(np.float32), box, centre, spacing)
                tubes.add(point, radius, branch)
            record = {
                "box": box.to_list(),
                "caps": len(local.caps),
                "candidates": len(local.candidates),
                "attempt": attempt,
            }
            if not local.candidates:
                log(status="stopped", reason=local.reason or "no candidate", **record, **base)
                break
            first, others = local.candidates[0], local.candidates[1:]
            for cand in others:
                if n_branches + len(queue) >= cfg.max_branches:
                    break
                if cand.on_image_border or cand.radius < cfg.min_radius_mm:
                    continue
                near_queued = any(
                    np.linalg.norm(cand.point - q) < cfg.duplicate_distance * max(r, cand.radius)
                    for q, r in queued_points
                )
                if near_queued or tubes.inside(cand.point, scale=cfg.duplicate_distance):
                    continue
                new_r = _next_radius(radius, cand.radius, cfg)
                queue.append(BranchStart(cand.point, cand.direction, new_r, branch, len(steps)))
                queued_points.append((cand.point, new_r))
            if first.on_image_border:
                log(status="stopped", reason="reached the image border", **record, **base)
                break
            inside_count = inside_count + 1 if tubes.inside(first.point, [branch]) else 0
            if inside_count >= cfg.max_steps_inside:
                log(status="stopped", reason="inside an already traced branch", **record, **base)
                break
            log(status="ok", **record, **base)
            point, direction = first.point, first.direction
            radius = _next_radius(radius, first.radius, cfg)
        if backward is not None:
            queue.appendleft(backward)

    # Post-processing on the part of the grid the boxes reached only (a tree in a large
    # field of view reaches a part of it); the outputs are written from that part.
    region = assembly.region()
    prob = np.zeros((0, 0, 0), dtype=np.float32)
    seg = np.zeros((0, 0, 0), dtype=np.uint8)
    centerline = None
    if region is not None:
        local = sub_geometry(geometry, region)
        prob = assembly.probabilities(region, release=True)
        del assembly
        seg = _keep_seeded(prob >= cfg.global_threshold, local, seeds, tubes).view(np.uint8)
        if cfg.centerline and seg.any():
            centerline = extract_centerline(Image.from_geometry(seg, local), root=seeds[0].point)
            centerline.geometry = geometry
    return TraceResult(
        geometry=geometry,
        region=region,
        region_segmentation=seg,
        region_probabilities=prob,
        steps=steps,
        seeds=list(seeds),
        config=cfg,
        centerline=centerline,
        seconds=time.perf_counter() - t0,
        skipped=skipped,
        warnings=short_trace_warnings(steps, seeds, cfg),
    )


#: Reasons a branch ends that describe the vessel (it ends, leaves the image, joins a traced
#: branch or becomes thinner than the minimum); any other reason is a failure to follow it.
NATURAL_ENDS = (
    "dead end",
    "reached the image border",
    "inside an already traced branch",
    "radius",
)


def short_trace_warnings(
    steps: Sequence[TraceStep], seeds: Sequence[Seed], cfg: TracingConfig
) -> list[str]:
    """Why a trace looks short: fewer than ``min_steps`` successful steps, less length than
    ``min_length_radii`` seed radii, or every branch stopped by the same failure (not one of
    :data:`NATURAL_ENDS`). Each message lists every branch's steps and reason."""
    ends = _branch_ends(steps)
    ok = sum(s.status == "ok" for s in steps)
    length = _trace_length(steps)
    min_length = cfg.min_length_radii * max((s.radius for s in seeds), default=0.0)
    problems = []
    if ok < cfg.min_steps:
        problems.append(f"{ok} successful step(s), fewer than min_steps={cfg.min_steps}")
    if length < min_length:
        problems.append(
            f"traced length {length:.1f} mm, less than {cfg.min_length_radii:g} seed radii "
            f"({min_length:.1f} mm)"
        )
    reasons = {e["reason"] for e in ends}
    if len(reasons) == 1 and not next(iter(reasons)).startswith(NATURAL_ENDS):
        problems.append(f"every branch stopped for the same reason: {next(iter(reasons))}")
    if not problems:
        return []
    detail = "; ".join(f"branch {e['branch']}: {e['steps']} step(s), {e['reason']}" for e in ends)
    return [f"short trace: {'; '.join(problems)} ({detail})"]


def _branch_ends(steps: Sequence[TraceStep]) -> list[dict[str, Any]]:
    ends: dict[int, dict[str, Any]] = {}
    for s in steps:
        end = ends.setdefault(s.branch, {"branch": s.branch, "steps": 0, "reason": ""})
        end["steps"] += s.status == "ok"
        if s.status != "ok":
            end["reason"] = s.reason
    for end in ends.values():
        end["reason"] = end["reason"] or "trace limit reached"
    return list(ends.values())


def _trace_length(steps: Sequence[TraceStep]) -> float:
    by_branch: dict[int, list[list[float]]] = {}
    for s in steps:
        by_branch.setdefault(s.branch, []).append(s.point)
    return float(
        sum(
            np.linalg.norm(np.diff(np.asarray(p), axis=0), axis=1).sum() for p in by_branch.values()
        )
    )


def _check_seeds_in_image(seeds: Sequence[Seed], geometry) -> None:
    shape = np.asarray(geometry.shape)
    for i, s in enumerate(seeds):
        idx = geometry.physical_to_index(s.point)
        if np.any(idx < -0.5) or np.any(idx > shape - 0.5):
            lo = geometry.index_to_physical(np.zeros(3))
            hi = geometry.index_to_physical(shape - 1.0)
            raise VoxsegError(
                f"seed {i} at {_mm(s.point)} lies outside the image (voxel {_mm(idx, '')}, "
                f"grid {tuple(int(n) for n in shape)}, corners {_mm(lo)} and {_mm(hi)}); "
                "seeds are LPS millimetres, as 3D Slicer's markups (RAS) with x and y negated"
            )


def _with_radius(
    i: int, seed: Seed, image: Image, segmenter: Segmenter, cfg: TracingConfig
) -> Seed:
    """``seed`` with a radius: its own, else the largest inscribed radius of the local
    segmentation near the seed (within the wall distance at the seed, which reaches the
    vessel axis for a seed in the inner half of the lumen). The search box doubles while the
    vessel fills it."""
    if seed.radius is not None:
        return seed
    from voxseg.vessels.centerline import inscribed_radius

    geometry = image.geometry
    spacing = np.asarray(geometry.spacing)
    side = cfg.seed_search_mm
    for _ in range(4):
        box = box_around(geometry, seed.point, side, cfg.min_box_voxels, cfg.max_box_voxels)
        assert box is not None  # the seed lies in the image (checked before)
        sub = crop(image, box)
        release_pages(image.array)
        prob = segmenter(sub)
        mask = np.asarray(prob.array) >= cfg.threshold
        component = component_at_centre(mask, prob.geometry, seed.point, float(spacing.max()))
        if component is None:
            raise VoxsegError(
                f"seed {i} at {_mm(seed.point)}: no vessel at the seed in the local "
                f"segmentation of a {side:.0f} mm box ({int(mask.sum())} vessel voxel(s) "
                "elsewhere in it); put the seed inside the vessel lumen"
            )
        dist = edt.edt(component, anisotropy=tuple(spacing), parallel=1)
        idx = np.argwhere(component)
        d = np.linalg.norm(prob.geometry.index_to_physical(idx) - seed.point, axis=1)
        wall = float(dist[tuple(idx[int(np.argmin(d))])])
        near = idx[d <= max(wall, float(spacing.max()))]
        best = near[int(np.argmax(dist[tuple(near.T)]))]
        radius = float(inscribed_radius(dist, best[None].astype(float), spacing)[0])
        grown = max(box.size) >= cfg.max_box_voxels
        if cfg.box_scale * radius < 0.8 * side or grown:
            return Seed(seed.point, radius, seed.direction)
        side *= 2.0
    return Seed(seed.point, radius, seed.direction)


def _no_vessel_at_seed(i: int, seed: Seed, cfg: TracingConfig, local: LocalResult) -> str:
    found = 0 if local.probability is None else int((local.probability >= cfg.threshold).sum())
    tolerance = cfg.centre_tolerance * seed.radius
    return (
        f"seed {i} at {_mm(seed.point)}: no vessel within {tolerance:.2g} mm "
        f"(centre_tolerance {cfg.centre_tolerance:g} x radius {seed.radius:g} mm) of the seed; "
        f"the local segmentation marks {found} voxel(s) of its box as vessel. Put the seed "
        "inside the vessel lumen (or give a larger radius)"
    )


def _mm(v: np.ndarray, unit: str = " mm") -> str:
    return "(" + ", ".join(f"{float(x):.1f}" for x in v) + ")" + unit


def _stop_before_step(cfg: TracingConfig, steps: list[TraceStep], k: int, radius: float) -> str:
    if len(steps) >= cfg.max_steps:
        return "global step limit reached"
    if k >= cfg.max_steps_per_branch:
        return "step limit of the branch reached"
    if radius < cfg.min_radius_mm:
        return f"radius {radius:.3g} mm below the minimum {cfg.min_radius_mm} mm"
    return ""


def _local_step(
    image: Image,
    point: np.ndarray,
    direction: np.ndarray | None,
    radius: float,
    segmenter: Segmenter,
    cfg: TracingConfig,
    settings: LocalSettings,
) -> tuple[LocalResult, Box | None, int]:
    """Segment and analyse the box at ``point``; on failure retry with a larger box moved
    forward (``retry_enlarge``, ``retry_shift``)."""
    geometry = image.geometry
    local: LocalResult | None = None
    box = None
    for attempt in range(cfg.max_retries + 1):
        centre = point
        if attempt and direction is not None:
            centre = point + cfg.retry_shift * attempt * radius * direction
        side = cfg.box_scale * radius * (1.0 + cfg.retry_enlarge * attempt)
        box = box_around(geometry, centre, side, cfg.min_box_voxels, cfg.max_box_voxels)
        if box is None:
            if attempt == 0:
                return LocalResult(None, [], None, [], "point outside the image"), None, 0
            continue
        sub = crop(image, box)
        release_pages(image.array)  # a disk-backed image keeps no pages a box has read
        prob = segmenter(sub)
        local = analyse(prob, box, point, direction, radius, settings)
        if local.candidates:
            return local, box, attempt
    assert local is not None and box is not None
    return local, box, cfg.max_retries


def _next_radius(old: float, new: float, cfg: TracingConfig) -> float:
    """SeqSeg's radius update: blend when shrinking, bounded growth otherwise."""
    if new < old:
        return cfg.radius_shrink_weight * new + (1.0 - cfg.radius_shrink_weight) * old
    return min(new, cfg.max_radius_growth * old)


def _keep_seeded(seg: np.ndarray, geometry, seeds: Sequence[Seed], tubes: _Tubes) -> np.ndarray:
    """Keep the components touching a seed (its ball), else those holding a traced point;
    ``seg`` (bool) is overwritten with the result."""
    if not seg.any():
        return seg
    shape = np.asarray(seg.shape)
    keep = np.concatenate([_ball(geometry, s.point, s.radius) for s in seeds])
    if not seg[tuple(keep.T)].any() and tubes.points:
        idx = np.round(geometry.physical_to_index(np.asarray(tubes.points))).astype(int)
        keep = idx[np.all((idx >= 0) & (idx < shape), axis=1)]
    if not len(keep) or not seg[tuple(keep.T)].any():
        seg[...] = False
        return seg
    return components_at(seg, keep, out=seg)


def _ball(geometry, centre: np.ndarray, radius: float) -> np.ndarray:
    """Indices ``(n, 3)`` of the grid's voxels within ``radius`` (at least one voxel) of
    ``centre``."""
    box = box_around(geometry, centre, 2 * radius, 1)
    if box is None:
        return np.zeros((0, 3), dtype=int)
    idx = np.argwhere(np.ones(box.size, dtype=bool)) + np.asarray(box.lo)
    inside = np.linalg.norm(geometry.index_to_physical(idx) - centre, axis=1) <= max(
        radius, float(np.max(geometry.spacing))
    )
    return idx[inside]


def _round(v: np.ndarray) -> list[float]:
    return [round(float(x), 4) for x in v]
