"""End-to-end evaluation: run the whole pipeline on held-out scans, compare with references.

Voxel metrics come from :func:`voxseg.evaluation.evaluate_folder`; labels listed in the
spec's ``lesion_labels`` are also scored lesion-wise (connected components; a match needs
any overlap, or IoU ≥ ``lesion_overlap``) by :func:`voxseg.evaluation.lesion_detection`,
per case and pooled over cases (detected reference lesions / all reference lesions, true
predicted lesions / all predicted lesions).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from voxseg.config import write_json
from voxseg.data import Dataset
from voxseg.errors import VoxsegError
from voxseg.io import read_image, write_image
from voxseg.pipelines.predict import PipelineRunner
from voxseg.pipelines.spec import PipelineSpec, read_spec

log = logging.getLogger(__name__)


def lesion_summary(
    pairs: list[tuple[str, Any, Any]], spec: PipelineSpec
) -> dict[str, dict[str, Any]]:
    """Lesion-wise metrics per lesion label: per case and pooled over ``(case, pred, ref)``."""
    from voxseg.evaluation import lesion_detection

    out: dict[str, dict[str, Any]] = {}
    for name in spec.lesion_labels:
        value = spec.labels[name]
        per_case = {}
        totals = np.zeros(4, dtype=np.int64)
        for case_id, pred, ref in pairs:
            d = lesion_detection(
                pred.array == value, ref.array == value, ref.spacing, overlap=spec.lesion_overlap
            )
            per_case[case_id] = d.to_dict()
            totals += [d.n_ref, d.detected_ref, d.n_pred, d.true_pred]
        n_ref, detected, n_pred, true_pred = (int(v) for v in totals)
        sens = detected / n_ref if n_ref else float("nan")
        prec = true_pred / n_pred if n_pred else float("nan")
        out[name] = {
            "sensitivity": sens,
            "precision": prec,
            "n_ref": n_ref,
            "n_pred": n_pred,
            "detected_ref": detected,
            "true_pred": true_pred,
            "per_case": per_case,
        }
    return out


def evaluate_pipeline(
    pipeline_dir: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    split: str = "Ts",
    cases: list[str] | None = None,
    device: str = "auto",
    tta: bool | None = None,
    runner: PipelineRunner | None = None,
) -> dict[str, Any]:
    """Predict the ``split`` cases of ``dataset`` (or ``cases``) end to end and evaluate them;
    writes ``predictions/``, ``summary.json`` and ``pipeline_summary.json`` to ``output_dir``."""
    from voxseg.evaluation import evaluate_folder

    spec = read_spec(pipeline_dir) if runner is None else runner.spec
    runner = (runner or PipelineRunner(pipeline_dir, device=device, tta=tta, spec=spec)).load()
    ds = Dataset(dataset)
    chosen = [c for c in ds.cases(split) if c.label is not None]
    if cases is not None:
        chosen = [c for c in chosen if c.case_id in set(cases)]
    if not chosen:
        raise VoxsegError(f"{ds.root}: no labelled cases in images{split}/ to evaluate")
    out = Path(output_dir)
    pred_dir = out / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    seconds, messages, pairs = {}, [], []
    for case in chosen:
        image, _ = ds.load_case(case)
        result = runner.predict(image, case_id=case.case_id)
        write_image(result.segmentation, pred_dir / f"{case.case_id}{ds.file_ending}")
        seconds[case.case_id] = result.seconds
        messages.extend(result.messages)
        for m in result.messages:
            log.info(m)
        pairs.append((case.case_id, result.segmentation, read_image(case.label)))
    labels = {k: v for k, v in spec.labels.items() if k != "background"}
    ref_dir = ds.root / f"labels{split}"
    summary = evaluate_folder(pred_dir, ref_dir, labels=labels, output_dir=out)
    report = {
        "pipeline": str(pipeline_dir),
        "dataset": str(ds.root),
        "split": split,
        "num_cases": len(chosen),
        "dice": {k: summary["mean"][k].get("dice", float("nan")) for k in labels},
        "lesions": lesion_summary(pairs, spec),
        "seconds_per_case": float(np.mean(list(seconds.values()))),
        "seconds": seconds,
        "messages": messages,
    }
    write_json(out / "pipeline_summary.json", _finite(report))
    return report


def _finite(data: Any) -> Any:
    """NaN → None for strict JSON readers."""
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite(v) for v in data]
    if isinstance(data, float) and not np.isfinite(data):
        return None
    return data
