"""The planner: from a fingerprint to a :class:`Plans` (nnU-Net v2's rules, device-aware).

Dataset rules (orientation, target spacing, pooling, normalisation, mirroring, batch Dice)
live here; what a configuration may cost on its device (GPU memory or CPU FLOPs per
iteration, the batch that fills it, the low-resolution stage's budget) is the
:class:`~voxseg.planning.budget.DeviceStrategy` of the device kind (``planning/budget.py``).
Each configuration's patch starts at 256³ (2D: 2048²) voxels with aspect 1/spacing, is
clipped to the median shape and shrinks, one divisibility step along the axis largest
relative to the median shape, until it fits the strategy's budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from voxseg import __version__
from voxseg.data.dataset import DatasetInfo
from voxseg.data.fingerprint import CaseFingerprint, Fingerprint
from voxseg.errors import VoxsegError
from voxseg.nets.topology import Topology
from voxseg.normalization import MASKABLE, scheme_for_channel
from voxseg.planning import rules
from voxseg.planning.budget import (
    BF16_CPU_BUDGET_FACTOR,
    CPU_GFLOPS,
    FLOAT32_CPU_LOWRES_FACTOR,
    LOWRES_FULL_BUDGET_SECONDS,
    LOWRES_THRESHOLD,
    PROFILES,
    Channels,
    CpuStrategy,
    DeviceStrategy,
    GpuStrategy,
)
from voxseg.planning.memory import gpu_training_bytes, training_flops
from voxseg.planning.plans import ChannelNormalization, ConfigurationPlan, Plans

#: nnU-Net's low-resolution stage coarsens the spacing in 3 % steps.
LOWRES_SPACING_STEP = 1.03
#: Crop-to-nonzero must shrink the median image by at least this share for the z-score to
#: be computed inside the nonzero mask (nnU-Net: relative size < 3/4).
MASK_NORM_SHRINK = 0.25
#: Lateralised labels (see :func:`lateralised_axes`).
LATERAL_OFFSET = 0.2
LATERAL_AGREEMENT = 0.9
LATERAL_MIN_CASES = 3


class PlannerOptions(BaseModel):
    """User choices for planning (``voxseg plan`` flags)."""

    plan_name: str = "default"
    device: Literal["cuda", "cpu"] = "cuda"
    gpu_memory_gb: float = Field(8.0, gt=0)
    cpu_gflops_per_iteration: float = Field(
        CPU_GFLOPS, gt=0, description="CPU plans: training GFLOPs per iteration at batch 2"
    )
    cpu_lowres_gflops_per_iteration: float | None = Field(
        None,
        gt=0,
        description="CPU plans: the budget of the whole-image 3d_lowres; default "
        f"{BF16_CPU_BUDGET_FACTOR:g}× cpu_gflops_per_iteration on a CPU with hardware bf16 "
        f"(AMX), else {FLOAT32_CPU_LOWRES_FACTOR:g}×",
    )
    training_seconds: float | None = Field(
        None,
        gt=0,
        description="CPU plans: how long the training will be (voxseg auto knows); a shorter "
        f"one than {LOWRES_FULL_BUDGET_SECONDS:g} s gets a proportionally cheaper whole-image "
        "3d_lowres, never below cpu_gflops_per_iteration",
    )
    orientation: str | None = None
    spacing: list[float] | None = Field(None, description="override of the 3D target spacing")
    patch_size: list[int] | None = Field(None, description="override: 3 values 3D, 2 values 2D")
    network: str = "unet"
    base_features: int | None = Field(
        None, ge=1, description="override of the device's first-stage feature count"
    )


def default_device() -> Literal["cuda", "cpu"]:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_strategy(options: PlannerOptions) -> DeviceStrategy:
    """The budget strategy of ``options.device`` with the user's budget and width."""
    profile = PROFILES[options.device]
    if options.base_features is not None:
        profile = profile.model_copy(
            update={"base_features": options.base_features, "base_features_2d": None}
        )
    if options.device == "cuda":
        return GpuStrategy(profile, gpu_memory_gb=options.gpu_memory_gb)
    return CpuStrategy(
        profile,
        gflops=options.cpu_gflops_per_iteration,
        lowres_gflops=options.cpu_lowres_gflops_per_iteration,
        training_seconds=options.training_seconds,
        fixed_width=options.base_features is not None,
    )


