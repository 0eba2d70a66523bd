"""What a report is about: find and read the files the steps wrote under a target folder.

A target is a raw dataset (``dataset.json``), a preprocessed dataset (``fingerprint.json``), a
model folder (``config.json`` + ``plans.json``, its ``fold_k/``), a folder holding model
folders (a pipeline's ``stages/``, an ``auto`` model), one fold, or an evaluation folder
(``summary.json`` written by ``voxseg evaluate``), or a prediction folder with the quality
control of ``voxseg predict --qc`` (``qc/``). Nothing is trained or predicted here.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxseg.config import read_json
from voxseg.errors import VoxsegError
from voxseg.modelfolder import (
    SUMMARY,
    TRAINING_LOG,
    ModelLayout,
    fold_of,
    fold_sort_key,
    is_voxseg_model_folder,
)

#: Model folders are searched this many levels below a target.
SEARCH_DEPTH = 3
#: Written beside ``summary.json`` by ``voxseg pipeline evaluate`` (lesion-wise detection).
PIPELINE_SUMMARY = "pipeline_summary.json"


@dataclass
class EvalCase:
    """One evaluated case: metrics per label, the files, and the fold it validated."""

    case_id: str
    metrics: dict[str, dict[str, float]]
    prediction: Path | None
    reference: Path | None
    fold: str = ""


@dataclass
class Evaluation:
    """A ``summary.json`` (or the merged validation of a model's folds)."""

    title: str
    folder: Path
    labels: dict[str, Any]
    summary: dict[str, Any]
    cases: list[EvalCase]
    nsd_tolerance_mm: float = 1.0
    #: lesion-wise detection per lesion label (pooled counts and ``per_case``), when the
    #: pipeline evaluation wrote them
    lesions: dict[str, Any] = field(default_factory=dict)
    #: a model's validation QC records (the folds' ``validation/qc/``): the score a new scan
    #: would get, beside the true Dice of the same cases
    quality: QualitySource | None = None


@dataclass
class FoldRun:
    """One trained fold: its training log and resolved config."""

    fold: str
    folder: Path
    log: list[dict[str, float]]
    config: dict[str, Any]
    validation: Path | None


@dataclass
class ModelSource:
    """A model folder: config, plan, labels, folds."""

    name: str
    folder: Path
    config: dict[str, Any]
    plans: dict[str, Any]
    dataset_info: dict[str, Any]
    folds: list[FoldRun]


@dataclass
class DatasetSource:
    """A raw dataset and, when found, its fingerprint and plans."""

    name: str
    raw: Path | None
    info: dict[str, Any]
    fingerprint: dict[str, Any] | None
    plans: dict[str, Any] | None


@dataclass
class QualitySource:
    """``voxseg predict --qc`` output: ``qc/run.json`` and one record per case."""

    folder: Path
    run: dict[str, Any]
    cases: list[Any]  # voxseg.evaluation.qc.CaseQC

    def prediction(self, qc: Any) -> Path | None:
        path = self.folder / str(qc.files.get("prediction", ""))
        return path if qc.files.get("prediction") and path.is_file() else None

    def images(self, qc: Any) -> list[Path]:
        return [Path(p) for p in qc.files.get("image", []) if Path(p).exists()]


def read_quality(folder: Path) -> QualitySource | None:
    """The QC records of a prediction folder, or None when it has none."""
    from voxseg.evaluation.qc import QC_DIR, QC_RUN, read_qc

    run = folder / QC_DIR / QC_RUN
    if not run.is_file():
        return None
    return QualitySource(folder, read_json(run), read_qc(folder))


@dataclass
class Sources:
    """Everything one report shows."""

    target: Path
    kind: str
    dataset: DatasetSource | None = None
    models: list[ModelSource] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    #: ``summary.json`` of a ``voxseg auto`` model (what was trained, why the winner won)
    auto: dict[str, Any] | None = None
    #: ``voxseg predict --qc`` records of the predictions (a prediction folder, or an
    #: evaluation folder that is one)
    quality: QualitySource | None = None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_training_log(path: Path) -> list[dict[str, float]]:
    """``training_log.csv`` as rows of floats (empty cells are NaN)."""
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: _float(v) for k, v in row.items() if k} for row in csv.DictReader(f)]


def is_evaluation_folder(path: Path) -> bool:
    """A folder with the ``summary.json`` of ``voxseg evaluate`` (per-case metrics)."""
    if not (path / SUMMARY).is_file():
        return False
    summary = read_json(path / SUMMARY)
    return isinstance(summary, dict) and "metric_per_case" in summary


