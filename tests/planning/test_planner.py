"""Planning rules (nnU-Net v2) on synthetic fingerprints: no images needed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxseg.config import apply_overrides
from voxseg.data.dataset import DatasetInfo
from voxseg.data.fingerprint import CaseFingerprint, ChannelStats, Fingerprint
from voxseg.planning import PlannerOptions, plan_dataset, read_plans, write_plans
from voxseg.planning.memory import gpu_training_bytes, training_flops
from voxseg.planning.rules import features_per_stage, pooling_plan, target_spacing

EYE = np.eye(3).tolist()


def _fingerprint(shapes, spacings, channels=("CT",), crop_fraction=1.0, direction=EYE):
    cases = [
        CaseFingerprint(
            case_id=f"c{i}",
            shape=list(sh),
            spacing=list(sp),
            orientation="LPS",
            direction=direction,
            shape_after_crop=[max(1, int(round(s * crop_fraction ** (1 / 3)))) for s in sh]
            if sh[0] > 1
            else list(sh),
        )
        for i, (sh, sp) in enumerate(zip(shapes, spacings, strict=True))
    ]
    stats = ChannelStats(
        mean=50, std=10, min=0, max=100, percentile_00_5=5, percentile_99_5=95, num_samples=10
    )
    return Fingerprint(
        dataset="Dataset009_X",
        num_channels=len(channels),
        samples_total=10,
        seed=0,
        cases=cases,
        channels=[stats] * len(channels),
    )


def _info(channels=("CT",), labels=None):
    return DatasetInfo(
        channel_names={str(i): c for i, c in enumerate(channels)},
        labels=labels or {"background": 0, "liver": 1, "tumour": 2},
        numTraining=5,
    )


def test_anisotropic_axis_takes_its_10th_percentile():
    spacings = np.array([[5.0, 0.8, 0.8], [4.0, 0.7, 0.7], [6.0, 0.9, 0.9], [3.0, 0.8, 0.8]])
    shapes = np.array([[30, 512, 512]] * 4)
    spacing, rule = target_spacing(spacings, shapes)
    assert spacing[0] == pytest.approx(np.percentile(spacings[:, 0], 10))
    assert spacing[1:] == pytest.approx(np.median(spacings[:, 1:], axis=0))
    assert "10th percentile" in rule


def test_anisotropic_spacing_with_many_slices_keeps_the_median():
    spacings = np.array([[5.0, 0.8, 0.8], [4.0, 0.7, 0.7], [6.0, 0.9, 0.9]])
    shapes = np.array([[400, 100, 100]] * 3)  # many slices: not "thin"
    spacing, _ = target_spacing(spacings, shapes)
    assert spacing == pytest.approx(np.median(spacings, axis=0))


def test_pooling_isotropic_128():
    pool = pooling_plan([1.0, 1.0, 1.0], [128, 128, 128])
    assert pool.num_pool_per_axis == [5, 5, 5]
    assert len(pool.strides) == 6 and pool.strides[0] == [1, 1, 1]
    assert all(k == [3, 3, 3] for k in pool.kernel_sizes)
    assert pool.patch_size == [128, 128, 128]


def test_pooling_anisotropic_follows_nnunet():
    # worked by hand from nnU-Net's get_pool_and_conv_props (see the docstring)
    pool = pooling_plan([3.0, 0.8, 0.8], [40, 224, 224])
    assert pool.num_pool_per_axis == [3, 5, 5]
    assert pool.strides == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]
    assert pool.kernel_sizes[0] == [1, 3, 3]
    assert all(k == [3, 3, 3] for k in pool.kernel_sizes[1:])
    assert pool.divisible_by == [8, 32, 32]
    assert pooling_plan([3.0, 0.8, 0.8], [41, 220, 224]).patch_size == [48, 224, 224]


def test_gpu_plan_ct_like_dataset_has_lowres_and_cascade():
    fp = _fingerprint([(150, 512, 512)] * 4, [(2.5, 0.8, 0.8)] * 4)
    plans = plan_dataset(fp, _info(), PlannerOptions(device="cuda"))
    assert set(plans.configurations) == {"2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"}
    full = plans.configurations["3d_fullres"]
    assert full.spacing == pytest.approx([2.5, 0.8, 0.8])
    assert all(
        p % d == 0 for p, d in zip(full.patch_size, full.topology.total_downsampling, strict=True)
    )
    budget = 8 * 1024**3
    assert gpu_training_bytes(full.topology, full.patch_size, 1, 3).at(full.batch_size) <= budget
    assert full.batch_size >= 2
    assert (
        full.topology.features_per_stage[0] == 32 and max(full.topology.features_per_stage) == 320
    )
    low = plans.configurations["3d_lowres"]
    assert all(a >= b for a, b in zip(low.spacing, full.spacing, strict=True))
    assert math.prod(low.patch_size) / math.prod(low.median_shape) >= 0.25 - 0.02
    cascade = plans.configurations["3d_cascade_fullres"]
    assert cascade.previous_stage == "3d_lowres" and cascade.data_from == "3d_fullres"
    assert low.next_stage == "3d_cascade_fullres"
    assert plans.normalization[0].scheme == "ct"
    assert (
        plans.normalization[0].params["lower"] == 5 and plans.normalization[0].params["upper"] == 95
    )
    for c in plans.configurations.values():
        assert {"spacing", "patch_size", "topology", "batch_size"} <= set(c.explanations)


def test_small_dataset_has_no_lowres_and_patch_fits_median():
    fp = _fingerprint([(60, 90, 80)] * 3, [(1.0, 1.0, 1.0)] * 3)
    plans = plan_dataset(fp, _info(), PlannerOptions(device="cuda"))
    assert "3d_lowres" not in plans.configurations
    full = plans.configurations["3d_fullres"]
    divisor = full.topology.total_downsampling
    for p, m, d in zip(full.patch_size, full.median_shape, divisor, strict=True):
        assert p <= math.ceil(m / d) * d


def test_more_gpu_memory_gives_a_larger_patch_or_batch():
    fp = _fingerprint([(300, 300, 300)] * 3, [(1.0, 1.0, 1.0)] * 3)
    small = plan_dataset(fp, _info(), PlannerOptions(gpu_memory_gb=4)).configurations["3d_fullres"]
    large = plan_dataset(fp, _info(), PlannerOptions(gpu_memory_gb=24)).configurations["3d_fullres"]
    assert (
        math.prod(large.patch_size) * large.batch_size
        > math.prod(small.patch_size) * small.batch_size
    )


def test_cpu_plan_is_small_and_within_the_compute_budget():
    fp = _fingerprint([(150, 512, 512)] * 3, [(2.5, 0.8, 0.8)] * 3)
    gpu = plan_dataset(fp, _info(), PlannerOptions(device="cuda")).configurations["3d_fullres"]
    cpu_plans = plan_dataset(fp, _info(), PlannerOptions(device="cpu", cpu_gflops_per_iteration=5))
    cpu = cpu_plans.configurations["3d_fullres"]
    assert cpu.topology.features_per_stage[0] == 8
    assert max(cpu.topology.features_per_stage) <= 128
    assert math.prod(cpu.patch_size) < math.prod(gpu.patch_size)
    assert training_flops(cpu.topology, cpu.patch_size, 1, 3).at(cpu.batch_size) <= 5e9
    assert training_flops(gpu.topology, gpu.patch_size, 1, 3).at(2) > 500 * 5e9


def test_cpu_batch_fills_the_budget_when_the_patch_is_clipped_to_the_image():
    fp = _fingerprint([(40, 64, 64)] * 6, [(3.0, 1.0, 1.0)] * 6)
    plans = plan_dataset(fp, _info(), PlannerOptions(device="cpu", cpu_gflops_per_iteration=5))
    two_d = plans.configurations["2d"]
    assert two_d.patch_size == [64, 64]  # the whole slice
    per_sample = training_flops(two_d.topology, two_d.patch_size, 1, 3).at(1)
    cover = round(0.05 * 6 * 40 * 64 * 64 / (64 * 64))  # ≤ 5% of the dataset per batch
    assert two_d.batch_size == min(int(5e9 // per_sample), cover) > 2
    full = plans.configurations["3d_fullres"]
    assert training_flops(full.topology, full.patch_size, 1, 3).at(full.batch_size) <= 5e9


def test_cpu_plan_with_a_fixed_patch_narrows_the_network_to_the_budget():
    fp = _fingerprint([(128, 64, 64)] * 3, [(1.0, 1.0, 1.0)] * 3)
    opts = PlannerOptions(device="cpu", patch_size=[128, 64, 64], cpu_gflops_per_iteration=5)
    full = plan_dataset(fp, _info(), opts).configurations["3d_fullres"]
    assert full.patch_size == [128, 64, 64]  # the user's patch is kept
    assert full.topology.features_per_stage[0] < 8
    flops = training_flops(full.topology, full.patch_size, 1, 3).at(2)
    n = len(full.topology.features_per_stage)
    base = full.topology.features_per_stage[0]
    wider = full.topology.model_copy(
        update={"features_per_stage": features_per_stage(n, 2 * base, 128)}
    )
    # the narrowest width at or above 4 that meets the budget, or 4 when none does
    assert flops <= 5e9 or full.topology.features_per_stage[0] == 4
    assert training_flops(wider, full.patch_size, 1, 3).at(2) > 5e9
    assert "narrowed" in full.explanations["patch_size"]
    user = plan_dataset(fp, _info(), opts.model_copy(update={"base_features": 8}))
    assert user.configurations["3d_fullres"].topology.features_per_stage[0] == 8


def test_cpu_lowres_holds_the_whole_median_image_within_its_budget(monkeypatch):
    import voxseg.devices

    fp = _fingerprint([(48, 96, 96)] * 4, [(2.5, 0.8, 0.8)] * 4)
    for amx, budget in ((False, 20e9), (True, 20e9)):
        monkeypatch.setattr(voxseg.devices, "cpu_has_fast_bf16", lambda amx=amx: amx)
        plans = plan_dataset(fp, _info(), PlannerOptions(device="cpu", cpu_gflops_per_iteration=5))
        full, low = plans.configurations["3d_fullres"], plans.configurations["3d_lowres"]
        assert math.prod(full.patch_size) / math.prod(full.median_shape) < 0.25
        # the whole image in one patch (nnU-Net's lowres stops at a quarter); the plan's
        # median shape is rounded, the patch reaches its whole voxels
        assert all(p >= m - 1 for p, m in zip(low.patch_size, low.median_shape, strict=True))
        flops = training_flops(low.topology, low.patch_size, 1, 3).at(2)
        assert budget / 2 < flops <= budget  # the budget is used, not exceeded
        assert low.topology.features_per_stage[0] == 8
        assert all(a > b for a, b in zip(low.spacing, full.spacing, strict=True))
        # full resolution keeps the base budget
        assert training_flops(full.topology, full.patch_size, 1, 3).at(2) <= 5e9
        assert "whole median image" in plans.explanations["3d_lowres"]
    opts = PlannerOptions(device="cpu", cpu_lowres_gflops_per_iteration=5)
    narrow = plan_dataset(fp, _info(), opts).configurations["3d_lowres"]
    assert 2.5e9 < training_flops(narrow.topology, narrow.patch_size, 1, 3).at(2) <= 5e9
    assert math.prod(low.median_shape) > 1.5 * math.prod(narrow.median_shape)  # finer
    # a GPU plan keeps nnU-Net's quarter
    gpu = plan_dataset(
        _fingerprint([(150, 512, 512)] * 4, [(2.5, 0.8, 0.8)] * 4), _info(), PlannerOptions()
    ).configurations["3d_lowres"]
    assert 0.23 < math.prod(gpu.patch_size) / math.prod(gpu.median_shape) < 0.5


def test_cpu_lowres_budget_follows_a_short_training_time(monkeypatch):
    import voxseg.devices
    from voxseg.planning.budget import LOWRES_FULL_BUDGET_SECONDS
    from voxseg.planning.planner import device_strategy

    monkeypatch.setattr(voxseg.devices, "cpu_has_fast_bf16", lambda: False)
    full = LOWRES_FULL_BUDGET_SECONDS
    cases = {None: 20.0, 2 * full: 20.0, full: 20.0, full / 2: 10.0, full / 10: 5.0}
    for seconds, gflops in cases.items():
        opts = PlannerOptions(device="cpu", cpu_gflops_per_iteration=5, training_seconds=seconds)
        assert device_strategy(opts).lowres_budget()[0] == pytest.approx(gflops)
    user = PlannerOptions(device="cpu", training_seconds=60, cpu_lowres_gflops_per_iteration=20)
    assert device_strategy(user).lowres_budget()[0] == 20  # the user's value wins
    fp = _fingerprint([(48, 96, 96)] * 4, [(2.5, 0.8, 0.8)] * 4)
    short = plan_dataset(fp, _info(), PlannerOptions(device="cpu", training_seconds=full / 2))
    low = short.configurations["3d_lowres"]
    assert 5e9 < training_flops(low.topology, low.patch_size, 1, 3).at(2) <= 10e9
    assert "scaled by the training time" in short.explanations["3d_lowres"]


def test_cpu_whole_image_stage_keeps_full_resolution_when_a_patch_covers_a_quarter(monkeypatch):
    """Brain slabs (27×112×94 at 1.5 mm): at the whole-image stage's 20 GFLOP a patch on the
    full-resolution grid already covers ≥ 25 % of the median image, so the grid is not
    coarsened and no cascade is planned; a short training's smaller budget coarsens it."""
    import voxseg.devices

    monkeypatch.setattr(voxseg.devices, "cpu_has_fast_bf16", lambda: False)
    fp = _fingerprint([(27, 112, 94)] * 4, [(1.5, 1.5, 1.5)] * 4)
    plans = plan_dataset(fp, _info(), PlannerOptions(device="cpu"))
    full, low = plans.configurations["3d_fullres"], plans.configurations["3d_lowres"]
    assert math.prod(full.patch_size) / math.prod(full.median_shape) < 0.25
    assert low.spacing == full.spacing and low.data_from == "3d_fullres"
    assert math.prod(low.patch_size) / (27 * 112 * 94) >= 0.25
    assert 10e9 < training_flops(low.topology, low.patch_size, 1, 3).at(2) <= 20e9
    assert "3d_cascade_fullres" not in plans.configurations
    assert "spacing is kept" in plans.explanations["3d_lowres"]
    short = plan_dataset(fp, _info(), PlannerOptions(device="cpu", training_seconds=270))
    coarse = short.configurations["3d_lowres"]
    assert all(a > b for a, b in zip(coarse.spacing, full.spacing, strict=True))
    assert "3d_cascade_fullres" in short.configurations


