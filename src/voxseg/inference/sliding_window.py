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
from typing import Any

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


def predict_logits(*args: Any, **kwargs: Any) -> torch.Tensor:
    """Logits ``[num_outputs, z, y, x]`` (float32, on ``accumulate_device``) for ``data``
    ``[c, z, y, x]``, averaged over windows, flips and networks: the logits of
    :func:`predict_logits_and_votes` (same arguments, ``votes`` aside).

    ``roi`` (``[z, y, x]`` bool) skips windows without any ROI voxel (ovseg); voxels that no
    window covers get logits 0 (uniform).
    """
    return predict_logits_and_votes(*args, **kwargs)[0]


def ensemble_members(n_networks: int, n_flips: int) -> int:
    """Members whose agreement :func:`predict_logits_and_votes` measures: the networks (folds,
    each averaged over its flips) when there are several, else the flips of the one network."""
    return n_networks if n_networks > 1 else n_flips


@torch.no_grad()
def predict_logits_and_votes(
    data: np.ndarray | torch.Tensor,
    networks: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    num_outputs: int,
    settings: WindowSettings,
    *,
    device: torch.device,
    accumulate_device: torch.device | None = None,
    roi: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    votes: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`predict_logits`, and with ``votes`` also the share of ensemble members
    (:func:`ensemble_members`) voting each output at each voxel, ``[num_outputs, z, y, x]``
    float32. Each member's logits are blended over the windows like the ensemble's, then
    ``votes="argmax"`` counts each member's winning output (softmax labels),
    ``votes="positive"`` each output a member puts above 0 (sigmoid regions). The members'
    logits are kept in bfloat16 (float32's range: the Gaussian's tails do not underflow):
    members × half the logits' memory more.
    """
    if votes not in (None, "argmax", "positive"):
        raise ValueError(f"votes must be None, 'argmax' or 'positive', not {votes!r}")
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
    members = None
    if votes:
        n = ensemble_members(len(networks), len(flips))
        members = torch.zeros((n, *out_shape), dtype=torch.bfloat16, device=acc_device)
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
            _add_windows(x, chunk, networks, flips, gauss, logits, weight, device, two_d, members)
            if progress is not None:
                progress(len(chunk))
    # Uncovered voxels hold 0 in both sums, so they stay 0 (in place: no full-size copies).
    weight.clamp_(min=1e-12)
    logits = _normalise(logits, weight, region, two_d)
    if members is None:
        assert tuple(logits.shape[1:]) == full_shape
        return logits, None
    shares = torch.zeros(logits.shape, dtype=torch.float32, device=acc_device)
    for member in members:
        m = _normalise(member, weight, region, two_d)
        if votes == "positive":
            shares.add_(m > 0)
        else:
            shares.scatter_add_(0, m.argmax(0, keepdim=True), torch.ones_like(shares[:1]))
    del members
    return logits, shares.div_(ensemble_members(len(networks), len(flips)))


def _normalise(t: torch.Tensor, weight: torch.Tensor, region: list[slice], two_d: bool):
    """Divide a window sum by the summed weights (in place) and crop the padding away:
    ``[C, z, y, x]``."""
    if two_d:
        t.div_(weight[:, None])
        return t[:, :, region[0], region[1]].permute(1, 0, 2, 3)
    t.div_(weight[None])
    return t[(slice(None), *region)]


def _add_windows(x, chunk, networks, flips, gauss, logits, weight, device, two_d, members=None):
    """Add the Gaussian-weighted logits of one batch of windows, averaged over networks and
    flips, into ``logits`` and the weights into ``weight`` (both in place); with ``members``,
    each member's logits (:func:`ensemble_members`) into its own sum too."""
    acc_device = logits.device
    n_passes = len(networks) * len(flips)
    if two_d:
        batch = torch.stack([x[w[0], :, w[1], w[2]] for w in chunk])
    else:
        batch = torch.stack([x[(slice(None), *w)] for w in chunk])
    batch = batch.to(device, non_blocking=True)
    summed = None
    member_outs: list[torch.Tensor] = []
    by_network = len(networks) > 1
    for net in networks:
        net_sum = None
        for flip in flips:
            dims = [d + 2 for d in flip]
            inp = torch.flip(batch, dims) if dims else batch
            out = net(inp)
            if isinstance(out, (list, tuple)):
                out = out[0]
            if dims:
                out = torch.flip(out, dims)
            if members is not None:  # copies: ``summed`` below adds in place
                if not by_network:
                    member_outs.append(out.to(torch.float32, copy=True))
                elif net_sum is None:
                    net_sum = out.to(torch.float32, copy=True)
                else:
                    net_sum.add_(out)
            if n_passes == 1:
                summed = out  # bf16/fp16 stays so: addcmul_ below accumulates in float32
            elif summed is None:
                summed = out.float()
            else:
                summed.add_(out)
        if net_sum is not None:
            member_outs.append(net_sum.div_(len(flips)))
    if n_passes > 1:
        summed.div_(n_passes)
    summed = summed.to(acc_device)
    for i, (w, pred) in enumerate(zip(chunk, summed, strict=True)):
        where = (w[0], slice(None), w[1], w[2]) if two_d else (slice(None), *w)
        logits[where].addcmul_(pred, gauss)
        weight[(w[0], w[1], w[2]) if two_d else w] += gauss
        for m, out in enumerate(member_outs):
            members[m][where].addcmul_(out[i].to(acc_device), gauss)


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
