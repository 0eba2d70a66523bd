"""Evaluate predicted label maps against references: one case, or two folders paired by name.

``evaluate_folder`` writes ``summary.json`` (per-class mean, median and std over cases, the
foreground mean — the mean over classes of the per-class means, as in nnU-Net — and every case)
and ``metrics.csv`` (one row per case × class). NaN (undefined, e.g. Dice of two empty masks) is
left out of the statistics; ``inf`` (a distance to a missing surface) is kept, so a mean
distance reads ``inf`` when any case missed a structure while the median stays finite. JSON
holds them as ``NaN`` and ``Infinity`` (what Python's and nnU-Net's JSON writers do).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxseg.config import atomic_write_text, write_json
from voxseg.errors import VoxsegError
from voxseg.evaluation.metrics import ALL_METRICS, binary_metrics
from voxseg.io import Image, file_ending, read_image
from voxseg.progress import note_step
from voxseg.workers import worker_pool

if TYPE_CHECKING:
    from rich.table import Table

LabelSpec = Mapping[str, int | Sequence[int]]

#: File endings of label maps that evaluation pairs by name.
LABEL_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".bmp", ".tif")
#: Metrics shown in the printed table.
TABLE_METRICS = ("dice", "iou", "precision", "recall", "hd95", "assd", "nsd")


def label_mask(seg: np.ndarray, value: int | Sequence[int]) -> np.ndarray:
    """Mask of a label value, or of a region (the union of a list of values)."""
    if isinstance(value, (list, tuple)):
        return np.isin(seg, np.asarray(value))
    return seg == value


def labels_found(*segs: np.ndarray, ignore_label: int | None = None) -> dict[str, int]:
    """``{"1": 1, ...}`` for every non-zero value in the label maps (the ignore label aside)."""
    values: set[int] = set()
    for seg in segs:
        values.update(int(v) for v in np.unique(seg))
    values -= {0} if ignore_label is None else {0, int(ignore_label)}
    return {str(v): v for v in sorted(values)}


def evaluate_case(
    pred: Image,
    ref: Image,
    labels: LabelSpec | None = None,
    nsd_tolerance_mm: float = 1.0,
    ignore_label: int | None = None,
    surface: bool = True,
    threads: int = 1,
) -> dict[str, dict[str, float]]:
    """Metrics per class or region: ``{name: {metric: value}}`` (see :mod:`.metrics`).

    ``labels`` maps names to a value or a list of values (a region); by default every non-zero
    value found in either map. Voxels where the reference holds ``ignore_label`` are removed
    from both masks before any metric, surfaces included. The prediction must lie on the
    reference's grid (same shape, spacing, origin and direction).
    """
    problems = ref.geometry.differences(pred.geometry)
    if problems:
        raise VoxsegError(
            "prediction does not lie on its reference's grid: "
            + "; ".join(problems)
            + " (resample the prediction to the reference geometry first)"
        )
    if pred.array.ndim != 3 or ref.array.ndim != 3:
        raise VoxsegError(
            f"label maps must have one channel, got shapes {pred.array.shape} and {ref.array.shape}"
        )
    if labels is None:
        labels = labels_found(ref.array, pred.array, ignore_label=ignore_label)
    valid = None if ignore_label is None else ref.array != ignore_label
    out = {}
    for name, value in labels.items():
        p = label_mask(pred.array, value)
        r = label_mask(ref.array, value)
        if valid is not None:
            p &= valid
            r &= valid
        out[name] = binary_metrics(p, r, ref.spacing, nsd_tolerance_mm, surface, threads)
    return out


@dataclass(frozen=True)
class CasePair:
    case_id: str
    prediction: Path
    reference: Path


def case_id(path: str | os.PathLike[str]) -> str:
    """File name without its ending (``.nii.gz`` counts as one ending)."""
    name = Path(path).name
    return name[: len(name) - len(file_ending(name))]


def _label_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if file_ending(path) not in LABEL_ENDINGS:
            continue
        cid = case_id(path)
        if cid in found:
            raise VoxsegError(
                f"{folder}: case {cid!r} has two files ({found[cid].name}, {path.name}); keep one"
            )
        found[cid] = path
    return found


def pair_cases(
    pred: str | os.PathLike[str],
    ref: str | os.PathLike[str],
    unpaired: dict[str, str] | None = None,
) -> list[CasePair]:
    """Pair each prediction with the reference of the same case name (endings may differ).

    A prediction without a reference is an error, or, given the dict ``unpaired``, recorded
    there (case → reason) and left out.
    """
    pred, ref = Path(pred), Path(ref)
    if pred.is_file() and ref.is_file():
        return [CasePair(case_id(pred), pred, ref)]
    for p in (pred, ref):
        if not p.is_dir():
            raise VoxsegError(f"{p}: not found (give two folders or two files)")
    preds, refs = _label_files(pred), _label_files(ref)
    if not preds:
        raise VoxsegError(f"{pred}: no label maps ({', '.join(LABEL_ENDINGS)}) to evaluate")
    missing = sorted(set(preds) - set(refs))
    if missing and unpaired is None:
        raise VoxsegError(
            f"{pred}: no reference in {ref} for {len(missing)} prediction(s): "
            + ", ".join(preds[m].name for m in missing[:10])
        )
    for m in missing:
        unpaired[m] = f"{preds[m]}: no reference {m}.* in {ref}"  # type: ignore[index]
    return [CasePair(cid, preds[cid], refs[cid]) for cid in sorted(preds) if cid in refs]


def labels_from_dataset(path: str | os.PathLike[str]) -> tuple[dict, int | None]:
    """Foreground labels/regions and the ignore label from a ``dataset.json`` (file or folder)."""
    from voxseg.config import load_model
    from voxseg.data.dataset import DatasetInfo

    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    info = load_model(DatasetInfo, path)
    return dict(info.foreground_labels), info.ignore_label


def find_dataset_json(pred: Path, ref: Path) -> Path | None:
    """The ``dataset.json`` beside the references (or above them, or in the predictions)."""
    for folder in (ref, ref.parent, pred):
        folder = folder if folder.is_dir() else folder.parent
        if (folder / "dataset.json").is_file():
            return folder / "dataset.json"
    return None


def read_label_map(path: Path) -> Image:
    """A label map: integer values, none negative (a float or negative map is refused)."""
    image = read_image(path)
    arr = image.array
    if not np.issubdtype(arr.dtype, np.integer):
        fractional = arr[arr != np.round(arr)] if arr.size else arr
        if fractional.size:
            raise VoxsegError(
                f"{path}: non-integer label values (e.g. {float(fractional.flat[0]):g}); a label "
                "map holds integers"
            )
    if arr.size and arr.min() < 0:
        raise VoxsegError(f"{path}: negative label value {arr.min():g}; labels are 0 or positive")
    return image


def _evaluate_pair(pair: CasePair, kwargs: dict[str, Any]) -> dict[str, dict[str, float]]:
    try:
        pred, ref = read_label_map(pair.prediction), read_label_map(pair.reference)
        return evaluate_case(pred, ref, **kwargs)
    except VoxsegError as exc:
        text = str(exc)
        named = str(pair.prediction) in text or str(pair.reference) in text
        raise VoxsegError(text if named else f"{pair.prediction}: {text}") from None


def _evaluate_pair_or_reason(pair: CasePair, kwargs: dict[str, Any]) -> dict | str:
    """The metrics of a pair, or why it could not be evaluated (a line naming the file)."""
    try:
        return _evaluate_pair(pair, kwargs)
    except VoxsegError as exc:
        return str(exc)
    except OSError as exc:  # a file that vanished or cannot be opened
        return f"{exc.filename or pair.prediction}: {exc.strerror or exc}"


def map_cases(func: Any, items: list, kwargs: dict, num_processes: int) -> list:
    """``[func(item, kwargs) for item in items]``, in ``num_processes`` spawned processes."""
    if num_processes <= 1 or len(items) <= 1:
        out = []
        for i, item in enumerate(items):
            note_step(f"evaluating {getattr(item, 'case_id', i)} ({i + 1}/{len(items)})")
            out.append(func(item, kwargs))
        return out
    workers = min(num_processes, len(items))
    with worker_pool(workers, context=get_context("spawn")) as pool:
        return list(pool.map(func, items, [kwargs] * len(items)))


def _stats(values: list[float]) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0 or np.isnan(arr).all():
        return float("nan"), float("nan"), float("nan")
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(arr)), float(np.nanmedian(arr)), float(np.nanstd(arr))


def summarise(per_case: list[dict], labels: Sequence[str]) -> dict[str, Any]:
    """Per-class mean/median/std over cases and the foreground mean (mean of class means)."""
    mean: dict[str, dict] = {}
    median: dict[str, dict] = {}
    std: dict[str, dict] = {}
    for name in labels:
        mean[name], median[name], std[name] = {}, {}, {}
        for metric in ALL_METRICS:
            values = [c["metrics"][name][metric] for c in per_case if metric in c["metrics"][name]]
            if values:
                mean[name][metric], median[name][metric], std[name][metric] = _stats(values)
    foreground = {}
    for metric in ALL_METRICS:
        values = [mean[n][metric] for n in labels if metric in mean[n]]
        if values:
            foreground[metric] = _stats(values)[0]
    return {"mean": mean, "median": median, "std": std, "foreground_mean": foreground}


def evaluate_folder(
    pred_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str],
    labels: LabelSpec | None = None,
    dataset: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    nsd_tolerance_mm: float = 1.0,
    ignore_label: int | None = None,
    num_processes: int = 1,
    surface: bool = True,
    centerlines: str | os.PathLike[str] | None = None,
    continue_on_error: bool = False,
) -> dict[str, Any]:
    """Evaluate every prediction in ``pred_dir`` against the same-named file in ``ref_dir``.

    A case that cannot be evaluated (unreadable, not a label map, off its reference's grid,
    without a reference or reference centerline) stops the run with an error naming its
    file; with ``continue_on_error`` it is left out of the statistics and listed, with the
    reason, under ``"failed"`` (case → one line naming the file) while the others are
    evaluated and written as usual.

    With ``centerlines`` (a folder of reference ``<case>.vtp``), each case also gets the
    vessel metrics of :func:`voxseg.vessels.metrics.centerline_metrics` (share of the true
    centerline inside the prediction, mean distance) under ``"centerline"``, and the summary
    their means under ``"centerline_mean"``.

    Labels: ``labels`` if given, else the ``dataset.json`` at ``dataset`` or beside the
    references (``ref_dir``, its parent, or ``pred_dir``), else every non-zero value found.
    Writes ``summary.json`` and ``metrics.csv`` to ``output_dir`` (default: ``pred_dir`` when it
    is a folder; nothing is written for a single file pair without ``output_dir``) and returns
    the summary. Two files instead of two folders evaluate one case.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    failed: dict[str, str] = {}
    pairs = pair_cases(pred_dir, ref_dir, failed if continue_on_error else None)
    if labels is None:
        ds = Path(dataset) if dataset is not None else find_dataset_json(pred_dir, ref_dir)
        if ds is not None:
            labels, ds_ignore = labels_from_dataset(ds)
            ignore_label = ds_ignore if ignore_label is None else ignore_label
    kwargs = {
        "labels": dict(labels) if labels is not None else None,
        "nsd_tolerance_mm": nsd_tolerance_mm,
        "ignore_label": ignore_label,
        "surface": surface,
    }
    if continue_on_error:
        outcomes = map_cases(_evaluate_pair_or_reason, pairs, kwargs, num_processes)
        failed.update(
            (p.case_id, r) for p, r in zip(pairs, outcomes, strict=True) if isinstance(r, str)
        )
        results = [r for r in outcomes if not isinstance(r, str)]
        pairs = [p for p in pairs if p.case_id not in failed]
    else:
        results = map_cases(_evaluate_pair, pairs, kwargs, num_processes)
    if labels is None:
        found = sorted({int(n) for r in results for n in r})
        labels = {str(v): v for v in found}
        nothing = np.zeros((1, 1, 1), bool)
        empty = binary_metrics(nothing, nothing, (1.0, 1.0, 1.0), surface=surface)
        results = [{n: r.get(n, dict(empty)) for n in labels} for r in results]
    per_case = [
        {
            "case": p.case_id,
            "prediction": str(p.prediction),
            "reference": str(p.reference),
            "metrics": r,
        }
        for p, r in zip(pairs, results, strict=True)
    ]
    centerline_mean = None
    if centerlines is not None:
        centerline_mean = _centerline_metrics(
            per_case, Path(centerlines), failed if continue_on_error else None
        )
        per_case = [c for c in per_case if c["case"] not in failed]
    summary: dict[str, Any] = {
        "prediction": str(pred_dir),
        "reference": str(ref_dir),
        "labels": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in labels.items()},
        "ignore_label": ignore_label,
        "nsd_tolerance_mm": nsd_tolerance_mm,
        "num_cases": len(per_case),
        **summarise(per_case, list(labels)),
        "metric_per_case": per_case,
    }
    if centerline_mean is not None:
        summary["centerline_mean"] = centerline_mean
    if continue_on_error:
        summary["failed"] = dict(sorted(failed.items()))
    if pred_dir.is_dir():
        refs = _label_files(ref_dir)
        summary["references_without_prediction"] = sorted(set(refs) - {p.case_id for p in pairs})
    if output_dir is None and pred_dir.is_dir():
        output_dir = pred_dir
    if output_dir is not None:
        write_summary(summary, output_dir)
    return summary


