"""Samplers choose the start corner of a crop of ``size`` inside a case of ``shape``.

A crop may reach outside the image (it is padded when read), so a centre near the border
is still usable, as in nnU-Net's loader. All randomness comes from the ``rng`` argument,
which the batch source derives from ``(seed, iteration, sample)``: a resumed run draws the
same patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, get_args

import numpy as np
from pydantic import BaseModel, Field

from voxseg._registry import Registry
from voxseg.sampling.paste import PasteConfig


class Sampler(Protocol):
    def __call__(
        self,
        shape: Sequence[int],
        size: Sequence[int],
        rng: np.random.Generator,
        *,
        force_foreground: bool,
        foreground_locations: dict[str, Any],
        extra: dict[str, Any],
    ) -> np.ndarray: ...


SAMPLERS: Registry[Sampler] = Registry("samplers")
#: the foreground sampler's rules: which stored voxel it centres on, and where it puts it
Balance = Literal["voxels", "objects"]
Placement = Literal["centre", "anywhere"]


class SamplingConfig(BaseModel):
    """How patches are chosen (``name`` is a registered sampler or a dotted path)."""

    name: str = "foreground"
    foreground_fraction: float = Field(
        1 / 3, ge=0, le=1, description="share of each batch centred on a foreground voxel"
    )
    classes: list[int] | None = Field(
        None, description="classes eligible for foreground centring (default: all but ignore)"
    )
    roi_label: int | None = Field(
        None, description="roi sampler: centres restricted to voxels of this stored class"
    )
    balance: Balance = Field(
        "voxels",
        description="foreground sampler: a forced centre is a stored voxel of the class "
        "('voxels', nnU-Net: large objects are centred on in proportion to their size) or "
        "a stored voxel of one of the class's connected objects drawn uniformly ('objects': "
        "a 3 mm lesion as often as a 3 cm one)",
    )
    placement: Placement = Field(
        "centre",
        description="foreground sampler: the forced voxel is the crop's centre ('centre', "
        "nnU-Net) or lies anywhere in the crop, uniformly ('anywhere': a small object is not "
        "always at the centre of what the network sees)",
    )
    paste: PasteConfig | None = Field(
        None,
        description="copy objects of some classes into other training patches, inside a host "
        "channel or label (voxseg.sampling.paste); off by default",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)


def _random_start(shape, size, rng) -> np.ndarray:
    """A start such that the crop lies inside the image where it fits (else the image lies
    inside the crop)."""
    shape, size = np.asarray(shape), np.asarray(size)
    low, high = np.minimum(0, shape - size), np.maximum(0, shape - size)
    return np.array([rng.integers(lo, hi + 1) for lo, hi in zip(low, high, strict=True)])


def _start_around(centre, shape, size, rng: np.random.Generator | None = None) -> np.ndarray:
    """Start so ``centre`` is the crop centre (with ``rng``: anywhere in the crop, uniformly),
    clipped so the crop overlaps the image."""
    centre, shape, size = np.asarray(centre), np.asarray(shape), np.asarray(size)
    if rng is None:
        start = centre - size // 2
    else:
        start = centre - np.array([rng.integers(s) for s in size])
    low = np.minimum(0, shape - size)
    high = np.maximum(shape - size, 0)
    return np.clip(start, low, high)


@SAMPLERS.register("uniform")
class UniformSampler:
    """Crops placed uniformly at random."""

    def __init__(self, **_: Any) -> None:
        pass

    def __call__(self, shape, size, rng, *, force_foreground, foreground_locations, extra):
        return _random_start(shape, size, rng)


#: ``extra`` key under which the batch source gives an object-balanced sampler, per class
#: key, the connected object (26-connected, numbered from 1) of each stored location
LOCATION_OBJECTS = "location_objects"


@SAMPLERS.register("foreground")
class ForegroundSampler:
    """nnU-Net's oversampling: forced samples are centred on a stored foreground location
    of a class drawn uniformly among the classes present (classes balanced); the rest are
    uniform. With ``balance="objects"`` the location is drawn from one of the class's
    connected objects in the case, each object equally likely (the batch source supplies
    ``extra[LOCATION_OBJECTS]`` when :attr:`needs_objects`)."""

    def __init__(
        self,
        classes: list[int] | None = None,
        balance: str = "voxels",
        placement: str = "centre",
        **_: Any,
    ) -> None:
        for name, value, rule in (
            ("balance", balance, Balance),
            ("placement", placement, Placement),
        ):
            if value not in get_args(rule):
                raise ValueError(
                    f"sampling.{name} must be {' or '.join(map(repr, get_args(rule)))}, "
                    f"got {value!r}"
                )
        self.classes = None if classes is None else {str(c) for c in classes}
        self.needs_objects = balance == "objects"
        self.anywhere = placement == "anywhere"

    def __call__(self, shape, size, rng, *, force_foreground, foreground_locations, extra):
        if force_foreground:
            present = [
                k
                for k, locs in sorted(foreground_locations.items())
                if len(locs) and (self.classes is None or k in self.classes)
            ]
            if present:
                key = present[rng.integers(len(present))]
                locs = foreground_locations[key]
                objects = (extra.get(LOCATION_OBJECTS) or {}).get(key)
                if self.needs_objects and objects is not None and len(objects) == len(locs):
                    ids = np.asarray(objects)
                    chosen = rng.choice(np.unique(ids))
                    pick = rng.choice(np.flatnonzero(ids == chosen))
                else:
                    pick = rng.integers(len(locs))
                return _start_around(
                    np.asarray(locs[pick]), shape, size, rng if self.anywhere else None
                )
        return _random_start(shape, size, rng)


@SAMPLERS.register("roi")
class RoiSampler:
    """Every crop is centred on a stored location of ``roi_label`` (e.g. a body or organ
    mask from an earlier stage): training never sees patches outside the ROI."""

    def __init__(self, roi_label: int | None = None, **_: Any) -> None:
        if roi_label is None:
            raise ValueError("the roi sampler needs sampling.roi_label")
        self.key = str(roi_label)

    def __call__(self, shape, size, rng, *, force_foreground, foreground_locations, extra):
        locs = foreground_locations.get(self.key) or []
        if not len(locs):
            return _random_start(shape, size, rng)
        return _start_around(np.asarray(locs[rng.integers(len(locs))]), shape, size)


@SAMPLERS.register("centerline")
class CenterlineSampler:
    """Crops centred on centerline points given per case in ``extra["centerline_points"]``
    (voxel indices), jittered by ``jitter`` voxels; the vessel workflow provides them."""

    def __init__(self, jitter: float = 0.0, **_: Any) -> None:
        self.jitter = float(jitter)

    def __call__(self, shape, size, rng, *, force_foreground, foreground_locations, extra):
        points = extra.get("centerline_points")
        if points is None or not len(points):
            return _random_start(shape, size, rng)
        centre = np.asarray(points[rng.integers(len(points))], dtype=float)
        centre = np.round(centre + rng.normal(0, self.jitter, size=centre.shape)).astype(int)
        return _start_around(centre, shape, size)


def build_sampler(config: SamplingConfig) -> Sampler:
    kwargs = dict(config.kwargs)
    SAMPLERS.checked(config.name, kwargs)
    if config.classes is not None:
        kwargs.setdefault("classes", config.classes)
    if config.roi_label is not None:
        kwargs.setdefault("roi_label", config.roi_label)
    if config.balance != "voxels":
        kwargs.setdefault("balance", config.balance)
    if config.placement != "centre":
        kwargs.setdefault("placement", config.placement)
    return SAMPLERS.build(config.name, **kwargs)
