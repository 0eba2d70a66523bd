"""The preprocessed store: one folder per (dataset, plan, configuration) of chunked arrays.

Per case ``<id>``::

    <id>.b2nd        image [c, z, y, x], blosc2 NDArray (or <id>.npy with storage="raw")
    <id>_seg.b2nd    label [1, z, y, x] int8/int16 (absent for unlabelled cases)
    <id>.json        CaseMeta, written last: a case is finished when its JSON exists

Arrays are written under temporary names and renamed, then the JSON is written atomically,
so a killed run never leaves a case that looks finished. blosc2 chunks and blocks are sized
from the patch size (nnU-Net's ``comp_blosc2_params`` rule: blocks fit the L1 cache, chunks
the per-core L3 share and at most ~1.5× the patch), so reading one training patch
decompresses only the blocks it touches. No pickle: metadata is JSON.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from voxseg.config import load_model, write_json
from voxseg.errors import VoxsegError

Storage = Literal["blosc2", "raw"]

L1_BYTES = 32 * 1024
L3_BYTES_PER_CORE = 1_441_792
SAFETY = 0.8
#: The store-level record of what the folder was made from (not a case).
SETTINGS_NAME = "preprocessing.json"


class CaseMeta(BaseModel):
    """Everything needed to map a preprocessed case back onto its original image."""

    case_id: str
    geometry: dict[str, Any] = Field(description="original Geometry.to_dict() of the input")
    reorientation: dict[str, Any] | None = Field(
        None, description="Reorientation.to_dict() when the plan reorients, else None"
    )
    bbox: list[list[int]] = Field(description="crop box [[start, stop], ...] per axis (z, y, x)")
    shape_before_crop: list[int]
    shape_after_crop: list[int]
    spacing_before: list[float] = Field(description="spacing of the cropped array (z, y, x)")
    spacing_after: list[float] = Field(description="target spacing after resampling")
    shape_after_resampling: list[int]
    separate_z_axis: int | None = None
    foreground_locations: dict[str, list[list[int]]] = Field(default_factory=dict)
    classes: list[int] = Field(default_factory=list, description="label values present")
    num_channels: int = 1
    storage: Storage = "blosc2"
    dtype: str = "float32"


def label_dtype(max_label: int) -> np.dtype:
    """int8 while every label (and the -1 outside-mask marker) fits, else int16."""
    return np.dtype(np.int8) if max_label < 127 else np.dtype(np.int16)


def blosc2_chunk_params(
    shape: tuple[int, ...], patch_size: tuple[int, ...] | list[int], itemsize: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(chunks, blocks)`` for an array ``[c, z, y, x]`` read in patches of ``patch_size``.

    Blocks: the next power of two ≥ the patch per axis, halved along the axis largest
    relative to the patch until one block (all channels) fits 80% of L1. Chunks: blocks
    tiled along the axis least grown so far until 80% of the per-core L3 share is reached
    or the chunk would exceed 1.5× the patch on average (nnU-Net v2's rule).
    """
    c, *spatial = (int(s) for s in shape)
    patch = [int(p) for p in patch_size]
    if len(patch) == 2:
        patch = [1, *patch]
    block = [
        min(2 ** max(0, math.ceil(math.log2(p))), s) for p, s in zip(patch, spatial, strict=True)
    ]
    while c * math.prod(block) * itemsize > L1_BYTES * SAFETY and max(block) > 1:
        ratios = [b / p if b > 1 else -1 for b, p in zip(block, patch, strict=True)]
        axis = int(np.argmax(ratios))
        block[axis] = max(1, 2 ** math.floor(math.log2(block[axis] - 1)))
    chunk = list(block)
    while c * math.prod(chunk) * itemsize < L3_BYTES_PER_CORE * SAFETY:
        growable = [a for a in range(3) if chunk[a] < spatial[a] and patch[a] > 1]
        if not growable:
            break
        axis = min(growable, key=lambda a: chunk[a] / block[a])
        previous = chunk[axis]
        chunk[axis] = min(chunk[axis] + block[axis], spatial[axis])
        if np.mean([ch / p for ch, p in zip(chunk, patch, strict=True)]) > 1.5:
            chunk[axis] = previous
            break
    return (c, *chunk), (c, *block)


