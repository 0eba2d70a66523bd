"""Training batches read from the preprocessed store.

:class:`PatchBatches` is a map-style torch dataset whose item ``i`` is the whole batch of
global iteration ``i``: its random numbers come from ``(seed, rank, i)`` only, so batches
do not depend on which ``DataLoader`` worker builds them, and a resumed run (or a run with
another number of workers) sees exactly the same data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from voxseg.sampling.paste import (
    PasteConfig,
    PasteObject,
    find_objects,
    host_voxels,
    make_object,
    paste_objects,
)
from voxseg.sampling.samplers import LOCATION_OBJECTS, Sampler


def read_crop(array: Any, start: Sequence[int], size: Sequence[int], fill: float = 0) -> np.ndarray:
    """Read ``array[..., start:start+size]`` over the last ``len(size)`` axes, padding with
    ``fill`` where the crop leaves the array. Only the overlapping part is read, so a
    chunked store decompresses only the chunks the crop touches."""
    nd = len(size)
    shape = array.shape[-nd:]
    lead = tuple(array.shape[:-nd])
    src, dst = [], []
    for s, n, dim in zip(start, size, shape, strict=True):
        lo, hi = max(int(s), 0), min(int(s) + int(n), int(dim))
        if hi <= lo:
            return np.full(lead + tuple(size), fill, dtype=array.dtype)
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    part = np.asarray(array[(Ellipsis, *src)])
    if part.shape[-nd:] == tuple(size):
        return part
    out = np.full(lead + tuple(size), fill, dtype=part.dtype)
    out[(Ellipsis, *dst)] = part
    return out


class PatchBatches(TorchDataset):
    """Batches of crops ``[b, c, *input_size]`` (image) and ``[b, 1, *input_size]`` (labels).

    ``input_size`` is the crop read from the store (it may exceed the patch size when the
    augmentation rotates or scales, as ovseg does); ``spatial_dims == 2`` reads one slice
    (``input_size`` of two values) along the first axis and drops that axis. With ``paste``
    a share of the crops receive objects copied from cases of ``case_ids`` (any of them)
    (:mod:`voxseg.sampling.paste`).
    """

    def __init__(
        self,
        store: Any,
        case_ids: Sequence[str],
        input_size: Sequence[int],
        batch_size: int,
        sampler: Sampler,
        *,
        foreground_fraction: float = 1 / 3,
        seed: int = 0,
        rank: int = 0,
        length: int = 10**9,
        extras: dict[str, dict[str, Any]] | None = None,
        image_dtype: torch.dtype = torch.float32,
        paste: PasteConfig | None = None,
    ) -> None:
        if not case_ids:
            raise ValueError("no cases to sample from")
        self.store = store
        self.case_ids = list(case_ids)
        self.input_size = tuple(int(s) for s in input_size)
        self.batch_size = int(batch_size)
        self.sampler = sampler
        self.n_forced = int(round(self.batch_size * foreground_fraction))
        self.seed = int(seed)
        self.rank = int(rank)
        self.length = int(length)
        self.extras = extras or {}
        self.image_dtype = image_dtype
        self.paste = paste
        self._open: dict[str, tuple[Any, Any, Any]] = {}
        self._objects: dict[str, dict[str, np.ndarray]] = {}
        self._pastable: dict[str, list[PasteObject]] = {}

    def __len__(self) -> int:
        return self.length

    def _case(self, case_id: str):
        if case_id not in self._open:
            self._open[case_id] = self.store.open(case_id)
        return self._open[case_id]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = {}
        state["_objects"] = {}
        state["_pastable"] = {}
        return state

    def _location_objects(self, case_id: str, seg: Any, meta: Any) -> dict[str, np.ndarray]:
        """Per stored class: the connected object (26-connected) of each stored location,
        labelled once per case and worker."""
        if case_id not in self._objects:
            import cc3d

            labels = np.asarray(seg[0])
            out: dict[str, np.ndarray] = {}
            for key, locs in meta.foreground_locations.items():
                if not len(locs):
                    continue
                objects = cc3d.connected_components(labels == int(key), connectivity=26)
                out[key] = objects[tuple(np.asarray(locs).T)]
            self._objects[case_id] = out
        return self._objects[case_id]

    def sample(self, case_id: str, rng: np.random.Generator, force_foreground: bool):
        """One crop of ``case_id``: ``(image [c, *size], seg [1, *size])``."""
        data, seg, meta = self._case(case_id)
        shape = tuple(data.shape[1:])
        size = self.input_size if len(self.input_size) == 3 else (1, *self.input_size)
        extra = self.extras.get(case_id, {})
        if force_foreground and seg is not None and getattr(self.sampler, "needs_objects", False):
            extra = {**extra, LOCATION_OBJECTS: self._location_objects(case_id, seg, meta)}
        start = self.sampler(
            shape,
            size,
            rng,
            force_foreground=force_foreground,
            foreground_locations=meta.foreground_locations,
            extra=extra,
        )
        image = read_crop(data, start, size, 0)
        label = (
            read_crop(seg, start, size, 0)
            if seg is not None
            else np.zeros((1, *size), dtype=np.int16)
        )
        label = np.maximum(label, 0)  # -1 marks "outside the nonzero mask": background
        if self.paste is not None and rng.uniform() < self.paste.probability:
            image = np.array(image, dtype=np.float32)  # a crop may be a read-only view
            paste_objects(image, label, self._donors(rng), rng, self.paste)
        if len(self.input_size) == 2:
            image, label = image[:, 0], label[:, 0]
        return image, label

    def _pastable_objects(self, case_id: str) -> list[PasteObject]:
        """The objects of ``case_id`` that ``paste`` may copy, read once per case and worker."""
        if case_id not in self._pastable:
            cfg = self.paste
            assert cfg is not None
            data, seg, _ = self._case(case_id)
            objects = []
            if seg is not None:
                found = find_objects(np.asarray(seg[0]), cfg.classes, cfg.max_extent)
                for value, start, size, mask in found:
                    image = read_crop(data, start, size, 0).astype(np.float32)
                    labels = read_crop(seg, start, size, 0)[0]
                    obj = make_object(value, image, mask, host_voxels(cfg, image, labels))
                    if obj is not None:
                        objects.append(obj)
            self._pastable[case_id] = objects
        return self._pastable[case_id]

    def _donors(self, rng: np.random.Generator) -> list[PasteObject]:
        """1 to ``paste.max_objects`` objects, each from a case drawn at random among those
        that hold one (an object drawn uniformly within it)."""
        assert self.paste is not None
        out: list[PasteObject] = []
        for _ in range(int(rng.integers(1, self.paste.max_objects + 1))):
            for _ in range(len(self.case_ids)):
                objects = self._pastable_objects(self.case_ids[rng.integers(len(self.case_ids))])
                if objects:
                    out.append(objects[rng.integers(len(objects))])
                    break
        return out

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.rank, int(index)])
        images, labels, ids = [], [], []
        for b in range(self.batch_size):
            case_id = self.case_ids[rng.integers(len(self.case_ids))]
            forced = b >= self.batch_size - self.n_forced
            image, label = self.sample(case_id, rng, forced)
            images.append(image)
            labels.append(label)
            ids.append(case_id)
        return {
            "image": torch.from_numpy(np.stack(images)).to(self.image_dtype),
            "seg": torch.from_numpy(np.stack(labels).astype(np.int16)),
            "index": torch.tensor(int(index)),
        }