def read_evaluation(folder: Path, title: str, fold: str = "") -> Evaluation:
    summary = read_json(folder / SUMMARY)
    if "metric_per_case" not in summary:
        raise VoxsegError(f"{folder / SUMMARY}: no per-case metrics (metric_per_case)")
    cases = [
        EvalCase(
            c["case"],
            c["metrics"],
            _existing(c.get("prediction"), folder),
            _existing(c.get("reference"), folder),
            fold,
        )
        for c in summary["metric_per_case"]
    ]
    pipeline = folder / PIPELINE_SUMMARY
    lesions = read_json(pipeline).get("lesions", {}) if pipeline.is_file() else {}
    return Evaluation(
        title,
        folder,
        summary.get("labels", {}),
        summary,
        cases,
        float(summary.get("nsd_tolerance_mm", 1.0)),
        lesions if isinstance(lesions, dict) else {},
    )


def _existing(path: str | None, base: Path) -> Path | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_absolute():
        p = base / p
    if p.is_file():
        return p
    local = base / p.name  # a moved folder: the file beside summary.json
    return local if local.is_file() else None


def merged_validation(model: ModelSource) -> Evaluation | None:
    """The validation cases of every fold as one evaluation (each case once, with its fold)."""
    from voxseg.evaluation.evaluate import summarise

    evals = [read_evaluation(f.validation, "", f.fold) for f in model.folds if f.validation]
    if not evals:
        return None
    cases: dict[str, EvalCase] = {}
    for ev in evals:
        for c in ev.cases:
            if c.case_id in cases:
                raise VoxsegError(
                    f"{ev.folder / SUMMARY}: case {c.case_id!r} is also a validation "
                    f"case of fold {cases[c.case_id].fold}"
                )
            cases[c.case_id] = c
    labels = evals[0].labels
    per_case = [{"case": c.case_id, "metrics": c.metrics} for c in cases.values()]
    summary = {"num_cases": len(cases), **summarise(per_case, list(labels))}
    folds = ", ".join(f.fold for f in model.folds if f.validation)
    return Evaluation(
        f"{model.name}: cross-validation (folds {folds})",
        model.folder,
        labels,
        summary,
        list(cases.values()),
        evals[0].nsd_tolerance_mm,
        quality=_validation_quality(model),
    )


def _validation_quality(model: ModelSource) -> QualitySource | None:
    """The QC records the folds' validation wrote (each case with its fold's flips as the
    members), as one source; None when no fold wrote any."""
    found = [(f, read_quality(f.validation)) for f in model.folds if f.validation]
    found = [(f, q) for f, q in found if q is not None]
    if not found:
        return None
    records = []
    for fold, quality in found:
        for qc in quality.cases:
            if qc.files.get("prediction"):  # the label map beside its fold's records
                qc.files["prediction"] = str(fold.validation / qc.files["prediction"])
            records.append(qc)
    run = {**found[0][1].run, "folds": [f.fold for f, _ in found], "validation": True}
    return QualitySource(model.folder, run, records)


def read_model(folder: Path, name: str | None = None) -> ModelSource:
    layout = ModelLayout(folder)
    folds = []
    found = {fold_of(p) for p in folder.iterdir() if p.is_dir() and fold_of(p) is not None}
    for fold in sorted(found, key=fold_sort_key):
        fold_layout = ModelLayout(layout.fold_dir(fold))
        log = fold_layout.root / TRAINING_LOG
        val = layout.validation_dir(fold)
        folds.append(
            FoldRun(
                fold,
                fold_layout.root,
                read_training_log(log) if log.is_file() else [],
                read_json(fold_layout.config) if fold_layout.config.is_file() else {},
                val if (val / SUMMARY).is_file() else None,
            )
        )
    return ModelSource(
        name or folder.name,
        folder,
        read_json(layout.config),
        read_json(layout.plans),
        read_json(layout.dataset) if layout.dataset.is_file() else {},
        folds,
    )


def _model_folders(root: Path, depth: int) -> list[Path]:
    if is_voxseg_model_folder(root):
        return [root]
    if depth == 0:
        return []
    out: list[Path] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out.extend(_model_folders(child, depth - 1))
    return out


def _workspace_dataset(name: str, near: Path) -> DatasetSource | None:
    """The raw dataset, fingerprint and plans of ``name``: in the workspace whose
    ``models/`` (or ``preprocessed/``) folder holds ``near``, else in ``$VOXSEG_HOME``."""
    from voxseg.workspace import Workspace

    for ws in Workspace.around(near):
        try:
            raw: Path | None = ws.dataset_dir(name)
        except VoxsegError:
            raw = None
        pre = ws.preprocessed_dataset_dir(raw.name if raw is not None else name)
        if raw is not None or (pre / "fingerprint.json").is_file():
            return read_dataset(raw, pre if pre.is_dir() else None)
    return None