def test_cpu_whole_image_lowres_of_thick_slices_terminates(monkeypatch):
    """A patch clipped to a fractional median shape (7.8 slices → 7) still covers it: the
    coarsening stops instead of shrinking the image to nothing (cord-like scans)."""
    import voxseg.devices

    monkeypatch.setattr(voxseg.devices, "cpu_has_fast_bf16", lambda: False)
    fp = _fingerprint([(21, 155, 155), (23, 155, 155), (22, 150, 160)], [(1.65, 0.69, 0.69)] * 3)
    low = plan_dataset(fp, _info(), PlannerOptions(device="cpu")).configurations["3d_lowres"]
    assert min(low.median_shape) >= 4 and min(low.patch_size) >= 4
    assert all(p >= m - 1 for p, m in zip(low.patch_size, low.median_shape, strict=True))


def test_batch_dice_follows_nnunet_and_reaches_the_loss(tmp_path):
    from voxseg.training import ModelConfig
    from voxseg.training.setup import _with_plan_batch_dice

    with_low = plan_dataset(
        _fingerprint([(150, 512, 512)] * 4, [(2.5, 0.8, 0.8)] * 4), _info(), PlannerOptions()
    ).configurations
    assert {n: c.batch_dice for n, c in with_low.items()} == {
        "2d": True,
        "3d_fullres": True,
        "3d_lowres": False,
        "3d_cascade_fullres": True,
    }
    small = plan_dataset(_fingerprint([(60, 90, 80)] * 3, [(1.0,) * 3] * 3), _info()).configurations
    assert small["3d_fullres"].batch_dice is False and small["2d"].batch_dice is True
    cfg = ModelConfig(dataset="X")
    assert _with_plan_batch_dice(cfg, True).loss.batch_dice is True
    assert _with_plan_batch_dice(cfg, None).loss.batch_dice is None
    user = apply_overrides(cfg, ["loss.batch_dice=false"])
    assert _with_plan_batch_dice(user, True).loss.batch_dice is False  # the user's choice wins
    ce = apply_overrides(cfg, ["loss.name=ce"])
    assert _with_plan_batch_dice(ce, True).loss.batch_dice is None  # CE takes no batch_dice


