"""Segmentation metrics for one binary mask pair, spacing-aware, and lesion-wise detection.

Overlap (voxel counts): ``tp``, ``fp``, ``fn``; ``dice = 2tp / (2tp + fp + fn)``,
``iou = tp / (tp + fp + fn)``, ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``.
Volumes in mm³ (a 2D image, ``z`` of size 1: areas in mm²): ``volume_pred``, ``volume_ref``,
``volume_diff = volume_pred - volume_ref``, ``volume_diff_rel = volume_diff / volume_ref``.

Surface metrics use the surfaces and area weights of :mod:`voxseg.evaluation.surface` (the
definition of DeepMind's ``surface-distance``):

* ``hd95``: the larger of the two directed 95th percentiles, each percentile taken over the
  area-weighted distances of one surface (``surface-distance``'s ``compute_robust_hausdorff``).
* ``hd``: the Hausdorff distance (the larger of the two directed maxima).
* ``assd``: average symmetric surface distance, the area-weighted mean over both surfaces'
  distances pooled together.
* ``nsd``: normalised surface Dice at tolerance τ mm: the surface area of both surfaces lying
  within τ of the other surface, over the total area (Nikolov et al. 2021).

Empty masks (one rule for every metric, NaN where a ratio or a distance has nothing to
measure):

=====================  ======  ======  =========  ======  ============  =======  ===============
case                   dice    iou     precision  recall  hd95/hd/assd  nsd      volume_diff_rel
=====================  ======  ======  =========  ======  ============  =======  ===============
both empty             NaN     NaN     NaN        NaN     NaN           NaN      NaN
reference empty only   0       0       0          NaN     inf           0        NaN
prediction empty only  0       0       NaN        0       inf           0        -1
=====================  ======  ======  =========  ======  ============  =======  ===============

Dice NaN when both are empty is nnU-Net's convention (summaries ignore NaN, so a correctly
empty prediction neither rewards nor penalises the mean). A distance to a surface that does not
exist is ``inf`` (as in ``surface-distance``): a missed or hallucinated structure is the worst
possible distance, and mean distances over cases then read ``inf`` (medians stay finite).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cc3d
import numpy as np

from voxseg.evaluation.surface import SurfaceDistances, surface_distances

OVERLAP_METRICS = ("dice", "iou", "precision", "recall")
SURFACE_METRICS = ("hd95", "hd", "assd", "nsd")
VOLUME_METRICS = ("volume_pred", "volume_ref", "volume_diff", "volume_diff_rel")
COUNT_METRICS = ("tp", "fp", "fn", "n_pred", "n_ref")
ALL_METRICS = OVERLAP_METRICS + SURFACE_METRICS + VOLUME_METRICS + COUNT_METRICS


def voxel_measure(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Volume of one voxel in mm³, or area of one pixel in mm² for a 2D image (z of size 1)."""
    spacing = tuple(float(s) for s in spacing)
    if len(shape) == 3 and shape[0] == 1:
        spacing = spacing[1:]
    return float(np.prod(spacing))


def _mask_pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as booleans; an error when their shapes differ."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    return pred, ref


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def overlap_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict:
    """Voxel counts, Dice, IoU, precision, recall and volumes of two boolean masks."""
    tp = int(np.count_nonzero(pred & ref))
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    fp, fn = n_pred - tp, n_ref - tp
    vox = voxel_measure(pred.shape, spacing)
    vol_pred, vol_ref = n_pred * vox, n_ref * vox
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, n_pred),
        "recall": _ratio(tp, n_ref),
        "volume_pred": vol_pred,
        "volume_ref": vol_ref,
        "volume_diff": vol_pred - vol_ref,
        "volume_diff_rel": _ratio(vol_pred - vol_ref, vol_ref),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_pred": n_pred,
        "n_ref": n_ref,
    }


def _weighted_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """``surface-distance``'s area-weighted percentile: the first distance (ascending) at which
    the cumulative area fraction reaches ``percent``."""
    if percent >= 100:
        return float(distances.max())
    order = np.argsort(distances, kind="stable")
    d, a = distances[order], areas[order]
    cum = np.cumsum(a) / np.sum(a)
    idx = int(np.searchsorted(cum, percent / 100.0))
    return float(d[min(idx, d.size - 1)])


def hausdorff(sd: SurfaceDistances, percent: float = 95.0) -> float:
    """Robust Hausdorff distance: max of the two directed area-weighted percentiles (mm)."""
    if sd.ref_empty and sd.pred_empty:
        return float("nan")
    if sd.ref_empty or sd.pred_empty:
        return float("inf")
    return max(
        _weighted_percentile(sd.ref_to_pred, sd.ref_areas, percent),
        _weighted_percentile(sd.pred_to_ref, sd.pred_areas, percent),
    )


def average_symmetric_surface_distance(sd: SurfaceDistances) -> float:
    """Area-weighted mean distance over both surfaces pooled (mm)."""
    if sd.ref_empty and sd.pred_empty:
        return float("nan")
    if sd.ref_empty or sd.pred_empty:
        return float("inf")
    total = np.dot(sd.ref_to_pred, sd.ref_areas) + np.dot(sd.pred_to_ref, sd.pred_areas)
    return float(total / (sd.ref_areas.sum() + sd.pred_areas.sum()))


