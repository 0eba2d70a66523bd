"""Preprocessing: raw case → normalised, resampled arrays + metadata in the store.

Per case (nnU-Net v2's order, reorientation first as in SCT's pipeline):
reorient (when the plan names an orientation) → crop to the nonzero box → normalise per
channel → resample (images: cubic B-spline, order 3; labels: per-class linear then argmax,
never losing a class; for anisotropic spacing, separate-z: in-plane as above and nearest
along the coarse axis) → sample foreground locations → write.

Foreground locations: for every foreground label value (not background, not ``ignore``;
for region-based datasets every integer label a region is made of, so a region's voxels are
the union of its labels' lists), up to 10 000 voxel indices ``[z, y, x]`` of the resampled
case, at least 1% of the class's voxels, drawn without replacement with a seed per case.
Label voxels outside the nonzero mask are background (0) in the store; the mask (which
nnU-Net marks with -1) is used only to compute masked z-scores.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from voxseg.config import load_model, write_json
from voxseg.data.dataset import Case, Dataset
from voxseg.data.fingerprint import case_seed, map_with_progress
from voxseg.errors import VoxsegError
from voxseg.io.image import Image
from voxseg.locks import folder_lock
from voxseg.normalization import normalize
from voxseg.planning.plans import ConfigurationPlan, Plans
from voxseg.preprocessing.memory_guard import check_preprocess
from voxseg.preprocessing.store import SETTINGS_NAME, CaseMeta, PreprocessedStore, Storage

MAX_LOCATIONS_PER_CLASS = 10_000
MIN_LOCATION_COVERAGE = 0.01


def _configuration(plans: Plans, config: str | ConfigurationPlan) -> ConfigurationPlan:
    return config if isinstance(config, ConfigurationPlan) else plans.configuration(config)


def target_spacing_for(config: ConfigurationPlan, spacing: tuple[float, ...]) -> list[float]:
    """3D target spacing of a case: the plan's, or for ``2d`` the case's z with the plan's y, x."""
    if config.spatial_dims == 3:
        return list(config.spacing)
    return [float(spacing[0]), *config.spacing]


def sampling_labels(labels: dict[str, int | list[int]]) -> list[int]:
    """Label values whose locations are sampled (foreground, not ignore; regions → members)."""
    values: set[int] = set()
    for name, v in labels.items():
        if name in ("background", "ignore"):
            continue
        values.update(v if isinstance(v, list) else [v])
    values.discard(0)
    return sorted(values)


def sample_foreground_locations(
    seg: np.ndarray,
    labels: list[int],
    seed: int | list[int] = 0,
    max_per_class: int = MAX_LOCATIONS_PER_CLASS,
    min_coverage: float = MIN_LOCATION_COVERAGE,
) -> dict[str, list[list[int]]]:
    """Up to ``max_per_class`` (at least ``min_coverage`` of the class) indices per label."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[list[int]]] = {}
    flat = seg.reshape(-1)
    for value in labels:
        idx = np.flatnonzero(flat == value)
        if idx.size == 0:
            continue
        n = min(idx.size, max(max_per_class, math.ceil(idx.size * min_coverage)))
        picked = np.sort(rng.choice(idx, size=n, replace=False))
        out[str(value)] = np.stack(np.unravel_index(picked, seg.shape), axis=1).tolist()
    return out


#: Schemes whose result never depends on the nonzero mask (``zscore`` only with
#: ``use_mask`` false); any other scheme, a user's included, gets the mask.
MASK_FREE_SCHEMES = frozenset({"ct", "none", "rescale_to_0_1", "rgb_to_0_1"})


def uses_nonzero_mask(schemes: list[tuple[str, dict]]) -> bool:
    """Whether normalising with ``schemes`` needs nnU-Net's hole-filled nonzero mask."""
    return not all(
        name in MASK_FREE_SCHEMES or (name == "zscore" and not params.get("use_mask", False))
        for name, params in schemes
    )