def test_base_features_override():
    fp = _fingerprint([(40, 64, 64)] * 3, [(3.0, 1.0, 1.0)] * 3)
    plans = plan_dataset(fp, _info(), PlannerOptions(device="cpu", base_features=4))
    assert plans.configurations["3d_fullres"].topology.features_per_stage[0] == 4


def test_cpu_2d_plan_is_wider_with_a_patch_smaller_than_the_slice():
    # 2D on a CPU: 16 first-stage features; at the FLOP budget the patch no longer holds the
    # whole 160 x 144 slice. 3D keeps 8; --base-features sets both.
    fp2 = _fingerprint([(1, 160, 144)] * 4, [(999.0, 1.0, 1.0)] * 4)
    c2 = plan_dataset(fp2, _info(), PlannerOptions(device="cpu")).configurations["2d"]
    assert c2.topology.features_per_stage[0] == 16
    assert c2.patch_size[0] < 160 and c2.patch_size[1] < 144
    assert c2.estimated_training_gflops <= PlannerOptions().cpu_gflops_per_iteration
    fp3 = _fingerprint([(40, 64, 64)] * 3, [(3.0, 1.0, 1.0)] * 3)
    c3 = plan_dataset(fp3, _info(), PlannerOptions(device="cpu")).configurations["3d_fullres"]
    assert c3.topology.features_per_stage[0] == 8
    user = plan_dataset(fp2, _info(), PlannerOptions(device="cpu", base_features=8))
    assert user.configurations["2d"].topology.features_per_stage[0] == 8
    assert user.configurations["2d"].patch_size == [160, 160]  # the slice, rounded up to 32


