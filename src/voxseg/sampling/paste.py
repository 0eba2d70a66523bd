"""Copy-paste of labelled objects into training patches (TumorCP, Yang et al. 2021).

A small class with few training objects is memorised: a stage that found 37 of the 39 liver
lesions it trained on found 39 of 56 new ones (``benchmarks/RESULTS.md``). Pasting the
training objects of a class at new places inside their host tissue, mirrored and with their
contrast scaled, shows the network the same lesions on other backgrounds and fainter.

An object is a 26-connected component of a pasted class in a training case, kept with a
margin of ``MARGIN`` voxels. It is pasted where its mask, grown by one voxel, lies on free
host voxels of the patch (the host channel or label, and no foreground label yet). Per image
channel, the object's values are taken relative to the mean of its own surroundings (the
shell two voxels out, beyond the one-voxel rim) and added to the mean of the target's
surroundings, scaled by a contrast drawn from ``contrast``:

    new = host_mean + g · (donor − donor_mean)

inside the object; in the one-voxel rim around it the patch keeps half of its own value, so
the partial-volume edge of the donor is carried over without a seam. The label takes the
object's class inside its mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field, model_validator

#: voxels kept around an object's box: its rim (1) and the shell whose mean is its
#: surroundings (2)
MARGIN = 2
#: places drawn for one object before it is left out of the patch (later objects may find
#: a drawn place taken by an earlier one)
TRIES = 10


class PasteConfig(BaseModel):
    """``sampling.paste``: copy objects of some classes into other training patches.

    The defaults are the settings measured on the liver-lesion phantoms (every patch, 1–3
    objects, contrast × 0.5–1): 41 of 56 held-out lesions in two runs against 37–40 without
    and 39 with half the patches, 1–2 objects, × 0.6–1 (``benchmarks/RESULTS.md``)."""

    probability: float = Field(
        1.0, ge=0, le=1, description="share of patches that receive pasted objects"
    )
    max_objects: int = Field(3, ge=1, description="objects pasted into one patch: 1 to this")
    classes: list[int] = Field(min_length=1, description="stored classes whose objects move")
    host_channel: int | None = Field(
        None, ge=0, description="input channel (> 0.5) that marks where an object may go"
    )
    host_label: int | None = Field(
        None, ge=0, description="or: the stored label that marks where an object may go"
    )
    channels: list[int] | None = Field(
        None, description="input channels whose values are carried over (default: all)"
    )
    contrast: tuple[float, float] = Field(
        (0.5, 1.0), description="range of the factor on an object's contrast to its surroundings"
    )
    max_extent: int = Field(
        32, ge=1, description="objects with a longer box side (voxels) are not pasted"
    )

    def check_channels(self, num_channels: int) -> None:
        """Raise ``ValueError`` when a channel named here is not among ``num_channels``."""
        wanted = [self.host_channel] if self.host_channel is not None else []
        wanted += self.channels or []
        if wanted and max(wanted) >= num_channels:
            raise ValueError(
                f"sampling.paste names channel {max(wanted)}, but the input has "
                f"{num_channels} channel(s) (0–{num_channels - 1})"
            )

    @model_validator(mode="after")
    def _one_host(self) -> PasteConfig:
        if self.host_channel is not None and self.host_label is not None:
            raise ValueError("sampling.paste: give host_channel or host_label, not both")
        lo, hi = self.contrast
        if not 0 <= lo <= hi:
            raise ValueError(f"sampling.paste.contrast must be 0 <= low <= high, got {lo}, {hi}")
        return self


@dataclass(frozen=True)
class PasteObject:
    """One object of a training case: its class, its values and mask with ``MARGIN`` voxels
    around, and the per-channel mean of its surroundings."""

    value: int
    image: np.ndarray  # [c, *box] float32
    mask: np.ndarray  # [*box] bool
    surround: np.ndarray  # [c] float


def _grow(mask: np.ndarray, voxels: int) -> np.ndarray:
    """``mask`` grown by ``voxels`` (a cube: 26-neighbourhood steps), within its box."""
    from scipy import ndimage

    if voxels <= 0:
        return mask
    cube = np.ones((3,) * mask.ndim, dtype=bool)
    return ndimage.binary_dilation(mask, cube, iterations=voxels)


def _shell(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one-voxel rim around ``mask`` and the shell one voxel beyond it."""
    rim = _grow(mask, 1)
    return rim & ~mask, _grow(mask, 2) & ~rim


def find_objects(
    labels: np.ndarray, classes: Sequence[int], max_extent: int
) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """``(value, start, size, mask)`` of each object (26-connected) of ``classes`` in the
    label map ``labels [*spatial]``: its box grown by ``MARGIN`` (``start`` its corner; it
    may reach outside the map) and the object's mask in that box. Objects with a box side
    longer than ``max_extent`` are left out."""
    import cc3d

    out = []
    for value in classes:
        mask = labels == int(value)
        if not mask.any():
            continue
        comps = cc3d.connected_components(mask, connectivity=26)
        for k, box in enumerate(cc3d.statistics(comps)["bounding_boxes"]):
            if k == 0 or box is None:
                continue
            lo = np.array([s.start for s in box])
            hi = np.array([s.stop for s in box])
            if (hi - lo).max() > max_extent:
                continue
            own = np.pad(comps[tuple(box)] == k, MARGIN)
            out.append((int(value), lo - MARGIN, hi - lo + 2 * MARGIN, own))
    return out


