"""Sliding-window inference over a preprocessed volume.

Windows of the training patch size step by ``step`` × patch, each weighted by a Gaussian
(σ = ``sigma_scale`` × patch) so window centres count more than their borders; several
windows go through the network per forward pass (``batch_windows``); flip test-time
augmentation averages the logits of every mirrored copy; several networks (folds) are
averaged. A 2D configuration runs slice by slice along the first axis, batching windows
across slices.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from voxseg.modelconfig import PredictionConfig
from voxseg.spatial.tiling import gaussian_importance_map, sliding_window_starts

_DEFAULTS = PredictionConfig()


@dataclass
class WindowSettings:
    """Sliding-window parameters (see the module docstring); the defaults of ``step``,
    ``sigma_scale`` and ``tta`` are :class:`~voxseg.modelconfig.PredictionConfig`'s."""

    patch_size: tuple[int, ...]
    step: float = _DEFAULTS.step
    sigma_scale: float = _DEFAULTS.sigma_scale
    tta: bool = _DEFAULTS.tta
    mirror_axes: tuple[int, ...] | None = None
    batch_windows: int = 4
    amp: torch.dtype | None = None


def mirror_combinations(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (the empty one first): 8 flips for three axes."""
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _pad_to_patch(data: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, list[slice]]:
    """Pad the last ``len(patch)`` axes symmetrically up to the patch size where smaller."""
    nd = len(patch)
    shape = data.shape[-nd:]
    pads, region = [], []
    for s, p in zip(shape, patch, strict=True):
        total = max(p - s, 0)
        lo = total // 2
        pads.append((lo, total - lo))
        region.append(slice(lo, lo + s))
    if any(p != (0, 0) for p in pads):
        flat = [v for lo_hi in reversed(pads) for v in lo_hi]
        data = torch.nn.functional.pad(data, flat)
    return data, region


def _windows(shape: Sequence[int], patch: Sequence[int], step: float) -> list[tuple[slice, ...]]:
    return [
        tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
        for start in itertools.product(*sliding_window_starts(shape, patch, step))
    ]


def _batched(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


@torch.no_grad()
def predict_logits(
    data: np.ndarray | torch.Tensor,
    networks: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    num_outputs: int,
    settings: WindowSettings,
    *,
    device: torch.device,
    accumulate_device: torch.device | None = None,
    roi: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Logits ``[num_outputs, z, y, x]`` (float32, on ``accumulate_device``) for ``data``
    ``[c, z, y, x]``, averaged over windows, flips and networks.

    ``roi`` (``[z, y, x]`` bool) skips windows without any ROI voxel (ovseg); voxels that no
    window covers get logits 0 (uniform).
    """
    acc_device = accumulate_device or device
    x = torch.as_tensor(np.asarray(data) if not torch.is_tensor(data) else data)
    x = x.to(torch.float32)
    patch = tuple(settings.patch_size)
    two_d = len(patch) == 2
    full_shape = tuple(x.shape[1:])
    if two_d:
        x = x.permute(1, 0, 2, 3)  # slices as a batch: [z, c, y, x]
    x, region = _pad_to_patch(x, patch)
    roi_t = None
    if roi is not None:
        roi_t = torch.as_tensor(np.asarray(roi, dtype=bool))
        roi_t, _ = _pad_to_patch(roi_t[None] if not two_d else roi_t[:, None], patch)
    sp_shape = tuple(x.shape[-len(patch) :])
    windows = _windows(sp_shape, patch, settings.step)
    if two_d:
        windows = [(z, *w) for z in range(x.shape[0]) for w in windows]
    if roi_t is not None:
        windows = [w for w in windows if _roi_hit(roi_t, w, two_d)]
    gauss = gaussian_importance_map(patch, settings.sigma_scale, device=acc_device)
    out_shape = (x.shape[0], num_outputs, *sp_shape) if two_d else (num_outputs, *sp_shape)
    logits = torch.zeros(out_shape, dtype=torch.float32, device=acc_device)
    weight = torch.zeros(
        out_shape[:1] + out_shape[2:] if two_d else sp_shape, dtype=torch.float32, device=acc_device
    )
    nd = len(patch)
    axes = settings.mirror_axes if settings.mirror_axes is not None else tuple(range(nd))
    flips = mirror_combinations(axes) if settings.tta else [()]
    # One autocast context for the whole loop: leaving it clears the cache of low-precision
    # weight copies, so a context per forward would recast every weight every time.
    # The accumulation ops (flip, add_, addcmul_) are not in any autocast cast list.
    ctx = (
        torch.autocast(device.type, dtype=settings.amp)
        if settings.amp is not None
        else nullcontext()
    )
    with ctx:
        for chunk in _batched(windows, max(1, settings.batch_windows)):
            _add_windows(x, chunk, networks, flips, gauss, logits, weight, device, two_d)
            if progress is not None:
                progress(len(chunk))
    # Uncovered voxels hold 0 in both sums, so they stay 0 (in place: no full-size copies).
    weight.clamp_(min=1e-12)
    if two_d:
        logits.div_(weight[:, None])
        logits = logits[:, :, region[0], region[1]].permute(1, 0, 2, 3)
    else:
        logits.div_(weight[None])
        logits = logits[(slice(None), *region)]
    assert tuple(logits.shape[1:]) == full_shape
    return logits


def _add_windows(x, chunk, networks, flips, gauss, logits, weight, device, two_d) -> None:
    """Add the Gaussian-weighted logits of one batch of windows, averaged over networks and
    flips, into ``logits`` and the weights into ``weight`` (both in place)."""
    acc_device = logits.device
    n_passes = len(networks) * len(flips)
    if two_d:
        batch = torch.stack([x[w[0], :, w[1], w[2]] for w in chunk])
    else:
        batch = torch.stack([x[(slice(None), *w)] for w in chunk])
    batch = batch.to(device, non_blocking=True)
    summed = None
    for net in networks:
        for flip in flips:
            dims = [d + 2 for d in flip]
            inp = torch.flip(batch, dims) if dims else batch
            out = net(inp)
            if isinstance(out, (list, tuple)):
                out = out[0]
            if dims:
                out = torch.flip(out, dims)
            if n_passes == 1:
                summed = out  # bf16/fp16 stays so: addcmul_ below accumulates in float32
            elif summed is None:
                summed = out.float()
            else:
                summed.add_(out)
    if n_passes > 1:
        summed.div_(n_passes)
    summed = summed.to(acc_device)
    for w, pred in zip(chunk, summed, strict=True):
        if two_d:
            logits[w[0], :, w[1], w[2]].addcmul_(pred, gauss)
            weight[w[0], w[1], w[2]] += gauss
        else:
            logits[(slice(None), *w)].addcmul_(pred, gauss)
            weight[w] += gauss


def count_windows(shape: Sequence[int], settings: WindowSettings) -> int:
    """Number of windows :func:`predict_logits` runs for a volume of spatial ``shape``."""
    patch = tuple(settings.patch_size)
    if len(patch) == 2:
        sp = [max(s, p) for s, p in zip(shape[1:], patch, strict=True)]
        return shape[0] * len(_windows(sp, patch, settings.step))
    sp = [max(s, p) for s, p in zip(shape, patch, strict=True)]
    return len(_windows(sp, patch, settings.step))


def _roi_hit(roi: torch.Tensor, window: tuple, two_d: bool) -> bool:
    if two_d:
        return bool(roi[window[0], 0, window[1], window[2]].any())
    return bool(roi[(0, *window)].any())