class PreprocessedStore:
    """Read and write preprocessed cases in ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def meta_path(self, case_id: str) -> Path:
        return self.folder / f"{case_id}.json"

    def _array_path(self, case_id: str, storage: Storage, seg: bool = False) -> Path:
        ending = ".b2nd" if storage == "blosc2" else ".npy"
        return self.folder / f"{case_id}{'_seg' if seg else ''}{ending}"

    def case_ids(self) -> list[str]:
        """Finished cases (those whose metadata JSON exists), sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(
            p.stem
            for p in self.folder.glob("*.json")
            if not p.name.startswith(".") and p.name != SETTINGS_NAME
        )

    def is_finished(self, case_id: str) -> bool:
        return self.meta_path(case_id).is_file()

    def write(
        self,
        case_id: str,
        data: np.ndarray,
        seg: np.ndarray | None,
        meta: CaseMeta,
        *,
        patch_size: tuple[int, ...] | list[int] | None = None,
        cparams: dict[str, Any] | None = None,
    ) -> None:
        """Write one case: arrays under temporary names, renamed, then the JSON (last)."""
        if f"{case_id}.json" == SETTINGS_NAME:
            raise VoxsegError(f"{case_id!r} is a reserved name in the preprocessed store")
        if data.ndim != 4:
            raise ValueError(f"{case_id}: data must be [c, z, y, x], got shape {data.shape}")
        self.folder.mkdir(parents=True, exist_ok=True)
        data = np.ascontiguousarray(data, dtype=np.dtype(meta.dtype))
        patch = patch_size or data.shape[1:]
        self._write_array(self._array_path(case_id, meta.storage), data, patch, meta, cparams)
        seg_path = self._array_path(case_id, meta.storage, seg=True)
        if seg is not None:
            seg = seg if seg.ndim == 4 else seg[None]
            max_label = int(seg.max()) if seg.size else 0
            seg = np.ascontiguousarray(seg, dtype=label_dtype(max_label))
            self._write_array(seg_path, seg, patch, meta, cparams)
        else:
            seg_path.unlink(missing_ok=True)
        # compact: up to 10 000 foreground locations per class make indenting the slow part
        write_json(self.meta_path(case_id), meta, indent=None)

    def _write_array(
        self,
        path: Path,
        array: np.ndarray,
        patch: tuple[int, ...] | list[int],
        meta: CaseMeta,
        cparams: dict[str, Any] | None,
    ) -> None:
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        tmp.unlink(missing_ok=True)
        if meta.storage == "raw":
            with open(tmp, "wb") as f:
                np.save(f, array)
        else:
            import blosc2  # lazy: inference never touches the store (import ~0.25 s)

            chunks, blocks = blosc2_chunk_params(array.shape, patch, array.itemsize)
            # ZSTD level 1: about the ratio of levels 3 and 8 at a fraction of their time
            # (a z-scored 96×192×192 organs phantom, 14 MB float32, one thread: 1.61× in
            # 0.03 s, 1.62× in 0.21 s at level 3, 1.66× in 2.1 s at level 8). One thread:
            # several place the compressed blocks in the order they finish, so the bytes of
            # a rerun would differ (the values do not); cases run in parallel processes.
            params = {"codec": blosc2.Codec.ZSTD, "clevel": 1, "nthreads": 1}
            params.update(cparams or {})
            extra = {"dparams": {"nthreads": 1}} if "nthreads" in params else {}
            nd = blosc2.empty(
                array.shape,
                array.dtype,
                chunks=chunks,
                blocks=blocks,
                urlpath=str(tmp),
                mode="w",
                cparams=params,
                **extra,
            )
            nd[...] = array  # one C-level slice write (asarray loops over chunks in Python)
            del nd
        os.replace(tmp, path)

    def read_meta(self, case_id: str) -> CaseMeta:
        path = self.meta_path(case_id)
        if not path.is_file():
            raise VoxsegError(f"{path}: case {case_id!r} is not in the preprocessed store")
        return load_model(CaseMeta, path)

    def open(self, case_id: str) -> tuple[Any, Any | None, CaseMeta]:
        """``(data [c, z, y, x], seg [1, z, y, x] or None, meta)`` as lazily read arrays.

        Both array-likes support NumPy slicing (returning ``np.ndarray``) and ``.shape``;
        only the touched chunks (blosc2) or pages (memory-mapped ``.npy``) are read.
        """
        meta = self.read_meta(case_id)
        data = self._open_array(self._array_path(case_id, meta.storage))
        seg_path = self._array_path(case_id, meta.storage, seg=True)
        seg = self._open_array(seg_path) if seg_path.is_file() else None
        return data, seg, meta

    @staticmethod
    def _open_array(path: Path) -> Any:
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r")
        import blosc2

        return blosc2.open(str(path), mode="r")

    def load(self, case_id: str) -> tuple[np.ndarray, np.ndarray | None, CaseMeta]:
        """The whole case in memory."""
        data, seg, meta = self.open(case_id)
        return np.asarray(data[...]), (None if seg is None else np.asarray(seg[...])), meta