def host_voxels(config: PasteConfig, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Where an object may lie in ``image [c, *box]`` / ``labels [*box]``: on the host label
    (an object goes onto it, not beside it), else on unlabelled voxels, within the host
    channel where one is named."""
    if config.host_label is not None:
        return labels == config.host_label
    free = labels == 0
    if config.host_channel is not None:
        free &= image[config.host_channel] > 0.5
    return free


def make_object(
    value: int, image: np.ndarray, mask: np.ndarray, host: np.ndarray
) -> PasteObject | None:
    """The object ``mask`` of class ``value`` in the crop ``image [c, *box]``, with the mean
    of its surroundings over ``host`` voxels (over its whole shell where the shell misses
    the host)."""
    _, shell = _shell(mask)
    where = shell & host if (shell & host).any() else shell
    if not where.any():
        return None
    surround = image[:, where].mean(axis=1)
    return PasteObject(value, image.astype(np.float32), mask, surround.astype(np.float64))


def _oriented(obj: PasteObject, rng: np.random.Generator, size: Sequence[int]):
    """The object's values and mask mirrored at random along each axis the patch is thicker
    than one voxel; along a one-voxel axis (a 2D patch) one slice through the object."""
    image, mask = obj.image, obj.mask
    for axis, n in enumerate(size):
        if n == 1 and mask.shape[axis] > 1:
            present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
            k = int(present[rng.integers(len(present))])
            mask = np.take(mask, [k], axis=axis)
            image = np.take(image, [k], axis=axis + 1)
        elif n > 1 and rng.uniform() < 0.5:
            mask = np.flip(mask, axis)
            image = np.flip(image, axis + 1)
    return image, mask


def _clearance(free: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Each voxel's distance to the nearest voxel that is not free (the patch's outside is
    not free), over the axes thicker than one voxel (a 2D patch drops its thin axis), and
    those axes."""
    import edt

    axes = [a for a, n in enumerate(free.shape) if n > 1]
    flat = free.reshape([free.shape[a] for a in axes])
    return edt.edt(np.pad(flat, 1), black_border=True, parallel=1)[
        (slice(1, -1),) * len(axes)
    ], axes


def _place(
    free: np.ndarray,
    clearance: tuple[np.ndarray, list[int]],
    support: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray | None:
    """A corner where the box of ``support`` lies inside the patch and ``support`` on
    ``free`` voxels: drawn among the box centres whose clearance (computed before the
    patch's earlier objects took their place) exceeds the support's reach from the centre,
    checked against ``free`` as it is now; None when ``TRIES`` draws find none."""
    distance, axes = clearance
    box = np.array(support.shape)
    centre = box // 2
    offsets = (np.argwhere(support) - centre)[:, axes]
    reach = np.sqrt((offsets**2).sum(axis=1)).max()
    inside = tuple(slice(centre[a], free.shape[a] - box[a] + centre[a] + 1) for a in axes)
    choices = np.argwhere(distance[inside] > reach)
    for _ in range(min(TRIES, len(choices))):
        corner = np.zeros(free.ndim, dtype=int)
        corner[axes] = choices[rng.integers(len(choices))]
        region = tuple(slice(a, a + b) for a, b in zip(corner, box, strict=True))
        if free[region][support].all():
            return corner
    return None


def paste_objects(
    image: np.ndarray,
    label: np.ndarray,
    objects: Sequence[PasteObject],
    rng: np.random.Generator,
    config: PasteConfig,
) -> int:
    """Paste ``objects`` into the patch ``image [c, *size]`` / ``label [1, *size]`` in
    place, each with its whole box inside the patch; returns how many found a place."""
    size = np.array(label.shape[1:])
    config.check_channels(image.shape[0])
    free = host_voxels(config, image, label[0])
    channels = list(range(image.shape[0])) if config.channels is None else config.channels
    clearance = _clearance(free)
    placed = 0
    for obj in objects:
        values, mask = _oriented(obj, rng, label.shape[1:])
        box = np.array(mask.shape)
        if np.any(box > size):
            continue
        rim, shell = _shell(mask)
        support = mask | rim
        start = _place(free, clearance, support, rng)
        if start is None:
            continue
        region = tuple(slice(a, a + b) for a, b in zip(start, box, strict=True))
        around = shell & free[region]
        gain = rng.uniform(*config.contrast)
        weight = np.where(mask, 1.0, np.where(rim, 0.5, 0.0))
        for c in channels:
            patch = image[(c, *region)]
            host_mean = float(patch[around if around.any() else rim].mean())
            new = host_mean + gain * (values[c] - obj.surround[c])
            image[(c, *region)] = patch * (1 - weight) + weight * new
        label[(0, *region)][mask] = obj.value
        free[region] &= ~support
        placed += 1
    return placed
