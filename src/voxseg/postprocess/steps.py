"""Post-processing steps for label maps, registered by name and built from config dicts.

A step config is ``{"name": "keep_largest_component", "labels": [1]}``: the name picks the
registered step, the other keys are its arguments. A step is called as
``step(seg, spacing) -> seg`` on an integer ``[z, y, x]`` label map and returns a new map;
removed voxels become background (0), and no step ever writes one label over another.
Connected components come from ``cc3d`` (26-connectivity by default; in a 2D image, z of size
1, it acts as 8-connectivity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cc3d
import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator
from scipy import ndimage

from voxseg._registry import Registry
from voxseg.errors import VoxsegError


class PostprocessingStep(Protocol):
    def __call__(self, seg: np.ndarray, spacing: Sequence[float]) -> np.ndarray: ...


POSTPROCESSING: Registry[PostprocessingStep] = Registry("postprocessing")


def voxel_measure(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Voxel volume in mm³ (a 2D image, z of size 1: pixel area in mm²)."""
    spacing = tuple(float(s) for s in spacing)
    return float(np.prod(spacing[1:] if len(shape) == 3 and shape[0] == 1 else spacing))


def _label_values(seg: np.ndarray, labels: Sequence[int] | None) -> list[int]:
    if labels is not None:
        return [int(v) for v in labels]
    return [int(v) for v in np.unique(seg) if v != 0]


def _sizes(components: np.ndarray) -> np.ndarray:
    return np.bincount(components.ravel())