def read_dataset(raw: Path | None, preprocessed: Path | None) -> DatasetSource:
    """A dataset from its raw folder and/or its preprocessed folder (fingerprint, plans)."""
    info: dict[str, Any] = {}
    name = ""
    if raw is not None:
        info = read_json(raw / "dataset.json")
        name = raw.name
    fingerprint = plans = None
    if preprocessed is not None:
        name = name or preprocessed.name
        if (preprocessed / "fingerprint.json").is_file():
            fingerprint = read_json(preprocessed / "fingerprint.json")
        plan_file = preprocessed / "plans" / "default.json"
        found = [plan_file] if plan_file.is_file() else sorted(preprocessed.glob("plans/*.json"))
        if found:
            plans = read_json(found[0])
    if raw is None and plans is not None:
        info = {"channel_names": plans.get("channel_names", {}), "labels": plans.get("labels", {})}
    return DatasetSource(name, raw, info, fingerprint, plans)


def collect(target: str | Path) -> Sources:
    """Find what ``target`` holds; raise a :class:`VoxsegError` naming it when nothing fits."""
    target = Path(target).expanduser().absolute()
    if not target.exists():
        raise VoxsegError(f"{target}: not found")
    if target.is_file():
        raise VoxsegError(f"{target}: a report needs a folder (dataset, model or evaluation)")
    if (target / "dataset.json").is_file() and (target / "imagesTr").is_dir():
        from voxseg.workspace import Workspace

        pre = [
            p
            for p in (
                target.parent.parent / "preprocessed" / target.name,
                Workspace.from_env().preprocessed_dataset_dir(target.name),
            )
            if (p / "fingerprint.json").is_file()
        ]
        return Sources(target, "dataset", dataset=read_dataset(target, pre[0] if pre else None))
    if (target / "fingerprint.json").is_file():
        ds = _workspace_dataset(target.name, target) or read_dataset(None, target)
        if ds.fingerprint is None:
            ds = read_dataset(ds.raw, target)
        return Sources(target, "dataset", dataset=ds)
    if fold_of(target) is not None and is_voxseg_model_folder(target.parent):
        model = read_model(target.parent, f"{target.parent.name} / {target.name}")
        model.folds = [f for f in model.folds if f.folder == target]
        return _model_sources(target, [model])
    auto = _auto_summary(target)
    if auto is not None:
        # every run's own folder (with its validation); the selected copy only when they moved
        models: list[ModelSource] = []
        for run in auto.get("runs", []):
            folder = Path(str(run.get("model", "")))
            known = {m.folder.resolve() for m in models}
            if is_voxseg_model_folder(folder) and folder.resolve() not in known:
                models.append(read_model(folder, f"run {folder.name}"))
        src = _model_sources(target, models or [read_model(target, target.name)])
        src.kind, src.auto = "auto", auto
        return src
    if is_evaluation_folder(target):
        ev = read_evaluation(target, f"evaluation: {target.name}")
        src = Sources(target, "evaluation", evaluations=[ev])
        labels_dir = ev.cases[0].reference.parent if ev.cases and ev.cases[0].reference else None
        raw = labels_dir.parent if labels_dir is not None else None
        if raw is not None and (raw / "dataset.json").is_file():
            src.dataset = read_dataset(raw, None)
        src.quality = read_quality(target)
        return src
    quality = read_quality(target)
    if quality is not None:
        return Sources(target, "predictions", quality=quality)
    folders = _model_folders(target, SEARCH_DEPTH)
    if folders:
        names = [str(f.relative_to(target)) if f != target else f.name for f in folders]
        return _model_sources(
            target, [read_model(f, n) for f, n in zip(folders, names, strict=True)]
        )
    raise VoxsegError(
        f"{target}: nothing to report: not a dataset (dataset.json, fingerprint.json), a model "
        "folder (config.json + plans.json, or folders holding them), an evaluation folder "
        "(summary.json) or a prediction folder with quality control (qc/run.json, written by "
        "voxseg predict --qc)"
    )


def _auto_summary(folder: Path) -> dict[str, Any] | None:
    """The summary of a ``voxseg auto`` model folder (it names its winner), else None."""
    if not (is_voxseg_model_folder(folder) and (folder / SUMMARY).is_file()):
        return None
    summary = read_json(folder / SUMMARY)
    return summary if isinstance(summary, dict) and "winner" in summary else None


def _model_sources(target: Path, models: list[ModelSource]) -> Sources:
    src = Sources(target, "model", models=models)
    name = models[0].plans.get("dataset") or models[0].config.get("dataset")
    if name:
        src.dataset = _workspace_dataset(str(name), models[0].folder)
    recorded = models[0].config.get("dataset_path")
    if src.dataset is None and recorded and (Path(recorded) / "dataset.json").is_file():
        src.dataset = read_dataset(Path(recorded), None)
    for m in models:
        ev = merged_validation(m)
        if ev is not None:
            src.evaluations.append(ev)
    return src