def oriented_cases(fingerprint: Fingerprint, code: str | None) -> list[CaseFingerprint]:
    """Case fingerprints with shapes and spacings as they will be after reorientation."""
    if code is None:
        return list(fingerprint.cases)
    from voxseg.io.image import Image
    from voxseg.spatial.orientation import reorient

    out = []
    for case in fingerprint.cases:
        probe = Image(np.zeros((2, 3, 4), np.uint8), case.spacing, (0, 0, 0), case.direction)
        moved, reorientation = reorient(probe, code)
        perm = list(reorientation.transpose)
        flip = list(reorientation.flip)
        centroids = {
            k: [-v[p] if f else v[p] for p, f in zip(perm, flip, strict=True)]
            for k, v in case.label_centroids.items()
        }
        out.append(
            case.model_copy(
                update={
                    "shape": [case.shape[p] for p in perm],
                    "shape_after_crop": [case.shape_after_crop[p] for p in perm],
                    "spacing": list(moved.spacing),
                    "orientation": code,
                    "label_centroids": centroids,
                }
            )
        )
    return out


def choose_orientation(fingerprint: Fingerprint, requested: str | None) -> tuple[str | None, str]:
    """The canonical orientation and its rule: the user's code; ``none`` keeps every case as
    stored; by default, cases stored in several orientations are all reoriented to the most
    common one, so each array axis means the same anatomy in every case (nnU-Net assumes
    this silently; a permuted case then trains as if rotated)."""
    if requested is not None and requested.lower() == "none":
        return None, "cases are used in their stored orientation (--orientation none)"
    if requested:
        return requested, f"every case is reoriented to {requested} first (--orientation)"
    codes = [c.orientation for c in fingerprint.cases]
    counts = {c: codes.count(c) for c in sorted(set(codes))}
    if len(counts) <= 1:
        only = codes[0] if codes else "?"
        return None, f"all cases share one orientation ({only}); kept as stored"
    code = max(counts, key=lambda c: (counts[c], c))
    listed = ", ".join(f"{c}: {n}" for c, n in counts.items())
    return code, (
        f"cases come in {len(counts)} orientations ({listed}); every case is reoriented "
        f"to the most common, {code}, so each array axis means the same anatomy "
        f"(--orientation CODE or none overrides)"
    )


def lateralised_axes(cases: list[CaseFingerprint]) -> tuple[list[int], str]:
    """Array axes along which some label keeps to one side of the image, and the rule.

    A label is lateralised along an axis when its centroid (scaled -1 … +1 across the
    nonzero box) lies at least ``LATERAL_OFFSET`` from the centre on the same side in at
    least ``LATERAL_AGREEMENT`` of the (≥ ``LATERAL_MIN_CASES``) cases that contain it —
    a liver on one side, a spleen on the other. Mirroring along such an axis would train the
    network on anatomy that never occurs (a spleen where the liver belongs), so it is left
    out of training and test-time augmentation. nnU-Net mirrors every axis regardless.
    """
    labels = sorted({k for c in cases for k in c.label_centroids}, key=int)
    if not labels:
        return [], "no label centroids in the fingerprint: every axis is mirrored"
    found: dict[int, list[str]] = {}
    for axis in range(3):
        for label in labels:
            pos = np.array(
                [c.label_centroids[label][axis] for c in cases if label in c.label_centroids]
            )
            if pos.size < LATERAL_MIN_CASES:
                continue
            for sign in (1, -1):
                if np.mean(sign * pos >= LATERAL_OFFSET) >= LATERAL_AGREEMENT:
                    found.setdefault(axis, []).append(label)
    if not found:
        return [], (
            f"no label keeps to one side along any axis (centroid ≥ {LATERAL_OFFSET:g} "
            f"from the centre on one side in ≥ {LATERAL_AGREEMENT:.0%} of cases): "
            f"every axis is mirrored"
        )
    names = ", ".join(f"axis {a} (labels {', '.join(v)})" for a, v in sorted(found.items()))
    return sorted(found), (
        f"labels keep to one side along {names}: their centroid lies ≥ {LATERAL_OFFSET:g} "
        f"(of the half-extent) from the centre on one side in ≥ {LATERAL_AGREEMENT:.0%} of "
        f"cases, so mirroring there would show anatomy that never occurs; mirrored axes: "
        f"the others (override: --set augmentation.mirror.axes=[...] when training)"
    )


