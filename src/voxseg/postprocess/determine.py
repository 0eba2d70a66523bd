"""Choose post-processing on cross-validation predictions (nnU-Net's rule).

Candidates, each judged on the mean Dice over cases (NaN cases left out, as in evaluation):

1. keep the largest component of all foreground taken as one region, applied to the raw
   predictions;
2. then, on top of what step 1 left, keep the largest component of each label separately
   (one candidate per label; regions defined by lists of values get no per-label candidate).

A candidate is kept only if the foreground mean Dice (the mean over labels of the per-label
mean Dice) improves by at least ``MIN_GAIN`` and no label's mean Dice gets worse. The
per-label candidates touch disjoint voxels, so those kept are combined into one step. A kept
step removes only components up to the largest *false* one it removed on these cases (less
than half of it in the reference; ``max_removed_mm3``): the cases are evidence about
spurious components of that size, none about larger ones. Every false component it removed
here is still removed (true ones larger than all of them are kept, so the Dice is at least
as good), and a new case keeps a large component that is not the largest (a brain slice's
temporal lobe) instead of losing it.

nnU-Net keeps a step for any gain (``min_gain=0`` here). Keeping the largest component is a
bet that every other component is a false positive; a few validation cases of one kind can
win that bet by a hair while new cases lose it by far: on brain slices whose training and
validation levels show the brain in one piece, the step gained 0.002 on validation and cost
0.078 on lower levels, where temporal lobes and cerebellum are separate components
(``benchmarks/RESULTS.md``). Across the phantom benchmarks every kept step had gained less
than 0.003.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from voxseg.config import read_json, write_json
from voxseg.errors import VoxsegError
from voxseg.evaluation.evaluate import (
    CasePair,
    evaluate_case,
    find_dataset_json,
    labels_found,
    labels_from_dataset,
    map_cases,
    pair_cases,
)
from voxseg.io import read_image
from voxseg.modelfolder import ModelLayout
from voxseg.postprocess.steps import PostprocessingStepConfig, keep_largest_measured

#: A label's mean Dice may drop by at most this much and still count as "not worse".
NOT_WORSE_TOLERANCE = 1e-9
#: A step must raise the foreground mean Dice by at least this much to be kept.
MIN_GAIN = 0.005
#: a case's entry: per candidate, the largest false component (mm³) it removed
_REMOVED = "max_removed_mm3"


def _bound(cases: list[dict], keys: Sequence[str]) -> float:
    """The largest component volume the candidates ``keys`` removed on any case."""
    return max((c[_REMOVED].get(k, 0.0) for c in cases for k in keys), default=0.0)


def _dice_per_label(pred, ref, labels, ignore_label) -> dict[str, float]:
    metrics = evaluate_case(pred, ref, labels, ignore_label=ignore_label, surface=False)
    return {name: m["dice"] for name, m in metrics.items()}


def _case_candidates(pair: CasePair, kwargs: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Dice per label of the raw prediction and of every candidate, for one case."""
    try:
        pred, ref = read_image(pair.prediction), read_image(pair.reference)
        ignore = kwargs["ignore_label"]
        labels = kwargs["labels"] or labels_found(ref.array, pred.array, ignore_label=ignore)
        spacing = ref.spacing
        out = {"raw": _dice_per_label(pred, ref, labels, ignore)}
        foreground = [int(v) for v in np.unique(pred.array) if v != 0]
        truth = (ref.array != 0) if ignore is None else (ref.array != 0) & (ref.array != ignore)
        largest_all, removed_all = keep_largest_measured(pred.array, spacing, foreground, truth)
        out["all"] = _dice_per_label(pred.with_array(largest_all), ref, labels, ignore)
        removed = {"all": removed_all}
        classes = kwargs["classes"]
        if classes is None:
            classes = [v for v in labels.values() if not isinstance(v, (list, tuple))]
        for value in classes:
            for base, arr in (("raw", pred.array), ("all", largest_all)):
                kept, removed[f"{base}+{value}"] = keep_largest_measured(
                    arr, spacing, [value], ref.array == value
                )
                out[f"{base}+{value}"] = _dice_per_label(pred.with_array(kept), ref, labels, ignore)
        out[_REMOVED] = removed
        return out
    except VoxsegError as exc:
        raise VoxsegError(f"{pair.prediction}: {exc}") from None


def _label_means(cases: list[dict], key: str, names: list[str], fallback: str) -> dict:
    means = {}
    for name in names:
        values = [c.get(key, c[fallback]).get(name, np.nan) for c in cases]
        arr = np.asarray(values, dtype=float)
        means[name] = float(np.nanmean(arr)) if not np.isnan(arr).all() else float("nan")
    return means


def _foreground(means: Mapping[str, float]) -> float:
    arr = np.asarray(list(means.values()), dtype=float)
    return float(np.nanmean(arr)) if arr.size and not np.isnan(arr).all() else float("nan")


