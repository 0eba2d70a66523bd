"""Intensity normalisation per channel, chosen by the channel's name in ``dataset.json``.

Schemes are registered in :data:`NORMALIZATIONS`; a plug-in registers its own with
``@NORMALIZATIONS.register("name")`` (a factory taking the plan's parameters and returning
a callable ``(image [z, y, x], mask or None) -> image``). Rules (nnU-Net v2):

* ``ct``: clip to the dataset's foreground percentiles 0.5–99.5, then z-score with the
  dataset's foreground mean and std (one transform for the whole dataset).
* ``zscore`` (MR and every unknown name): per-image z-score; within the nonzero mask when
  the plan sets ``use_mask`` (voxels outside the mask are left as they are, i.e. 0).
* ``rescale_to_0_1``: per-image min–max to [0, 1].
* ``rgb_to_0_1``: divide by 255.
* ``none``: identity.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from voxseg._registry import Registry

Normalizer = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]

NORMALIZATIONS: Registry[Normalizer] = Registry("normalization")

#: Channel names (lower-case) that select a scheme other than ``zscore``.
CHANNEL_NAME_TO_SCHEME = {
    "ct": "ct",
    "nonorm": "none",
    "none": "none",
    "rescale_to_0_1": "rescale_to_0_1",
    "rgb_to_0_1": "rgb_to_0_1",
    "rgb": "rgb_to_0_1",
    "zscore": "zscore",
}

#: Schemes that can restrict their statistics to the nonzero mask.
MASKABLE = {"zscore"}

_EPS = 1e-8


def scheme_for_channel(channel_name: str) -> str:
    """The normalisation scheme for a ``channel_names`` entry (a registered name wins)."""
    if channel_name in NORMALIZATIONS:
        return channel_name
    return CHANNEL_NAME_TO_SCHEME.get(channel_name.lower(), "zscore")


@NORMALIZATIONS.register("ct")
def ct_normalization(mean: float, std: float, lower: float, upper: float) -> Normalizer:
    """Clip to the dataset's foreground [p0.5, p99.5], then z-score with its mean and std."""

    def apply(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        out = np.empty(image.shape, dtype=np.float32)
        np.clip(image, lower, upper, out=out, casting="unsafe")
        out -= np.float32(mean)
        out *= np.float32(1.0 / max(std, _EPS))  # in place: no full-size temporaries
        return out

    return apply


@NORMALIZATIONS.register("zscore")
def zscore_normalization(use_mask: bool = False) -> Normalizer:
    """Per-image z-score; with ``use_mask`` the statistics and the change are mask-only."""

    def apply(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        out = image.astype(np.float32, copy=True)
        if use_mask and mask is not None and mask.any():
            values = out[mask]
            out[mask] = (values - values.mean()) / max(float(values.std()), _EPS)
            return out
        return (out - out.mean()) / max(float(out.std()), _EPS)

    return apply


@NORMALIZATIONS.register("rescale_to_0_1")
def rescale_normalization() -> Normalizer:
    """Per-image min–max rescaling to [0, 1]."""

    def apply(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        out = image.astype(np.float32, copy=True)
        lo, hi = float(out.min()), float(out.max())
        return (out - lo) / max(hi - lo, _EPS)

    return apply


@NORMALIZATIONS.register("rgb_to_0_1")
def rgb_normalization() -> Normalizer:
    """8-bit colour channels to [0, 1] (divide by 255)."""

    def apply(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return image.astype(np.float32, copy=False) / np.float32(255.0)

    return apply


@NORMALIZATIONS.register("none")
def no_normalization() -> Normalizer:
    """Identity (the channel is used as stored, cast to float32)."""

    def apply(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return image.astype(np.float32, copy=False)

    return apply


def normalize(
    data: np.ndarray,
    schemes: list[tuple[str, dict]],
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Normalise ``data [c, z, y, x]`` channel by channel with ``(scheme, params)`` pairs."""
    if len(schemes) != data.shape[0]:
        raise ValueError(f"{len(schemes)} normalisation schemes for {data.shape[0]} channels")
    channels = [
        NORMALIZATIONS.build(name, **params)(data[c], mask)
        for c, (name, params) in enumerate(schemes)
    ]
    if len(channels) == 1:  # no stacked copy of a single channel
        return np.ascontiguousarray(channels[0], dtype=np.float32)[None]
    return np.stack(channels).astype(np.float32, copy=False)
