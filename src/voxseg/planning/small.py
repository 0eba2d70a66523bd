"""Structures too small for a configuration's grid: lesions, nodes, small vessels.

A class is *small* for a configuration when its typical connected object holds fewer than
``SMALL_OBJECT_VOXELS`` of that configuration's voxels. The typical object is the size under
which ``SMALL_OBJECT_PERCENTILE`` % of the class's labelled *volume* lies (the percentile of
the object volumes the fingerprint recorded over all training cases, each object weighted by
its volume), so a tissue in one large piece with a rim of small fragments is not small. The CPU
plan's whole-image ``3d_lowres`` coarsens the grid until the median image fits one patch;
an organ keeps hundreds of voxels there, a 5 mm lesion a handful, and a network trained on
that grid never predicts it (measured: liver lesions of 4–9 mm at 3.69 × 1.89 × 1.89 mm,
2–40 voxels each, Dice 0.000 on six held-out cases while the liver reached 0.94).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from voxseg.data.fingerprint import Fingerprint
from voxseg.planning.plans import Plans

#: An object under 27 voxels (a 3×3×3 block, one 3³ convolution's footprint) is mostly
#: partial-volume boundary on that grid and, after the network's first 2× pooling, under
#: two voxels across: the lesions above (2–40 voxels, median ≈ 15) were never predicted,
#: kidneys (≈ 70 voxels and more at p10) were (Dice 0.82).
SMALL_OBJECT_VOXELS = 27.0
#: The typical object of a class: the size under which this percentage of the class's
#: labelled volume lies (the smaller objects of a class are the ones a coarse grid loses
#: first). Weighted by volume, not counted: grey matter in 40 mm brain slabs is 83 objects,
#: most of them fragments of a few mm³ (p10 of the count 3.4 mm³) in a few pieces of
#: 10⁵ mm³ (p10 of the volume 1.5·10⁵ mm³); liver lesions of 4–10 mm: 53 mm³ counted,
#: 140 mm³ weighted, both a few voxels of the whole-image grid.
SMALL_OBJECT_PERCENTILE = 10.0
#: A small class lives inside a host class when at least this share of its training objects
#: sit inside that one label (the fingerprint's ``label_object_hosts``): liver lesions in the
#: liver. Its predicted objects outside the host are then dropped (the small stage alone,
#: 15 CPU minutes, put 4 of 5 lesion false positives in the kidney and the background: pooled
#: lesion Dice 0.328; keeping only objects inside the whole stage's liver gave 0.558 with the
#: same 6 of 9 lesions found, benchmarks/RESULTS.md).
HOST_SHARE = 0.9


@dataclass(frozen=True)
class SmallClass:
    """One class too small for the grid: its typical object in mm³ and in voxels."""

    name: str
    value: int
    typical_mm3: float
    typical_voxels: float
    num_objects: int
    host: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": self.value,
            "typical_object_mm3": round(self.typical_mm3, 2),
            "typical_object_voxels": round(self.typical_voxels, 2),
            "num_objects": self.num_objects,
            "inside": self.host,
        }


@dataclass(frozen=True)
class SmallStructures:
    """The classes that are small on one configuration's grid, and the rule in words."""

    configuration: str
    voxel_mm3: float
    classes: list[SmallClass] = field(default_factory=list)
    why: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "configuration": self.configuration,
            "voxel_mm3": round(self.voxel_mm3, 3),
            "threshold_voxels": SMALL_OBJECT_VOXELS,
            "percentile": SMALL_OBJECT_PERCENTILE,
            "classes": [c.to_dict() for c in self.classes],
            "why": self.why,
        }


def find_small_structures(
    fingerprint: Fingerprint, plans: Plans, configuration: str
) -> SmallStructures:
    """The classes whose typical object holds fewer than ``SMALL_OBJECT_VOXELS`` voxels of
    ``configuration``'s grid (region labels, given as lists of values, are not measured)."""
    cfg = plans.configuration(configuration)
    voxel = float(math.prod(cfg.spacing))
    small: list[SmallClass] = []
    typical: list[str] = []
    for name, value in plans.labels.items():
        if not isinstance(value, int) or value == 0 or name == "ignore":
            continue
        volumes = [
            v
            for case in fingerprint.cases
            for v in case.label_object_volumes_mm3.get(str(value), [])
        ]
        if not volumes:
            continue
        mm3 = volume_weighted_percentile(volumes, SMALL_OBJECT_PERCENTILE)
        voxels = mm3 / voxel
        typical.append(f"{name} {mm3:.0f} mm³ = {voxels:.1f} voxels")
        if voxels < SMALL_OBJECT_VOXELS:
            host = host_label(fingerprint, value)
            small.append(SmallClass(name, value, mm3, voxels, len(volumes), host))
    unit = "mm²" if cfg.spatial_dims == 2 else "mm³"
    grid = " × ".join(f"{s:.2f}" for s in cfg.spacing)
    rule = (
        f"typical object ({SMALL_OBJECT_PERCENTILE:g} % of the labelled volume in smaller "
        "objects) vs the "
        f"{configuration} voxel ({grid} mm = {voxel:.2f} {unit}; small below "
        f"{SMALL_OBJECT_VOXELS:g} voxels): " + ("; ".join(typical) or "no labelled objects")
    )
    if small:
        names = ", ".join(c.name for c in small)
        why = f"{names}: too small for {configuration} ({rule})"
        inside = [f"{c.name} inside label {c.host}" for c in small if c.host is not None]
        if inside:
            why += (
                f"; {', '.join(inside)} (at least {HOST_SHARE:.0%} of its training objects): "
                "predicted objects elsewhere are dropped"
            )
    else:
        why = f"no class is too small for {configuration} ({rule})"
    return SmallStructures(configuration, voxel, small, why)


def volume_weighted_percentile(volumes: list[float], percent: float) -> float:
    """The smallest object volume ``v`` such that objects of volume ``v`` or less hold at
    least ``percent`` % of the total volume."""
    v = np.sort(np.asarray(volumes, dtype=float))
    share = np.cumsum(v) / v.sum()
    return float(v[min(int(np.searchsorted(share, percent / 100.0)), len(v) - 1)])


def host_label(fingerprint: Fingerprint, value: int) -> int | None:
    """The foreground label that holds at least ``HOST_SHARE`` of ``value``'s objects over
    the training cases (None: most lie in the background or in different labels)."""
    counts: dict[int, int] = {}
    for case in fingerprint.cases:
        for host, n in case.label_object_hosts.get(str(value), {}).items():
            counts[int(host)] = counts.get(int(host), 0) + n
    total = sum(counts.values())
    if not total:
        return None
    host, n = max(counts.items(), key=lambda item: item[1])
    return host if host != 0 and n >= HOST_SHARE * total else None