def plan_dataset(
    fingerprint: Fingerprint, info: DatasetInfo, options: PlannerOptions | None = None
) -> Plans:
    """Plan every configuration for a dataset from its fingerprint."""
    options = options or PlannerOptions()
    orientation, orientation_rule = choose_orientation(fingerprint, options.orientation)
    options = options.model_copy(update={"orientation": orientation})
    cases = oriented_cases(fingerprint, options.orientation)
    spacings = np.array([c.spacing for c in cases], dtype=float)
    crop_shapes = np.array([c.shape_after_crop for c in cases], dtype=float)
    if options.spacing is not None:
        if len(options.spacing) != 3:
            raise VoxsegError(f"--spacing needs 3 values (z y x), got {options.spacing}")
        spacing = [float(s) for s in options.spacing]
        spacing_rule = "user override (--spacing)"
    else:
        spacing, spacing_rule = rules.target_spacing(spacings, crop_shapes)
    median_shape = np.median(crop_shapes * spacings / np.asarray(spacing), axis=0)
    strategy = device_strategy(options)
    sizer = _Sizer(
        strategy=strategy,
        channels=Channels(fingerprint.num_channels, info.num_outputs),
        dataset_voxels=float(np.prod(median_shape)) * len(cases),
        network=options.network,
        spacing_rule=spacing_rule,
    )
    explanations: dict[str, str] = {}
    is_2d = all(c.shape[0] == 1 for c in cases)
    configs = _configurations(sizer, spacing, median_shape, options.patch_size, is_2d, explanations)
    configs = _mirroring_and_batch_dice(configs, cases)
    use_mask = 1.0 - fingerprint.median_relative_size_after_crop >= MASK_NORM_SHRINK
    explanations["use_mask_for_norm"] = (
        f"crop-to-nonzero keeps {fingerprint.median_relative_size_after_crop:.0%} of the "
        f"median image; z-scores are computed inside the nonzero mask when it removes "
        f"≥ {MASK_NORM_SHRINK:.0%}"
    )
    explanations["device"] = strategy.describe()
    explanations["orientation"] = orientation_rule
    return Plans(
        plan_name=options.plan_name,
        dataset=fingerprint.dataset,
        voxseg_version=__version__,
        device=options.device,
        gpu_memory_gb=options.gpu_memory_gb,
        orientation=options.orientation,
        channel_names=dict(info.channel_names),
        labels=dict(info.labels),
        num_cases=len(cases),
        original_median_spacing=[float(s) for s in np.median(spacings, axis=0)],
        original_median_shape=[int(round(s)) for s in np.median(crop_shapes, axis=0)],
        use_mask_for_norm=use_mask,
        normalization=_normalization(fingerprint, info, use_mask),
        configurations=configs,
        explanations=explanations,
    )


