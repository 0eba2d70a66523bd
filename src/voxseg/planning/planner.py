"""The planner: from a fingerprint to a :class:`Plans` (nnU-Net v2's rules, device-aware).

GPU (``device="cuda"``, nnU-Net's rules): features 32·2^i capped at 320 (3D) / 512 (2D);
the patch starts at 256³ (2D: 2048²) voxels with aspect 1/spacing, is clipped to the
median shape and shrinks, one divisibility step along the axis largest relative to the
median shape, until the estimated training memory at batch 2
(:func:`voxseg.planning.memory.gpu_training_bytes`) fits ``gpu_memory_gb``; the batch
then grows while it fits, capped so one batch covers ≤ 5% of the dataset's voxels, ≥ 2.

CPU (``device="cpu"``): nnU-Net's default 3D network needs seconds per iteration on a
laptop, so the CPU plan uses features 8·2^i capped at 128 (3D) / 256 (2D) and shrinks the
patch the same way until one training iteration at batch 2 needs at most
``cpu_gflops_per_iteration`` GFLOPs (default 5). Measured for a CT-like plan
(patch 14×40×40, 4 stages, 4.2 GFLOP): 2.3–4.8 s per iteration on 2 cores shared at load
~6.5, i.e. about 1 s on two idle cores (thin 3D convolutions, norms and activations run at
~5 GFLOP/s effective on a CPU, far below the peak of wide convolutions). A CPU plan's
``3d_lowres`` holds the whole median image in one patch, with 4× the budget (bf16 on CPUs
that multiply it in hardware, float32 channels-last elsewhere; see ``CPU_LOWRES_COVERAGE``,
``BF16_CPU_BUDGET_FACTOR`` and ``FLOAT32_CPU_LOWRES_FACTOR``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from voxseg import __version__
from voxseg.data.dataset import DatasetInfo
from voxseg.data.fingerprint import CaseFingerprint, Fingerprint
from voxseg.errors import VoxsegError
from voxseg.nets.topology import Topology
from voxseg.normalization import MASKABLE, scheme_for_channel
from voxseg.planning import memory, rules
from voxseg.planning.plans import ChannelNormalization, ConfigurationPlan, Plans

LOWRES_THRESHOLD = 0.25
LOWRES_SPACING_STEP = 1.03
MAX_DATASET_COVERED = 0.05
MIN_BATCH = 2
#: CPU per-iteration budget (GFLOP at batch 2). On a CPU with AMX, where training runs
#: under bf16 autocast, 2.5× this budget trains as fast per iteration (organs phantoms:
#: 11.6 GFLOP at patch 28×48×48 in 0.16 s vs 4.3 GFLOP at 20×40×32 in 0.167 s in float32),
#: but that larger patch reached a lower held-out Dice in 15 minutes (0.51 vs 0.69): the
#: budget stays and AMX buys more iterations instead.
CPU_GFLOPS = 5.0
#: CPU plans: the ``3d_lowres`` stage coarsens until its patch holds the whole median image
#: (nnU-Net: a quarter). On a short CPU training, context beats resolution: on the organs
#: phantoms (15 minutes, 2 cores) patches of a quarter of the image at full resolution
#: reached a held-out Dice of 0.51–0.69 with false positives far from the organs; the whole
#: image at half the in-plane resolution 0.84–0.85 (benchmarks/RESULTS.md).
CPU_LOWRES_COVERAGE = 1.0
#: On a CPU that multiplies bf16 in hardware (AMX), the whole-image stage gets this many
#: times the per-iteration FLOP budget: under bf16 autocast a network 4× wider costs 1.3×
#: per iteration (organs, patch 48³: 8–64 features 0.21 s vs 4–32 features 0.166 s), since
#: thin convolutions leave the matrix units idle.
BF16_CPU_BUDGET_FACTOR = 4.0
#: On other CPUs (float32), the same 4×: 3D training runs channels-last there, 1.2–1.4×
#: faster per step (benchmarks/memory_layout.py), and the ``adamw`` recipe converges in a few
#: thousand iterations. On the organs phantoms (15 minutes, 2 cores of an AVX2 CPU, adamw)
#: the whole image at 20 GFLOP (3.25 × 1.65 mm) reached a held-out Dice of 0.853–0.864 (two
#: seeds) against 0.839–0.862 at 10 GFLOP (3.9 × 2.0 mm) and 0.82–0.83 at 5 GFLOP.
FLOAT32_CPU_LOWRES_FACTOR = 4.0
#: a CPU training shorter than this gets a whole-image 3d_lowres cheaper in proportion: on 16
#: organ phantoms with 219 s of training, 20 GFLOP per iteration reached held-out Dice 0.26,
#: 10 GFLOP 0.51, 5 GFLOP 0.51 (more iterations on a coarser grid); with 15 minutes, 20
#: GFLOP reaches 0.85 (benchmarks/RESULTS.md)
LOWRES_FULL_BUDGET_SECONDS = 600.0
#: A CPU plan with a fixed patch narrows its network to meet the budget, down to this width.
MIN_CPU_BASE_FEATURES = 4
#: Crop-to-nonzero must shrink the median image by at least this share for the z-score to
#: be computed inside the nonzero mask (nnU-Net: relative size < 3/4).
MASK_NORM_SHRINK = 0.25
#: Lateralised labels (see :func:`lateralised_axes`).
LATERAL_OFFSET = 0.2
LATERAL_AGREEMENT = 0.9
LATERAL_MIN_CASES = 3


class DeviceProfile(BaseModel):
    """Network width and patch budget of one target device."""

    base_features: int
    max_features_3d: int
    max_features_2d: int
    base_features_2d: int | None = Field(None, description="2D first-stage width; None: same")
    initial_voxels_3d: float = 256.0**3
    initial_voxels_2d: float = 2048.0**2

    def base(self, dims: int) -> int:
        """First-stage features of a ``dims``-D network."""
        return (self.base_features_2d or self.base_features) if dims == 2 else self.base_features


PROFILES = {
    "cuda": DeviceProfile(base_features=32, max_features_3d=320, max_features_2d=512),
    # 2D on a CPU: 16 features. At the per-iteration FLOP budget the wider network gets a
    # patch of about 60 % of the slice per axis instead of the whole slice; on real MR
    # anatomy with test slices from other brain levels that generalised better (held-out
    # Dice 0.782 vs 0.692 at 8 features and the whole slice; the smaller patch alone: 0.758,
    # 16 features at the whole slice: 0.695; benchmarks/RESULTS.md, "Real anatomy").
    "cpu": DeviceProfile(
        base_features=8, max_features_3d=128, max_features_2d=256, base_features_2d=16
    ),
}


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


def cpu_lowres_budget(options: PlannerOptions) -> tuple[float, str]:
    """GFLOPs per iteration (batch 2) of a CPU plan's whole-image ``3d_lowres``, and why."""
    if options.cpu_lowres_gflops_per_iteration is not None:
        return options.cpu_lowres_gflops_per_iteration, "user override (--cpu-lowres-gflops)"
    gflops, why = _cpu_lowres_full_budget(options)
    seconds = options.training_seconds
    if seconds is None or seconds >= LOWRES_FULL_BUDGET_SECONDS:
        return gflops, why
    short = max(options.cpu_gflops_per_iteration, gflops * seconds / LOWRES_FULL_BUDGET_SECONDS)
    return short, (
        f"{why}; scaled by the training time, {seconds:.0f} s of "
        f"{LOWRES_FULL_BUDGET_SECONDS:g} s, to {short:.1f} GFLOP (at least "
        f"{options.cpu_gflops_per_iteration:g}): a short training needs more iterations more "
        f"than a finer grid"
    )