def test_pseudo_3d_dataset_plans_only_2d():
    fp = _fingerprint([(1, 300, 400), (1, 280, 420), (1, 320, 380)], [(999.0, 0.5, 0.5)] * 3)
    plans = plan_dataset(fp, _info(channels=("R", "G", "B")), PlannerOptions())
    assert list(plans.configurations) == ["2d"]
    c2 = plans.configurations["2d"]
    assert c2.spatial_dims == 2 and c2.spacing == [0.5, 0.5]
    assert c2.topology.spatial_dims == 2
    assert all(
        p <= math.ceil(m / 64) * 64 for p, m in zip(c2.patch_size, c2.median_shape, strict=True)
    )
    assert c2.batch_size >= 2
    assert [n.scheme for n in plans.normalization] == ["zscore"] * 3


def test_normalization_choice_and_mask_rule():
    fp = _fingerprint(
        [(60, 90, 80)] * 3,
        [(1.0, 1.0, 1.0)] * 3,
        channels=("MR", "noNorm", "rgb"),
        crop_fraction=0.5,
    )
    plans = plan_dataset(fp, _info(channels=("MR", "noNorm", "rgb")), PlannerOptions())
    assert [n.scheme for n in plans.normalization] == ["zscore", "none", "rgb_to_0_1"]
    assert plans.use_mask_for_norm and plans.normalization[0].params == {"use_mask": True}
    fp_full = _fingerprint([(60, 90, 80)] * 3, [(1.0, 1.0, 1.0)] * 3, channels=("MR",))
    plans = plan_dataset(fp_full, _info(channels=("MR",)), PlannerOptions())
    assert not plans.use_mask_for_norm