def preprocess_case(
    image: Image,
    plans: Plans,
    config: str | ConfigurationPlan,
    label: Image | np.ndarray | None = None,
    *,
    case_id: str = "case",
    seed: int = 0,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray | None, CaseMeta]:
    """Preprocess one in-memory case: ``(data [c, z, y, x] float32, seg [1, z, y, x] or None,
    meta)``. Used by :func:`preprocess_dataset` and by the predictor on new images."""
    from voxseg.spatial.crop import crop, crop_to_nonzero, nonzero_bbox
    from voxseg.spatial.orientation import reorient
    from voxseg.spatial.resample import (
        compute_new_shape,
        get_separate_z_axis,
        resample_data,
        resample_labels,
    )

    cfg = _configuration(plans, config)
    geometry = image.geometry
    if image.array.ndim == 3:
        image = image.with_array(image.array[None])
    seg = None
    if label is not None:
        seg = np.asarray(label.array if isinstance(label, Image) else label)
        if seg.ndim == 4:
            seg = seg[0]
        if not np.issubdtype(seg.dtype, np.integer):
            if not np.array_equal(seg, np.round(seg)):
                raise VoxsegError(f"{case_id}: the label map holds non-integer values")
        seg = seg.astype(np.int16 if np.abs(seg).max(initial=0) < 2**15 else np.int32)
        if tuple(seg.shape) != image.shape:
            raise VoxsegError(
                f"{case_id}: label shape {seg.shape} differs from image shape {image.shape}"
            )
    reorientation = None
    if plans.orientation:
        image, reorientation = reorient(image, plans.orientation)
        if seg is not None:
            seg = reorientation.apply(seg)
    shape_before_crop = list(image.shape)
    schemes = [(n.scheme, n.params) for n in plans.normalization]
    if uses_nonzero_mask(schemes):
        data, crop_seg, bbox = crop_to_nonzero(image.array, seg, nonzero_label=-1)
        data = normalize(data, schemes, crop_seg >= 0)
        if seg is not None:
            seg = np.where(crop_seg < 0, 0, crop_seg).astype(seg.dtype, copy=False)
    else:  # the same box; the hole-filled mask is only needed for masked statistics
        bbox = nonzero_bbox(image.array)
        data = normalize(crop(image.array, bbox), schemes)
        if seg is not None:
            seg = crop(seg, bbox)
    spacing_before = list(image.spacing)
    spacing_after = target_spacing_for(cfg, image.spacing)
    cropped_shape = list(data.shape[1:])
    new_shape = compute_new_shape(cropped_shape, spacing_before, spacing_after)
    separate_z = get_separate_z_axis(
        spacing_before, spacing_after, cfg.resampling.anisotropy_threshold
    )
    data = resample_data(
        data,
        new_shape,
        order=cfg.resampling.order_image,
        separate_z_axis=separate_z,
        order_z=cfg.resampling.order_z_image,
        device=device,
    )
    locations: dict[str, list[list[int]]] = {}
    classes: list[int] = []
    if seg is not None:
        seg = resample_labels(seg, new_shape, separate_z_axis=separate_z, device=device)
        classes = [int(v) for v in np.unique(seg)]
        wanted = sampling_labels(plans.labels)
        locations = sample_foreground_locations(seg, wanted, case_seed(case_id, seed))
        seg = seg[None]
    meta = CaseMeta(
        case_id=case_id,
        geometry=geometry.to_dict(),
        reorientation=None if reorientation is None else reorientation.to_dict(),
        bbox=[[int(a), int(b)] for a, b in bbox],
        shape_before_crop=shape_before_crop,
        shape_after_crop=cropped_shape,
        spacing_before=spacing_before,
        spacing_after=spacing_after,
        shape_after_resampling=list(new_shape),
        separate_z_axis=separate_z,
        foreground_locations=locations,
        classes=classes,
        num_channels=int(data.shape[0]),
    )
    return data, seg, meta