@POSTPROCESSING.register("remove_small_components")
@dataclass(frozen=True)
class RemoveSmallComponents:
    """Remove connected components smaller than ``min_volume_mm3`` (2D images: mm²).

    ``per_class``: components of each label separately; otherwise components of the union of
    ``labels`` (default: all foreground), removed whole (every label in them).
    """

    min_volume_mm3: float
    per_class: bool = True
    labels: tuple[int, ...] | None = None
    connectivity: int = 26

    def __call__(self, seg: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        values = _label_values(seg, self.labels)
        selected = np.isin(seg, values)
        source = np.where(selected, seg, 0) if self.per_class else selected
        components = cc3d.connected_components(source, connectivity=self.connectivity)
        small = _sizes(components) * voxel_measure(seg.shape, spacing) < self.min_volume_mm3
        small[0] = False
        out = seg.copy()
        out[small[components]] = 0
        return out


@POSTPROCESSING.register("keep_largest_component")
@dataclass(frozen=True)
class KeepLargestComponent:
    """Keep only the largest connected component (ties: the first in scan order).

    ``per_class``: for each label separately; otherwise of the union of ``labels`` (default:
    all foreground, nnU-Net's "all foreground as one region"), other components removed whole.
    ``max_removed_mm3``: only components up to this volume (2D: mm²) are removed, larger
    ones stay beside the largest (``None``: every other component goes, as in nnU-Net).
    """

    labels: tuple[int, ...] | None = None
    per_class: bool = True
    connectivity: int = 26
    max_removed_mm3: float | None = None

    def __call__(self, seg: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        values = _label_values(seg, self.labels)
        out = seg.copy()
        groups = [[v] for v in values] if self.per_class else [values]
        for group in groups:
            mask = np.isin(seg, group)
            if not mask.any():
                continue
            components = cc3d.connected_components(mask, connectivity=self.connectivity)
            sizes = _sizes(components)
            sizes[0] = 0
            remove = np.ones(len(sizes), bool)
            remove[[0, int(np.argmax(sizes))]] = False
            if self.max_removed_mm3 is not None:
                remove &= sizes * voxel_measure(seg.shape, spacing) <= self.max_removed_mm3
            out[remove[components]] = 0
        return out


def keep_largest_measured(
    seg: np.ndarray,
    spacing: Sequence[float],
    group: Sequence[int],
    truth: np.ndarray,
    connectivity: int = 26,
) -> tuple[np.ndarray, float]:
    """``seg`` with only the largest component of the voxels in ``group`` kept (as
    :class:`KeepLargestComponent` over ``group`` as one region), and the volume (mm³; 2D: mm²)
    of the largest *false* component it removed: less than half of it in ``truth`` (a
    boolean mask of the reference). 0 when it removes no false component."""
    mask = np.isin(seg, group)
    components = cc3d.connected_components(mask, connectivity=connectivity)
    sizes = _sizes(components)
    sizes[0] = 0
    out = seg.copy()
    if np.count_nonzero(sizes) < 2:
        return out, 0.0
    largest = int(np.argmax(sizes))
    out[mask & (components != largest)] = 0
    inside = np.bincount(components[truth], minlength=len(sizes))
    false = 2 * inside < sizes
    false[[0, largest]] = False
    return out, float(sizes[false].max(initial=0)) * voxel_measure(seg.shape, spacing)


@POSTPROCESSING.register("fill_holes")
@dataclass(frozen=True)
class FillHoles:
    """Fill background cavities enclosed by a label, per label (``scipy.ndimage``).

    3D by default (a hole must be enclosed in 3D); ``slice_wise`` fills each 2D slice along
    ``axis`` (0 = z) instead. Only background voxels are filled; other labels stay.
    """

    labels: tuple[int, ...] | None = None
    slice_wise: bool = False
    axis: int = 0

    def __call__(self, seg: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        out = seg.copy()
        for value in _label_values(seg, self.labels):
            mask = out == value
            if not mask.any():
                continue
            box = ndimage.find_objects(mask.astype(np.uint8))[0]
            sub = mask[box]
            if self.slice_wise:
                filled = np.stack(
                    [ndimage.binary_fill_holes(s) for s in np.moveaxis(sub, self.axis, 0)],
                    axis=self.axis,
                )
            else:
                filled = ndimage.binary_fill_holes(sub)
            region = out[box]
            region[filled & (region == 0)] = value
        return out


#: how far (voxels of the output grid) an object may reach past its host label and still count
#: as inside it: the host comes from a coarser stage whose border is a voxel or two off
INSIDE_MARGIN_VOXELS = 2


def with_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled: the background enclosed in 3D or within any slice
    along any axis (a lesion that a coarse stage left as a gap in its organ is enclosed
    in its slices even where the gap opens to the outside between slices)."""
    box = ndimage.find_objects(mask.astype(np.uint8))
    if not box or mask[box[0]].all():
        return mask
    sub = mask[box[0]]  # outside the box is background: filling inside it is the same
    filled = ndimage.binary_fill_holes(sub)
    if sub.ndim == 3:
        plane = ndimage.generate_binary_structure(2, 1)
        for axis in range(3):
            structure = np.zeros((3, 3, 3), dtype=bool)
            np.moveaxis(structure, axis, 0)[1] = plane  # connectivity within the slice only
            filled |= ndimage.binary_fill_holes(sub, structure=structure)
    out = mask.copy()
    out[box[0]] = filled
    return out


def keep_objects_inside(
    seg: np.ndarray,
    value: int,
    host: np.ndarray,
    *,
    margin: int = INSIDE_MARGIN_VOXELS,
    min_fraction: float = 0.5,
    connectivity: int = 26,
) -> np.ndarray:
    """``seg`` without the connected objects of ``value`` of which less than
    ``min_fraction`` lies inside the boolean ``host`` mask, its holes filled
    (:func:`with_holes`) and grown by ``margin`` voxels (6-connected steps); removed voxels
    become background."""
    mask = seg == value
    if not mask.any():
        return seg
    components = cc3d.connected_components(mask, connectivity=connectivity)
    sizes = _sizes(components)

    def outside(region: np.ndarray) -> np.ndarray:
        grown = ndimage.binary_dilation(region, iterations=margin) if margin > 0 else region
        drop = np.bincount(components[grown], minlength=sizes.size) < min_fraction * sizes
        drop[0] = False
        return drop

    drop = outside(host)
    if drop.any():  # filling the holes takes ~1 s on a CT-sized organ: only when it matters
        drop &= outside(with_holes(host))
    out = seg.copy()
    out[drop[components]] = 0
    return out


def build_step(config: Mapping[str, Any] | PostprocessingStep) -> PostprocessingStep:
    """A step from ``{"name": ..., **arguments}`` (a built step is returned as is)."""
    if callable(config):
        return config
    if "name" not in config:
        raise VoxsegError(f"post-processing step {dict(config)} has no 'name'")
    kwargs = {k: v for k, v in config.items() if k != "name"}
    if isinstance(kwargs.get("labels"), list):
        kwargs["labels"] = tuple(kwargs["labels"])
    try:
        return POSTPROCESSING.build(config["name"], **kwargs)
    except TypeError as exc:
        raise VoxsegError(f"post-processing step {dict(config)}: {exc}") from exc


class PostprocessingStepConfig(BaseModel):
    """One step of a model's ``postprocessing`` (``config.json``, ``postprocessing.json``):
    ``{"name": "keep_largest_component", "labels": [1]}``. The name must be a registered step
    and every other key one of that step's arguments; both are checked when the config is
    read, so a misspelt step or argument is an error, never ignored."""

    model_config = ConfigDict(extra="allow")

    name: str

    @model_validator(mode="after")
    def _buildable(self) -> PostprocessingStepConfig:
        try:
            build_step(self.arguments())
        except VoxsegError as exc:
            raise ValueError(str(exc)) from exc
        return self

    def arguments(self) -> dict[str, Any]:
        """The step config as a plain dict (``name`` and its arguments)."""
        return self.model_dump(mode="json")


def apply_postprocessing(
    seg: np.ndarray,
    spacing: Sequence[float],
    steps: Sequence[Mapping[str, Any] | PostprocessingStepConfig | PostprocessingStep],
) -> np.ndarray:
    """Apply the steps in order to a ``[z, y, x]`` label map (the input is not modified)."""
    if seg.ndim != 3:
        raise VoxsegError(f"post-processing needs a [z, y, x] label map, got shape {seg.shape}")
    out = seg
    for config in steps:
        if isinstance(config, PostprocessingStepConfig):
            config = config.arguments()
        out = build_step(config)(out, spacing)
    return out if out is not seg else seg.copy()