def _configurations(
    sizer: _Sizer,
    spacing: list[float],
    median_shape: np.ndarray,
    patch_size: list[int] | None,
    is_2d: bool,
    explanations: dict[str, str],
) -> dict[str, ConfigurationPlan]:
    """``2d``, and for 3D data ``3d_fullres`` with, when its patch covers less than
    ``LOWRES_THRESHOLD`` of the median image, ``3d_lowres`` and ``3d_cascade_fullres``."""
    patch2d = patch_size if patch_size and len(patch_size) == 2 else None
    patch3d = patch_size if patch_size and len(patch_size) == 3 else None
    if patch_size and not (patch2d or patch3d):
        raise VoxsegError(f"--patch-size needs 2 (2D) or 3 (3D) values, got {patch_size}")
    configs = {"2d": sizer.configuration("2d", 2, spacing[1:], list(median_shape[1:]), patch2d)}
    if is_2d:
        explanations["configurations"] = (
            "every case is a single slice (pseudo-3D), so only the 2d configuration is planned"
        )
        return configs
    full = sizer.configuration("3d_fullres", 3, spacing, list(median_shape), patch3d)
    configs["3d_fullres"] = full
    coverage = math.prod(full.patch_size) / float(np.prod(median_shape))
    if coverage >= LOWRES_THRESHOLD:
        explanations["3d_lowres"] = (
            f"not planned: the 3d_fullres patch covers {coverage:.0%} of the median "
            f"image (≥ {LOWRES_THRESHOLD:.0%})"
        )
        return configs
    low_strategy, target, budget_note = sizer.strategy.lowres()
    low_sizer = replace(sizer, strategy=low_strategy)
    if patch3d is None and target > LOWRES_THRESHOLD:
        kept = _lowres_at_full_spacing(low_sizer, spacing, median_shape)
        if kept is not None:
            configs["3d_lowres"] = kept
            explanations["3d_lowres"] = (
                f"the 3d_fullres patch covers {coverage:.0%} of the median image "
                f"(< {LOWRES_THRESHOLD:.0%}); the CPU's whole-image stage is budgeted at "
                f"{low_strategy.rule()}, where {kept.explanations['spacing']}; no cascade "
                "(the same grid as 3d_fullres)"
            )
            return configs
    low = _lowres(full, spacing, median_shape, low_sizer, target)
    if low is not None:
        configs["3d_lowres"] = low.model_copy(update={"next_stage": "3d_cascade_fullres"})
        configs["3d_cascade_fullres"] = full.model_copy(
            update={
                "name": "3d_cascade_fullres",
                "previous_stage": "3d_lowres",
                "data_from": "3d_fullres",
                "explanations": {
                    **full.explanations,
                    "previous_stage": "the 3d_lowres prediction (one-hot) is added "
                    "as input channels; same data and network as 3d_fullres",
                },
            }
        )
    explanations["3d_lowres"] = (
        f"the 3d_fullres patch covers {coverage:.0%} of the median image "
        f"(< {LOWRES_THRESHOLD:.0%}): a low-resolution stage and a cascade are planned"
        + budget_note
    )
    return configs


def _mirroring_and_batch_dice(
    configs: dict[str, ConfigurationPlan], cases: list[CaseFingerprint]
) -> dict[str, ConfigurationPlan]:
    """Each configuration with its mirror axes (lateralised axes left out) and batch Dice."""
    lateral, lateral_rule = lateralised_axes(cases)
    out = {}
    for name, cfg in configs.items():
        axes = [a for a in range(3) if a not in lateral]
        if cfg.spatial_dims == 2:
            axes = [a - 1 for a in axes if a > 0]
        batch_dice, batch_dice_rule = _batch_dice(name, "3d_lowres" in configs)
        out[name] = cfg.model_copy(
            update={
                "mirror_axes": axes,
                "batch_dice": batch_dice,
                "explanations": {
                    **cfg.explanations,
                    "mirror_axes": lateral_rule,
                    "batch_dice": batch_dice_rule,
                },
            }
        )
    return out


def _batch_dice(name: str, has_lowres: bool) -> tuple[bool, str]:
    """nnU-Net's rule for the Dice term: over the whole batch where patches are small parts
    of the image (2d slices; 3d_fullres and the cascade when a 3d_lowres exists), per sample
    otherwise."""
    if name == "2d":
        return True, "2d: Dice over the batch (each slice holds little of each class)"
    if name == "3d_lowres":
        return False, "3d_lowres: Dice per sample (its patch covers much of the image)"
    if has_lowres:
        return True, (
            f"{name}: Dice over the batch (its patch covers < {LOWRES_THRESHOLD:.0%} of the "
            f"median image, so a 3d_lowres is planned)"
        )
    return False, f"{name}: Dice per sample (no 3d_lowres: its patch covers much of the image)"


def _normalization(
    fingerprint: Fingerprint, info: DatasetInfo, use_mask: bool
) -> list[ChannelNormalization]:
    out = []
    for c, name in enumerate(info.channel_list):
        scheme = scheme_for_channel(name)
        params: dict = {}
        rule = f"channel name {name!r} selects {scheme!r}"
        if scheme == "ct":
            stats = fingerprint.channels[c]
            if stats is None:
                raise VoxsegError(
                    f"{fingerprint.dataset}: channel {c} is CT but no case has foreground "
                    "labels to compute intensity statistics from"
                )
            params = {
                "mean": stats.mean,
                "std": stats.std,
                "lower": stats.percentile_00_5,
                "upper": stats.percentile_99_5,
            }
            rule += ": clip to the foreground p0.5–p99.5, z-score with the foreground mean/std"
        elif scheme in MASKABLE:
            params = {"use_mask": use_mask}
            rule += ": per-image z-score" + (" inside the nonzero mask" if use_mask else "")
        out.append(
            ChannelNormalization(
                channel=c, channel_name=name, scheme=scheme, params=params, rule=rule
            )
        )
    return out