class StoreSettings(BaseModel):
    """What a store folder was made from (``preprocessing.json``); a rerun must match."""

    dataset: str
    plan_name: str
    configuration: str
    dtype: Literal["float16", "float32"] = "float32"
    storage: Storage = "blosc2"
    seed: int = 0


def _preprocess_one(
    dataset_root: str,
    case: Case,
    plans: Plans,
    config: ConfigurationPlan,
    folder: str,
    dtype: str,
    storage: str,
    seed: int,
    num_processes: int = 1,
    continue_on_error: bool = False,
) -> str:
    store = PreprocessedStore(folder)
    if store.is_finished(case.case_id):
        return "skipped"
    try:
        check_preprocess(case.case_id, case.images, case.label, config.spacing, num_processes)
        image, label = Dataset(dataset_root).load_case(case)
        data, seg, meta = preprocess_case(
            image, plans, config, label, case_id=case.case_id, seed=seed
        )
    except VoxsegError as exc:
        if not continue_on_error:
            raise
        return f"failed: {exc}"
    meta = meta.model_copy(update={"dtype": dtype, "storage": storage})
    store.write(case.case_id, data, seg, meta, patch_size=config.patch_size)
    return "done"


def preprocess_dataset(
    dataset: Dataset,
    plans: Plans,
    config: str,
    folder: str | os.PathLike[str],
    *,
    num_processes: int = 1,
    dtype: Literal["float16", "float32"] = "float32",
    storage: Storage = "blosc2",
    seed: int = 0,
    continue_on_error: bool = False,
) -> PreprocessedStore:
    """Preprocess every training case of ``dataset`` for configuration ``config`` into
    ``folder``; finished cases are skipped, so a killed run resumes where it stopped.

    A case that cannot be read or preprocessed stops the run, or with ``continue_on_error``
    is reported (a :class:`VoxsegError` listing every failed case) after the others.
    """
    cfg = plans.configuration(config)
    folder = Path(folder)
    settings = StoreSettings(
        dataset=dataset.name,
        plan_name=plans.plan_name,
        configuration=cfg.data_from,
        dtype=dtype,
        storage=storage,
        seed=seed,
    )
    with folder_lock(folder, "preprocessed configuration"):
        return _preprocess_locked(
            dataset, plans, config, folder, settings, num_processes, continue_on_error
        )


def _preprocess_locked(
    dataset: Dataset,
    plans: Plans,
    config: str,
    folder: Path,
    settings: StoreSettings,
    num_processes: int,
    continue_on_error: bool = False,
) -> PreprocessedStore:
    cfg = plans.configuration(config)
    dtype, storage, seed = settings.dtype, settings.storage, settings.seed
    settings_path = folder / SETTINGS_NAME
    if settings_path.is_file():
        old = load_model(StoreSettings, settings_path)
        if old != settings:
            raise VoxsegError(
                f"{settings_path}: this folder was preprocessed with {old.model_dump()}, "
                f"not {settings.model_dump()}; delete the folder to preprocess again"
            )
    else:
        write_json(settings_path, settings)
    cases = dataset.cases()
    todo = [c for c in cases if not PreprocessedStore(folder).is_finished(c.case_id)]
    args = (plans, cfg, str(folder), dtype, storage, seed, num_processes, continue_on_error)
    results = map_with_progress(
        _preprocess_one,
        [(str(dataset.root), c, *args) for c in todo],
        num_processes=num_processes,
        description=f"preprocess {config}",
        names=[c.case_id for c in todo],
    )
    failed = [
        f"{c.case_id}: {r[len('failed: ') :]}"
        for c, r in zip(todo, results, strict=True)
        if r.startswith("failed")
    ]
    if failed:
        raise VoxsegError(
            f"{len(failed)} case(s) failed; the others are in {folder}:\n" + "\n".join(failed)
        )
    return PreprocessedStore(folder)
