"""Local segmenters for tracing: any callable ``Image -> probability Image``.

The tracing loop only needs a function that takes a sub-image (``[c, z, y, x]`` with its
geometry) and returns the vessel probability ``[z, y, x]`` on the same grid.
:class:`PredictorSegmenter` wraps a trained model (:class:`voxseg.inference.Predictor`);
:class:`OracleSegmenter` reads a reference mask instead, optionally perturbed, so the loop
can be tested and timed without a network.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from scipy import ndimage

from voxseg.io import Image


class LocalSegmenter(Protocol):
    def __call__(self, image: Image) -> Image:
        """Vessel probability ``[z, y, x]`` in ``[0, 1]`` on the grid of ``image``."""


class OracleSegmenter:
    """Reads ``truth`` (a mask in any geometry) on the requested grid, nearest neighbour.

    ``blur`` (voxels) and ``noise`` (standard deviation) perturb the returned probability,
    drawn from ``seed``, to test the loop with imperfect local predictions.
    """

    def __init__(
        self,
        truth: Image,
        label: int | None = None,
        blur: float = 0.0,
        noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        arr = truth.array[0] if truth.array.ndim == 4 else truth.array
        self.mask = (arr > 0) if label is None else (arr == label)
        self.geometry = truth.geometry
        self.blur = blur
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def __call__(self, image: Image) -> Image:
        self.calls += 1
        g = image.geometry
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij"), -1)
        coords = self.geometry.physical_to_index(g.index_to_physical(idx.reshape(-1, 3)))
        # Only the part of the mask the box reaches (an integer shift: the same samples).
        shape = np.asarray(self.mask.shape)
        lo = np.clip(np.floor(coords.min(axis=0)).astype(int) - 1, 0, shape)
        hi = np.clip(np.ceil(coords.max(axis=0)).astype(int) + 2, lo, shape)
        part = self.mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        values = ndimage.map_coordinates(
            part.astype(np.float32), (coords - lo).T, order=0, mode="constant", cval=0.0
        ).reshape(g.shape)
        if self.blur > 0:
            values = ndimage.gaussian_filter(values, self.blur)
        if self.noise > 0:
            values = values + self.rng.normal(0.0, self.noise, values.shape).astype(np.float32)
        return Image.from_geometry(np.clip(values, 0.0, 1.0).astype(np.float32), g)


class PredictorSegmenter:
    """A trained local model: ``Predictor.predict(sub, probabilities=True)``, class ``label``."""

    def __init__(self, predictor, label: int = 1) -> None:
        self.predictor = predictor
        self.label = label
        self.calls = 0

    def __call__(self, image: Image) -> Image:
        self.calls += 1
        prediction = self.predictor.predict(image, probabilities=True)
        probs = prediction.probabilities
        if probs is None:
            seg = prediction.segmentation.array == self.label
            return Image.from_geometry(seg.astype(np.float32), image.geometry)
        arr = probs.array[self.label] if probs.array.ndim == 4 else probs.array
        return Image.from_geometry(arr.astype(np.float32, copy=False), image.geometry)