def test_overrides_spacing_patch_and_set(tmp_path):
    fp = _fingerprint([(60, 90, 80)] * 3, [(1.0, 1.0, 1.0)] * 3)
    opts = PlannerOptions(plan_name="mine", spacing=[2.0, 1.5, 1.5], patch_size=[20, 40, 40])
    plans = plan_dataset(fp, _info(), opts)
    full = plans.configurations["3d_fullres"]
    assert full.spacing == [2.0, 1.5, 1.5]
    assert full.median_shape == [30, 60, 53]
    assert all(p >= q for p, q in zip(full.patch_size, [20, 40, 40], strict=True))
    changed = apply_overrides(plans, ["configurations.3d_fullres.batch_size=7"])
    assert changed.configurations["3d_fullres"].batch_size == 7
    write_plans(changed, tmp_path)
    write_plans(plan_dataset(fp, _info()), tmp_path)
    assert read_plans(tmp_path, "mine") == changed
    assert read_plans(tmp_path, "default").plan_name == "default"


def test_orientation_permutes_spacing():
    # array axis z points to the patient's x (L), y to P, x to S: RAS puts z last
    fp = _fingerprint([(40, 90, 120)] * 3, [(3.0, 1.0, 0.5)] * 3)
    plans = plan_dataset(fp, _info(), PlannerOptions(orientation="LPS"))
    full = plans.configurations["3d_fullres"]
    assert sorted(full.spacing) == [0.5, 1.0, 3.0]
    assert full.spacing[2] == pytest.approx(3.0)  # ITK x (L) is the last array axis
    assert plans.orientation == "LPS"