def _cpu_lowres_full_budget(options: PlannerOptions) -> tuple[float, str]:
    from voxseg.devices import cpu_has_fast_bf16

    base = options.cpu_gflops_per_iteration
    if cpu_has_fast_bf16():
        return BF16_CPU_BUDGET_FACTOR * base, (
            f"{BF16_CPU_BUDGET_FACTOR:g}× the {base:g} GFLOP budget: this CPU multiplies bf16 "
            f"in hardware (AMX), where training runs under bf16 autocast and a 4× wider "
            f"network costs about 1.3× per iteration"
        )
    return FLOAT32_CPU_LOWRES_FACTOR * base, (
        f"{FLOAT32_CPU_LOWRES_FACTOR:g}× the {base:g} GFLOP budget: no hardware bf16 on this "
        f"CPU (float32), where channels-last 3D training steps are about 1.3× faster and "
        f"the adamw recipe learns in a few thousand iterations"
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
    explanations: dict[str, str] = {}
    if options.spacing is not None:
        if len(options.spacing) != 3:
            raise VoxsegError(f"--spacing needs 3 values (z y x), got {options.spacing}")
        spacing = [float(s) for s in options.spacing]
        spacing_rule = "user override (--spacing)"
    else:
        spacing, spacing_rule = rules.target_spacing(spacings, crop_shapes)
    median_shape = np.median(crop_shapes * spacings / np.asarray(spacing), axis=0)
    n_in = fingerprint.num_channels
    k = info.num_outputs
    profile = PROFILES[options.device]
    if options.base_features is not None:
        profile = profile.model_copy(
            update={"base_features": options.base_features, "base_features_2d": None}
        )
    n_voxels = float(np.prod(median_shape)) * len(cases)
    is_2d = all(c.shape[0] == 1 for c in cases)
    configs: dict[str, ConfigurationPlan] = {}

    def make(name: str, dims: int, sp: list[float], shape: list[float], patch=None, opts=None):
        return _configuration(
            name, dims, sp, shape, n_in, k, n_voxels, profile, opts or options, patch, spacing_rule
        )

    patch2d = options.patch_size if options.patch_size and len(options.patch_size) == 2 else None
    patch3d = options.patch_size if options.patch_size and len(options.patch_size) == 3 else None
    if options.patch_size and not (patch2d or patch3d):
        raise VoxsegError(f"--patch-size needs 2 (2D) or 3 (3D) values, got {options.patch_size}")
    configs["2d"] = make("2d", 2, spacing[1:], list(median_shape[1:]), patch2d)
    if is_2d:
        explanations["configurations"] = (
            "every case is a single slice (pseudo-3D), so only the 2d configuration is planned"
        )
    else:
        full = make("3d_fullres", 3, spacing, list(median_shape), patch3d)
        configs["3d_fullres"] = full
        coverage = math.prod(full.patch_size) / float(np.prod(median_shape))
        if coverage < LOWRES_THRESHOLD:
            if options.device == "cpu":
                gflops, budget_rule = cpu_lowres_budget(options)
                low_options = options.model_copy(update={"cpu_gflops_per_iteration": gflops})
                target = CPU_LOWRES_COVERAGE
            else:
                low_options, target, budget_rule = options, LOWRES_THRESHOLD, ""
            low = _lowres(full, spacing, median_shape, partial(make, opts=low_options), target)
            if low is not None:
                configs["3d_lowres"] = low
                cascade = full.model_copy(
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
                configs["3d_cascade_fullres"] = cascade
                configs["3d_lowres"] = low.model_copy(update={"next_stage": "3d_cascade_fullres"})
            explanations["3d_lowres"] = (
                f"the 3d_fullres patch covers {coverage:.0%} of the median image "
                f"(< {LOWRES_THRESHOLD:.0%}): a low-resolution stage and a cascade are planned"
            )
            if options.device == "cpu":
                explanations["3d_lowres"] += (
                    f"; on a CPU the low-resolution stage holds the whole median image in one "
                    f"patch (the configuration to train on a CPU budget) at {budget_rule}"
                )
        else:
            explanations["3d_lowres"] = (
                f"not planned: the 3d_fullres patch covers {coverage:.0%} of the median "
                f"image (≥ {LOWRES_THRESHOLD:.0%})"
            )
    lateral, lateral_rule = lateralised_axes(cases)
    for name, cfg in configs.items():
        axes = [a for a in range(3) if a not in lateral]
        if cfg.spatial_dims == 2:
            axes = [a - 1 for a in axes if a > 0]
        batch_dice, batch_dice_rule = _batch_dice(name, "3d_lowres" in configs)
        configs[name] = cfg.model_copy(
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
    use_mask = 1.0 - fingerprint.median_relative_size_after_crop >= MASK_NORM_SHRINK
    explanations["use_mask_for_norm"] = (
        f"crop-to-nonzero keeps {fingerprint.median_relative_size_after_crop:.0%} of the "
        f"median image; z-scores are computed inside the nonzero mask when it removes "
        f"≥ {MASK_NORM_SHRINK:.0%}"
    )
    explanations["device"] = (
        f"planned for {options.device}: features {profile.base(3)}·2^i capped at "
        f"{profile.max_features_3d} (3D) / {profile.base(2)}·2^i capped at "
        f"{profile.max_features_2d} (2D)"
    )
    if options.device == "cpu":
        explanations["device"] += (
            f"; {options.cpu_gflops_per_iteration:g} GFLOP per training iteration at batch "
            f"{MIN_BATCH}"
        )
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


def _configuration(
    name: str,
    dims: int,
    spacing: list[float],
    median_shape: list[float],
    in_channels: int,
    n_classes: int,
    dataset_voxels: float,
    profile: DeviceProfile,
    options: PlannerOptions,
    patch_override: list[int] | None,
    spacing_rule: str,
) -> ConfigurationPlan:
    cap = profile.max_features_3d if dims == 3 else profile.max_features_2d
    initial_voxels = profile.initial_voxels_3d if dims == 3 else profile.initial_voxels_2d

    def features(n: int) -> list[int]:
        return rules.features_per_stage(n, profile.base(dims), cap)

    ex: dict[str, str] = {}
    if patch_override is not None:
        initial = [int(p) for p in patch_override]
        ex["patch_size"] = "user override (--patch-size), rounded up to the total downsampling"
        budget = math.inf
    else:
        initial = rules.initial_patch_size(spacing, median_shape, initial_voxels)
        budget = None
    if options.device == "cuda":
        gib = options.gpu_memory_gb * 1024**3

        def cost(topo: Topology, p: list[int]) -> float:
            return memory.gpu_training_bytes(topo, p, in_channels, n_classes, MIN_BATCH)

        limit = gib if budget is None else budget
        unit = f"estimated GPU memory at batch {MIN_BATCH} ≤ {options.gpu_memory_gb:g} GB"
    else:

        def cost(topo: Topology, p: list[int]) -> float:
            return memory.training_flops(topo, p, in_channels, n_classes, MIN_BATCH)

        limit = options.cpu_gflops_per_iteration * 1e9 if budget is None else budget
        unit = (
            f"training FLOPs per iteration at batch {MIN_BATCH} "
            f"≤ {options.cpu_gflops_per_iteration:g} GFLOP"
        )
    pool, topo, shrunk = _fit_patch(spacing, median_shape, initial, cost, limit, features)
    patch = list(pool.patch_size)
    base = profile.base(dims)
    if options.device == "cpu" and patch_override is not None and options.base_features is None:
        # The user fixed the patch (e.g. a whole resized image): fit the width to the budget.
        cpu_limit = options.cpu_gflops_per_iteration * 1e9
        while cost(topo, patch) > cpu_limit and base // 2 >= MIN_CPU_BASE_FEATURES:
            base //= 2
            n = len(topo.features_per_stage)  # same patch, same pooling: only the width changes
            topo = topo.model_copy(
                update={"features_per_stage": rules.features_per_stage(n, base, cap)}
            )
        if base != profile.base(dims):
            ex["patch_size"] += (
                f"; features narrowed to {base}·2^i for the CPU budget of "
                f"{options.cpu_gflops_per_iteration:g} GFLOP per iteration at batch {MIN_BATCH} "
                f"({cost(topo, patch) / 1e9:.1f} GFLOP, at least {MIN_CPU_BASE_FEATURES}·2^i)"
            )
    if patch_override is None:
        side = "256³" if dims == 3 else "2048²"
        ex["patch_size"] = (
            f"aspect 1/spacing at {side} voxels, clipped to the median shape "
            f"{[int(round(m)) for m in median_shape]}"
            + (f", shrunk until {unit}" if shrunk else f"; fits ({unit})")
            + f", rounded to a multiple of {pool.divisible_by}"
        )
    ex["spacing"] = spacing_rule if dims == 3 else spacing_rule + " (in-plane axes; z is kept)"
    ex["topology"] = (
        f"pool an axis while its spacing is within 2x of the finest and its feature map "
        f"stays ≥ {rules.MIN_FEATURE_MAP_EDGE}: {len(pool.strides)} stages, pools per axis "
        f"{pool.num_pool_per_axis}; kernel 3 once an axis is within 2x of the finest "
        f"spacing, else 1; features {base}·2^i capped at {cap}"
    )
    act_bytes = memory.gpu_training_bytes(topo, patch, in_channels, n_classes, 1)
    if options.device == "cuda":
        per_sample = memory.gpu_training_bytes(topo, patch, in_channels, n_classes, 2) - act_bytes
        fixed = act_bytes - per_sample
        fit = int((options.gpu_memory_gb * 1024**3 - fixed) // per_sample)
        cover = int(round(MAX_DATASET_COVERED * dataset_voxels / math.prod(patch)))
        batch = max(MIN_BATCH, min(fit, cover))
        ex["batch_size"] = (
            f"as many as fit the memory budget ({fit}), at most {MAX_DATASET_COVERED:.0%} of "
            f"the dataset's voxels per batch ({cover}), at least {MIN_BATCH}"
        )
    else:
        per_sample = memory.training_flops(topo, patch, in_channels, n_classes, 1)
        limit_flops = options.cpu_gflops_per_iteration * 1e9
        fit = int(limit_flops // per_sample) if per_sample > 0 else MIN_BATCH
        cover = int(round(MAX_DATASET_COVERED * dataset_voxels / math.prod(patch)))
        batch = max(MIN_BATCH, min(fit, cover))
        ex["batch_size"] = (
            f"as many as fit the per-iteration budget of {options.cpu_gflops_per_iteration:g} "
            f"GFLOP ({fit}; a patch clipped to the image leaves room), at most "
            f"{MAX_DATASET_COVERED:.0%} of the dataset's voxels per batch ({cover}), "
            f"at least {MIN_BATCH}"
        )
    return ConfigurationPlan(
        name=name,
        spatial_dims=dims,
        spacing=[float(s) for s in spacing],
        median_shape=[int(round(m)) for m in median_shape],
        patch_size=patch,
        batch_size=batch,
        network=options.network,
        topology=topo,
        data_from=name,
        estimated_gpu_memory_gb=round(
            memory.gpu_training_bytes(topo, patch, in_channels, n_classes, batch) / 1024**3, 2
        ),
        estimated_training_gflops=round(
            memory.training_flops(topo, patch, in_channels, n_classes, batch) / 1e9, 2
        ),
        explanations=ex,
    )


def _lowres(
    full: ConfigurationPlan,
    spacing: list[float],
    median_shape: np.ndarray,
    make: Callable[..., ConfigurationPlan],
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
        plan = make("3d_lowres", 3, [float(s) for s in low_spacing], list(shape))
        coverage = covered(plan.patch_size, shape)
    if plan is full:
        return None
    plan.explanations["spacing"] = (
        f"3d_fullres spacing coarsened in {LOWRES_SPACING_STEP - 1:.0%} steps (axes > 2x finer "
        f"than the coarsest first) until the patch covers ≥ {target:.0%} of the "
        f"median image ({coverage:.0%})"
    )
    return plan.model_copy(update={"name": "3d_lowres", "data_from": "3d_lowres"})