def _centerline_metrics(
    per_case: list[dict[str, Any]], folder: Path, failed: dict[str, str] | None = None
) -> dict[str, float]:
    """Add centerline metrics to each case (in place); return their means. A case whose
    centerline cannot be read is an error, or, given the dict ``failed``, recorded there."""
    from voxseg.io.vtp import read_vtp
    from voxseg.vessels.metrics import centerline_metrics

    values: dict[str, list[float]] = {}
    for case in per_case:
        path = folder / f"{case['case']}.vtp"
        try:
            if not path.is_file():
                raise VoxsegError(f"{path}: no reference centerline for case {case['case']!r}")
            pred = read_image(case["prediction"])
            pred = pred.with_array(pred.array > 0)
            case["centerline"] = centerline_metrics(pred, read_vtp(path))
        except VoxsegError as exc:
            if failed is None:
                raise
            failed[case["case"]] = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            continue
        for k, v in case["centerline"].items():
            values.setdefault(k, []).append(float(v))
    return {k: _stats(v)[0] for k, v in values.items()}


def write_summary(summary: dict[str, Any], output_dir: str | os.PathLike[str]) -> Path:
    """Write ``summary.json`` and ``metrics.csv`` (one row per case × class) atomically."""
    output_dir = Path(output_dir)
    write_json(output_dir / "summary.json", summary)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "label", *ALL_METRICS])
    for case in summary["metric_per_case"]:
        for name, metrics in case["metrics"].items():
            writer.writerow([case["case"], name, *(metrics.get(m, "") for m in ALL_METRICS)])
    atomic_write_text(output_dir / "metrics.csv", buf.getvalue())
    return output_dir / "summary.json"


def summary_table(summary: dict[str, Any]) -> Table:
    """A rich table of the per-class means and the foreground mean."""
    from rich.table import Table

    tau = summary.get("nsd_tolerance_mm", 1.0)
    table = Table(
        title=f"{summary['num_cases']} case(s): mean over cases; HD95, ASSD in mm; "
        f"NSD at {tau:g} mm"
    )
    table.add_column("label", no_wrap=True)
    headers = {"iou": "IoU", "precision": "Prec", "recall": "Rec", "hd95": "HD95"}
    shown = [m for m in TABLE_METRICS if m in summary["foreground_mean"]]
    for m in shown:
        table.add_column(headers.get(m, m.upper() if m != "dice" else "Dice"), justify="right")
    for name, metrics in summary["mean"].items():
        table.add_row(name, *(_fmt(metrics.get(m)) for m in shown))
    table.add_row(
        "[bold]foreground mean[/]", *(_fmt(summary["foreground_mean"].get(m)) for m in shown)
    )
    return table


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if np.isnan(value):
        return "nan"
    if np.isinf(value):
        return "inf"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