def normalised_surface_dice(sd: SurfaceDistances, tolerance_mm: float = 1.0) -> float:
    """Share of the surface area of both masks within ``tolerance_mm`` of the other surface."""
    if sd.ref_empty and sd.pred_empty:
        return float("nan")
    within = sd.ref_areas[sd.ref_to_pred <= tolerance_mm].sum()
    within += sd.pred_areas[sd.pred_to_ref <= tolerance_mm].sum()
    return float(within / (sd.ref_areas.sum() + sd.pred_areas.sum()))


def surface_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    nsd_tolerance_mm: float = 1.0,
    threads: int = 1,
) -> dict:
    """HD95, HD, ASSD and NSD of two boolean masks (one distance transform per surface)."""
    sd = surface_distances(pred, ref, spacing, threads=threads)
    return {
        "hd95": hausdorff(sd, 95.0),
        "hd": hausdorff(sd, 100.0),
        "assd": average_symmetric_surface_distance(sd),
        "nsd": normalised_surface_dice(sd, nsd_tolerance_mm),
    }


def binary_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    nsd_tolerance_mm: float = 1.0,
    surface: bool = True,
    threads: int = 1,
) -> dict:
    """Every metric of :data:`ALL_METRICS` for one class or region (``surface=False``: no
    distances, the surface metrics are left out)."""
    pred, ref = _mask_pair(pred, ref)
    out = overlap_metrics(pred, ref, spacing)
    if surface:
        out.update(surface_metrics(pred, ref, spacing, nsd_tolerance_mm, threads))
    return {k: out[k] for k in ALL_METRICS if k in out}


@dataclass(frozen=True)
class LesionDetection:
    """Lesion-wise detection counts and rates (see :func:`lesion_detection`)."""

    n_ref: int
    n_pred: int
    detected_ref: int
    true_pred: int
    sensitivity: float
    precision: float
    f1: float

    def to_dict(self) -> dict:
        return asdict(self)


def lesion_detection(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float],
    overlap: float = 0.0,
    min_volume_mm3: float = 0.0,
    connectivity: int = 26,
) -> LesionDetection:
    """Lesion-wise sensitivity, precision and F1 from connected components (``cc3d``).

    A lesion is a connected component (``connectivity`` 26, 18 or 6; in 2D images 26 acts as
    8). Components smaller than ``min_volume_mm3`` are dropped from both masks first. A reference
    lesion and a predicted lesion *match* when they overlap and, for ``overlap > 0``, their IoU
    is at least ``overlap`` (``overlap=0``: any shared voxel). ``sensitivity`` is the share of
    reference lesions matched by some predicted lesion, ``precision`` the share of predicted
    lesions matching some reference lesion, ``f1`` their harmonic mean. NaN where undefined:
    sensitivity without reference lesions, precision without predicted lesions, F1 when both
    are NaN; F1 is 0 when one of them is 0.
    """
    pred, ref = _mask_pair(pred, ref)
    vox = voxel_measure(ref.shape, spacing)
    ref_cc, ref_sizes = _components(ref, connectivity, min_volume_mm3 / vox)
    pred_cc, pred_sizes = _components(pred, connectivity, min_volume_mm3 / vox)
    n_ref, n_pred = len(ref_sizes) - 1, len(pred_sizes) - 1
    both = (ref_cc > 0) & (pred_cc > 0)
    codes, inter = np.unique(
        ref_cc[both].astype(np.int64) * (n_pred + 1) + pred_cc[both], return_counts=True
    )
    r, p = codes // (n_pred + 1), codes % (n_pred + 1)
    iou = inter / (ref_sizes[r] + pred_sizes[p] - inter)
    keep = iou >= overlap if overlap > 0 else np.ones(iou.shape, bool)
    detected = int(np.unique(r[keep]).size)
    true_pred = int(np.unique(p[keep]).size)
    sens = _ratio(detected, n_ref)
    prec = _ratio(true_pred, n_pred)
    if np.isnan(sens) and np.isnan(prec):
        f1 = float("nan")
    else:
        s, q = np.nan_to_num(sens), np.nan_to_num(prec)
        f1 = 2 * s * q / (s + q) if s + q > 0 else 0.0
    return LesionDetection(n_ref, n_pred, detected, true_pred, sens, prec, float(f1))


def _components(
    mask: np.ndarray, connectivity: int, min_voxels: float
) -> tuple[np.ndarray, np.ndarray]:
    """Components relabelled 1..N after dropping those under ``min_voxels``; sizes[0] unused."""
    labels = cc3d.connected_components(mask, connectivity=connectivity)
    sizes = np.bincount(labels.ravel())
    if sizes.size == 0:
        sizes = np.zeros(1, np.int64)
    keep = sizes >= min_voxels
    keep[0] = False
    remap = np.zeros(sizes.size, np.int64)
    remap[keep] = np.arange(1, int(keep.sum()) + 1)
    return remap[labels], np.concatenate([[0], sizes[keep]])