def _with_centroids(fp, centroids_per_case):
    cases = [
        c.model_copy(update={"label_centroids": cen})
        for c, cen in zip(fp.cases, centroids_per_case, strict=True)
    ]
    return fp.model_copy(update={"cases": cases})


def test_lateralised_label_removes_its_axis_from_mirroring():
    # label 1 always on the low-x side, label 2 on both sides around the centre
    fp = _fingerprint([(40, 90, 120)] * 4, [(3.0, 1.0, 1.0)] * 4)
    cen = [
        {"1": [0.05, -0.1, -0.5 - 0.05 * i], "2": [0.0, 0.1 * (-1) ** i, 0.3 * (-1) ** i]}
        for i in range(4)
    ]
    plans = plan_dataset(_with_centroids(fp, cen), _info(), PlannerOptions(device="cpu"))
    assert plans.configurations["3d_fullres"].mirror_axes == [0, 1]
    assert plans.configurations["2d"].mirror_axes == [0]
    assert "axis 2 (labels 1)" in plans.configurations["3d_fullres"].explanations["mirror_axes"]


def test_centred_or_inconsistent_labels_keep_every_axis_mirrored():
    fp = _fingerprint([(40, 90, 120)] * 4, [(3.0, 1.0, 1.0)] * 4)
    # one case of four on the other side: 75% < the 90% agreement rule
    cen = [{"1": [0.0, 0.1, 0.5 if i else -0.5]} for i in range(4)]
    plans = plan_dataset(_with_centroids(fp, cen), _info(), PlannerOptions(device="cpu"))
    assert plans.configurations["3d_fullres"].mirror_axes == [0, 1, 2]
    assert plans.configurations["2d"].mirror_axes == [0, 1]


def test_lateral_rule_is_applied_after_reorientation():
    # two cases stored with array axis 2 reversed: their raw centroid along it is +0.5,
    # which is -0.5 once reoriented like the others, so the label is lateralised
    flipped = np.diag([1.0, 1.0, -1.0]).tolist()
    fp = _fingerprint([(40, 90, 120)] * 4, [(3.0, 1.0, 1.0)] * 4)
    cases = [
        c.model_copy(
            update={
                "label_centroids": {"1": [0.0, 0.0, 0.5 if i < 2 else -0.5]},
                **({"direction": flipped, "orientation": "LPI"} if i < 2 else {}),
            }
        )
        for i, c in enumerate(fp.cases)
    ]
    fp = fp.model_copy(update={"cases": cases})
    plans = plan_dataset(fp, _info(), PlannerOptions(device="cpu", orientation="RAS"))
    assert len(plans.configurations["3d_fullres"].mirror_axes) == 2