def _judge(before: dict[str, float], after: dict[str, float], min_gain: float) -> tuple[bool, str]:
    fg_before, fg_after = _foreground(before), _foreground(after)
    worse = [
        n
        for n in before
        if not np.isnan(before[n])
        and (np.isnan(after[n]) or after[n] < before[n] - NOT_WORSE_TOLERANCE)
    ]
    if worse:
        return False, "mean Dice of " + ", ".join(worse) + " gets worse"
    if not fg_after > fg_before:
        return False, f"foreground mean Dice does not improve ({fg_before:.6f} -> {fg_after:.6f})"
    if not fg_after >= fg_before + min_gain:
        return False, (
            f"foreground mean Dice improves by less than {min_gain:g} "
            f"({fg_before:.6f} -> {fg_after:.6f})"
        )
    return True, f"foreground mean Dice improves ({fg_before:.6f} -> {fg_after:.6f})"


def determine_postprocessing(
    pred_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str],
    labels: Mapping[str, int | Sequence[int]] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    dataset: str | os.PathLike[str] | None = None,
    ignore_label: int | None = None,
    num_processes: int = 1,
    min_gain: float = MIN_GAIN,
) -> list[dict[str, Any]]:
    """Post-processing steps chosen on predictions vs references (see the module docstring;
    ``min_gain=0`` is nnU-Net's rule).

    Labels are resolved as in :func:`voxseg.evaluation.evaluate_folder`. With ``output_dir``
    (the model folder), writes ``postprocessing.json`` (``{"steps": [...]}``, what
    ``apply_postprocessing`` and ``voxseg postprocess apply`` read) and
    ``postprocessing_report.json`` (every candidate, its Dice before and after, the decision).
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    pairs = pair_cases(pred_dir, ref_dir)
    if labels is None:
        ds = Path(dataset) if dataset is not None else find_dataset_json(pred_dir, ref_dir)
        if ds is not None:
            labels, ds_ignore = labels_from_dataset(ds)
            ignore_label = ds_ignore if ignore_label is None else ignore_label
    classes = None
    if labels is not None:
        classes = sorted({int(v) for v in labels.values() if not isinstance(v, (list, tuple))})
    kwargs = {
        "labels": dict(labels) if labels is not None else None,
        "ignore_label": ignore_label,
        "classes": classes,
    }
    cases = map_cases(_case_candidates, pairs, kwargs, num_processes)
    names = (
        list(labels)
        if labels is not None
        else sorted({n for c in cases for n in c["raw"]}, key=int)
    )
    if classes is None:
        classes = sorted({int(n) for n in names})

    candidates = []
    raw = _label_means(cases, "raw", names, "raw")
    largest_all = _label_means(cases, "all", names, "raw")
    accept_all, reason = _judge(raw, largest_all, min_gain)
    step_all = {"name": "keep_largest_component", "labels": None, "per_class": False}
    candidates.append(_entry(step_all, "raw", raw, largest_all, accept_all, reason))
    base = "all" if accept_all else "raw"
    current = largest_all if accept_all else raw
    kept_classes = []
    for value in classes:
        after = _label_means(cases, f"{base}+{value}", names, base)
        ok, reason = _judge(current, after, min_gain)
        step = {"name": "keep_largest_component", "labels": [value], "per_class": True}
        candidates.append(_entry(step, base, current, after, ok, reason))
        if ok:
            kept_classes.append(value)

    steps: list[dict[str, Any]] = []
    if accept_all:
        steps.append({**step_all, _REMOVED: _bound(cases, ["all"])})
    if kept_classes:
        bound = _bound(cases, [f"{base}+{v}" for v in kept_classes])
        steps.append(
            {
                "name": "keep_largest_component",
                "labels": kept_classes,
                "per_class": True,
                _REMOVED: bound,
            }
        )
    if output_dir is not None:
        output_dir = Path(output_dir)
        layout = ModelLayout(output_dir)
        write_json(layout.postprocessing, {"steps": steps})
        write_json(
            layout.postprocessing_report,
            {
                "prediction": str(pred_dir),
                "reference": str(ref_dir),
                "num_cases": len(pairs),
                "labels": names,
                "rule": f"keep a step if the foreground mean Dice improves by at least "
                f"{min_gain:g} and no label gets worse; it removes components up to the "
                "largest false one it removed here",
                "min_gain": min_gain,
                "foreground_dice_raw": _foreground(raw),
                "candidates": candidates,
                "steps": steps,
            },
        )
    return steps


def _entry(step, applied_on, before, after, accepted, reason) -> dict[str, Any]:
    return {
        "step": step,
        "applied_on": "raw predictions" if applied_on == "raw" else "after step 1",
        "foreground_dice_before": _foreground(before),
        "foreground_dice_after": _foreground(after),
        "dice_before": before,
        "dice_after": after,
        "accepted": accepted,
        "reason": reason,
    }


def load_postprocessing(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The step configs in a ``postprocessing.json`` (``{"steps": [...]}`` or a bare list)."""
    data = read_json(path)
    steps = data.get("steps") if isinstance(data, dict) else data
    if not isinstance(steps, list) or not all(isinstance(s, dict) and "name" in s for s in steps):
        raise VoxsegError(
            f"{path}: expected {{'steps': [{{'name': ..., ...}}, ...]}} or a list of steps"
        )
    try:
        return [PostprocessingStepConfig.model_validate(s).arguments() for s in steps]
    except ValidationError as exc:
        raise VoxsegError(f"{path}: invalid post-processing step:\n{exc}") from exc