def _fit_patch(
    spacing: list[float],
    median_shape: list[float],
    patch: list[int],
    cost: Callable[[Topology, list[int]], float],
    budget: float,
    features: Callable[[int], list[int]],
) -> tuple[rules.PoolingPlan, Topology, bool]:
    """Shrink ``patch`` (nnU-Net's loop) until ``cost(topology, patch) <= budget``."""

    def layout(p: list[int]) -> tuple[rules.PoolingPlan, Topology]:
        pool = rules.pooling_plan(spacing, p)
        n = len(pool.strides)
        topo = Topology(
            spatial_dims=len(spacing),
            features_per_stage=features(n),
            kernel_sizes=pool.kernel_sizes,
            strides=pool.strides,
            n_conv_per_stage=[2] * n,
            n_conv_per_stage_decoder=[2] * (n - 1),
        )
        return pool, topo

    pool, topo = layout(patch)
    patch = list(pool.patch_size)
    shrunk = False
    while cost(topo, patch) > budget:
        ratios = [p / m for p, m in zip(patch, median_shape, strict=True)]
        order = list(np.argsort(ratios)[::-1])
        axis = next((a for a in order if patch[a] - pool.divisible_by[a] >= 1), None)
        if axis is None:
            break
        trial = list(patch)
        trial[axis] -= pool.divisible_by[axis]
        step = rules.pooling_plan(spacing, trial).divisible_by[axis]
        patch[axis] = max(1, patch[axis] - step)
        pool, topo = layout(patch)
        patch = list(pool.patch_size)
        shrunk = True
    return pool, topo, shrunk


@dataclass(frozen=True)
class _Sizer:
    """Sizes one configuration of a dataset (patch, network, batch) under a device strategy."""

    strategy: DeviceStrategy
    channels: Channels
    dataset_voxels: float
    network: str
    spacing_rule: str

    def configuration(
        self,
        name: str,
        dims: int,
        spacing: list[float],
        median_shape: list[float],
        patch_override: list[int] | None = None,
    ) -> ConfigurationPlan:
        """The configuration ``name`` at ``spacing``: the largest patch within the budget
        (or the user's), its network and the batch that fills the budget."""
        strategy, profile, channels = self.strategy, self.strategy.profile, self.channels
        cap = profile.cap(dims)

        def features(n: int) -> list[int]:
            return rules.features_per_stage(n, profile.base(dims), cap)

        def cost(topo: Topology, p: list[int]) -> float:
            return strategy.cost(topo, p, channels)

        ex: dict[str, str] = {}
        if patch_override is not None:
            initial = [int(p) for p in patch_override]
            ex["patch_size"] = "user override (--patch-size), rounded up to the total downsampling"
            limit = math.inf
        else:
            initial = rules.initial_patch_size(spacing, median_shape, profile.initial_voxels(dims))
            limit = strategy.limit
        pool, topo, shrunk = _fit_patch(spacing, median_shape, initial, cost, limit, features)
        patch = list(pool.patch_size)
        if patch_override is not None:
            topo, narrowed = strategy.narrow(topo, patch, channels, cap)
            ex["patch_size"] += narrowed
        else:
            side = "256³" if dims == 3 else "2048²"
            unit = strategy.rule()
            ex["patch_size"] = (
                f"aspect 1/spacing at {side} voxels, clipped to the median shape "
                f"{[int(round(m)) for m in median_shape]}"
                + (f", shrunk until {unit}" if shrunk else f"; fits ({unit})")
                + f", rounded to a multiple of {pool.divisible_by}"
            )
        ex["spacing"] = (
            self.spacing_rule if dims == 3 else self.spacing_rule + " (in-plane axes; z is kept)"
        )
        ex["topology"] = (
            f"pool an axis while its spacing is within 2x of the finest and its feature map "
            f"stays ≥ {rules.MIN_FEATURE_MAP_EDGE}: {len(pool.strides)} stages, pools per axis "
            f"{pool.num_pool_per_axis}; kernel 3 once an axis is within 2x of the finest "
            f"spacing, else 1; features {topo.features_per_stage[0]}·2^i capped at {cap}"
        )
        batch, ex["batch_size"] = strategy.batch_size(topo, patch, channels, self.dataset_voxels)
        n_in, n_out = channels.inputs, channels.outputs
        return ConfigurationPlan(
            name=name,
            spatial_dims=dims,
            spacing=[float(s) for s in spacing],
            median_shape=[int(round(m)) for m in median_shape],
            patch_size=patch,
            batch_size=batch,
            network=self.network,
            topology=topo,
            data_from=name,
            estimated_gpu_memory_gb=round(
                gpu_training_bytes(topo, patch, n_in, n_out).at(batch) / 1024**3, 2
            ),
            estimated_training_gflops=round(
                training_flops(topo, patch, n_in, n_out).at(batch) / 1e9, 2
            ),
            explanations=ex,
        )


