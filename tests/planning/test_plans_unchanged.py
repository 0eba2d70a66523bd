"""Plans of synthetic fingerprints stay byte-identical (JSON) to ``plans_reference.json``.

The reference was written by the planner of commit b3fbc39, before its device rules became
strategy objects, so a refactoring that changes any plan (a value or a rule's wording) fails
here. A deliberate change of a planning rule rewrites the reference on purpose
(``python tests/planning/test_plans_unchanged.py``) and says so in its commit.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from voxseg.data.dataset import DatasetInfo
from voxseg.data.fingerprint import CaseFingerprint, ChannelStats, Fingerprint
from voxseg.planning import PlannerOptions, plan_dataset

REFERENCE = Path(__file__).with_name("plans_reference.json")


def _fingerprint(shapes, spacings, orientations=None, centroids=None, channels=1, crop=1.0):
    eye = np.eye(3).tolist()
    flip = [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    cases = []
    for i, (sh, sp) in enumerate(zip(shapes, spacings, strict=True)):
        orient = (orientations or ["LPS"] * len(shapes))[i]
        cases.append(
            CaseFingerprint(
                case_id=f"c{i}",
                shape=list(sh),
                spacing=list(sp),
                orientation=orient,
                direction=eye if orient == "LPS" else flip,
                shape_after_crop=[max(1, int(round(s * crop))) if s > 1 else 1 for s in sh],
                label_centroids=(centroids or {}),
            )
        )
    stats = ChannelStats(
        mean=50, std=10, min=0, max=100, percentile_00_5=5, percentile_99_5=95, num_samples=10
    )
    return Fingerprint(
        dataset="Dataset009_X",
        num_channels=channels,
        samples_total=10,
        seed=0,
        cases=cases,
        channels=[stats] * channels,
    )


def _info(channels=("CT",)):
    return DatasetInfo(
        channel_names={str(i): c for i, c in enumerate(channels)},
        labels={"background": 0, "liver": 1, "tumour": 2},
        numTraining=5,
    )


SHAPES_ANISO = [(60, 512, 512), (48, 480, 500), (70, 512, 512)]
SPACINGS_ANISO = [(3.0, 0.8, 0.8), (2.5, 0.7, 0.7), (3.5, 0.9, 0.9)]
SHAPES_ISO = [(160, 170, 150), (150, 160, 160), (140, 180, 170)]
SPACINGS_ISO = [(1.0, 1.0, 1.0), (1.1, 1.0, 1.0), (1.0, 0.9, 0.9)]
SHAPES_2D = [(1, 300, 280), (1, 256, 320), (1, 290, 300)]
SPACINGS_2D = [(1.0, 0.5, 0.5), (1.0, 0.6, 0.6), (1.0, 0.5, 0.55)]
SHAPES_SMALL = [(48, 96, 96), (44, 100, 90), (50, 96, 96), (46, 92, 98)]
SPACINGS_SMALL = [(2.5, 0.8, 0.8)] * 4
SHAPES_CORD = [(21, 155, 155), (23, 155, 155), (22, 150, 160)]
SPACINGS_CORD = [(1.65, 0.69, 0.69)] * 3


def _scenarios():
    """(name, fingerprint, info, options, AMX?) for each plan in the reference."""
    aniso = _fingerprint(SHAPES_ANISO, SPACINGS_ANISO, crop=0.8)
    iso = _fingerprint(SHAPES_ISO, SPACINGS_ISO)
    two_d = _fingerprint(SHAPES_2D, SPACINGS_2D, channels=3)
    small = _fingerprint(SHAPES_SMALL, SPACINGS_SMALL)
    cord = _fingerprint(SHAPES_CORD, SPACINGS_CORD)
    mixed = _fingerprint(
        SHAPES_ISO,
        SPACINGS_ISO,
        orientations=["LPS", "RPS", "LPS"],
        centroids={"1": [0.1, 0.0, 0.6], "2": [0.0, -0.5, -0.6]},
    )
    rgb = _info(("R", "G", "B"))
    mr = _info(("T2",))
    out = []
    timings = [("cuda", None, False), ("cuda", 219.0, False), ("cpu", None, False)]
    timings += [("cpu", None, True), ("cpu", 219.0, False), ("cpu", 900.0, False)]
    for device, seconds, amx in timings:
        opts = PlannerOptions(device=device, training_seconds=seconds)
        tag = f"{device}_t{seconds}_amx{amx}"
        out.append((f"aniso_{tag}", aniso, _info(), opts, amx))
        out.append((f"iso_{tag}", iso, mr, opts, amx))
        out.append((f"2d_{tag}", two_d, rgb, opts, amx))
        out.append((f"small_{tag}", small, _info(), opts, amx))
    for device in ("cuda", "cpu"):
        out.append((f"cord_{device}", cord, mr, PlannerOptions(device=device), False))
        out.append((f"mixed_{device}", mixed, _info(), PlannerOptions(device=device), False))
    cpu = PlannerOptions(device="cpu")
    more = {
        "cpu_patch_narrowed": cpu.model_copy(update={"patch_size": [128, 64, 64]}),
        "cpu_patch_2d": cpu.model_copy(update={"patch_size": [128, 128]}),
        "cpu_patch_base": cpu.model_copy(update={"patch_size": [128, 64, 64], "base_features": 8}),
        "cpu_lowres_override": cpu.model_copy(update={"cpu_lowres_gflops_per_iteration": 7.0}),
        "cpu_budget_3": cpu.model_copy(update={"cpu_gflops_per_iteration": 3.0}),
        "cpu_spacing": cpu.model_copy(update={"spacing": [2.0, 1.0, 1.0]}),
        "cuda_gpu_24": PlannerOptions(gpu_memory_gb=24),
        "cuda_gpu_2": PlannerOptions(gpu_memory_gb=2),
        "cuda_patch": PlannerOptions(patch_size=[32, 128, 128]),
        "cuda_base_16": PlannerOptions(base_features=16),
        "cuda_orientation_none": PlannerOptions(orientation="none"),
    }
    for name, opts in more.items():
        out.append((name, small if "patch" in name else aniso, _info(), opts, False))
    return out


def _plan_json(fp, info, opts, amx) -> str:
    import voxseg.devices

    saved = voxseg.devices.cpu_has_fast_bf16
    voxseg.devices.cpu_has_fast_bf16 = lambda: amx
    try:
        data = plan_dataset(fp, info, opts).model_dump(mode="json")
    finally:
        voxseg.devices.cpu_has_fast_bf16 = saved
    data.pop("voxseg_version")
    return json.dumps(data, sort_keys=True)


@functools.cache
def _reference() -> dict[str, str]:
    return json.loads(REFERENCE.read_text())


@pytest.mark.parametrize("scenario", _scenarios(), ids=lambda s: s[0])
def test_plan_is_unchanged(scenario):
    name, fp, info, opts, amx = scenario
    reference = _reference()
    assert name in reference, f"{REFERENCE.name} has no plan {name!r}: rewrite it on purpose"
    assert _plan_json(fp, info, opts, amx) == reference[name]


if __name__ == "__main__":
    plans = {s[0]: _plan_json(*s[1:]) for s in _scenarios()}
    REFERENCE.write_text(json.dumps(plans, indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE} ({len(plans)} plans)", file=sys.stderr)