def _lowres_at_full_spacing(
    sizer: _Sizer, spacing: list[float], median_shape: np.ndarray
) -> ConfigurationPlan | None:
    """The whole-image stage on the full-resolution grid, when its budget (larger than
    3d_fullres's on a CPU) already lets a full-resolution patch cover ``LOWRES_THRESHOLD``
    of the median image: nnU-Net plans no low-resolution stage at that coverage, and on
    real MR anatomy with test slabs from other brain levels such a patch generalised better
    than the whole image coarsened to fit (held-out Dice 0.778 vs 0.715 in the same 15
    training minutes on 2 CPU cores; benchmarks/RESULTS.md, "Real anatomy"). None when it
    covers less (the grid is then coarsened until the patch holds the whole image)."""
    plan = sizer.configuration("3d_lowres", 3, spacing, list(median_shape))
    coverage = math.prod(plan.patch_size) / float(np.prod(median_shape))
    if coverage < LOWRES_THRESHOLD:
        return None
    plan.explanations["spacing"] = (
        f"a patch on the 3d_fullres grid covers {coverage:.0%} of the median image "
        f"(≥ {LOWRES_THRESHOLD:.0%}, where nnU-Net plans no low-resolution stage), so the "
        "spacing is kept: part of the image at full resolution generalises better than the "
        "whole image on a coarser grid"
    )
    return plan.model_copy(update={"name": "3d_lowres", "data_from": "3d_fullres"})


def _lowres(
    full: ConfigurationPlan,
    spacing: list[float],
    median_shape: np.ndarray,
    sizer: _Sizer,
    target: float = LOWRES_THRESHOLD,
) -> ConfigurationPlan | None:
    """nnU-Net's low-resolution stage: coarsen the spacing by 3% steps (the finer axes first
    while any is > 2x finer than the coarsest) until the patch covers ≥ ``target`` of the
    median image at that spacing. nnU-Net's 25% compares volumes; the whole image
    (``target`` 1) needs every axis of the patch to reach the median shape's whole voxels
    (the patch is clipped to them)."""

    def covered(patch: list[int], shape) -> float:
        if target < 1:
            return math.prod(patch) / float(np.prod(shape))
        whole = [max(1, math.floor(m)) for m in shape]
        return math.prod(min(p / m, 1.0) for p, m in zip(patch, whole, strict=True))

    low_spacing = np.asarray(spacing, dtype=float)
    full_spacing = np.asarray(spacing, dtype=float)
    plan = full
    coverage = covered(full.patch_size, median_shape)
    for _ in range(200):
        if coverage >= target:
            break
        coarsest = low_spacing.max()
        finer = coarsest / low_spacing > 2
        if finer.any():
            low_spacing[finer] *= LOWRES_SPACING_STEP
        else:
            low_spacing *= LOWRES_SPACING_STEP
        shape = full_spacing / low_spacing * median_shape
        if shape.min() < 2:  # nothing left to coarsen: keep the last plan
            break
        plan = sizer.configuration("3d_lowres", 3, [float(s) for s in low_spacing], list(shape))
        coverage = covered(plan.patch_size, shape)
    if plan is full:
        return None
    plan.explanations["spacing"] = (
        f"3d_fullres spacing coarsened in {LOWRES_SPACING_STEP - 1:.0%} steps (axes > 2x finer "
        f"than the coarsest first) until the patch covers ≥ {target:.0%} of the "
        f"median image ({coverage:.0%})"
    )
    return plan.model_copy(update={"name": "3d_lowres", "data_from": "3d_lowres"})
