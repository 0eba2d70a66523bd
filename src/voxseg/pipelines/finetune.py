"""Retrain one stage on new data from its weights, with before/after metrics (the
deepseg-training use case: a lesion model that fails on a new pathology or site).

The new dataset's held-out cases are its ``imagesTs``/``labelsTs`` when it has labelled ones,
else the last ``holdout`` share of its training cases (sorted by name), which are then left
out of fine-tuning. The stage keeps its plan (network, spacing, normalisation), starts from
its weights (``train_fold(..., pretrained=...)``) and the result is a new pipeline folder.
"""

from __future__ import annotations

import math
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

from voxseg.config import write_json
from voxseg.data import Dataset
from voxseg.errors import VoxsegError
from voxseg.modelfolder import STAGES, ModelLayout
from voxseg.pipelines.evaluate import _finite, evaluate_pipeline
from voxseg.pipelines.spec import read_spec, stage_dir, work_dir, write_spec


def held_out_cases(ds: Dataset, holdout: float) -> tuple[str, list[str] | None, list[str]]:
    """``(split, evaluation cases or None for all, training cases)``."""
    train = [c.case_id for c in ds.cases("Tr") if c.label is not None]
    if any(c.label is not None for c in ds.cases("Ts")):
        return "Ts", None, train
    n = max(1, math.ceil(holdout * len(train)))
    if len(train) <= n:
        raise VoxsegError(
            f"{ds.root}: {len(train)} labelled training case(s) and no labelsTs: too few to "
            "hold cases out for the before/after comparison"
        )
    return "Tr", train[-n:], train[:-n]


def finetune_pipeline(
    pipeline_dir: str | os.PathLike[str],
    new_dataset: str | os.PathLike[str],
    stage: str,
    output_dir: str | os.PathLike[str],
    *,
    settings: list[str] | None = None,
    holdout: float = 0.25,
    device: str | None = None,
    tta: bool | None = None,
) -> dict[str, Any]:
    """Fine-tune ``stage`` on ``new_dataset`` into a copy of the pipeline at ``output_dir``;
    returns (and writes as ``finetune_report.json``) the metrics before and after."""
    from voxseg.pipelines.train import train_stage

    src = Path(pipeline_dir)
    out = Path(output_dir)
    if out.resolve() == src.resolve():
        raise VoxsegError("the fine-tuned pipeline needs its own folder (--output)")
    spec = read_spec(src)
    old = spec.stage(stage)
    ds = Dataset(new_dataset)
    split, eval_cases, train_cases = held_out_cases(ds, holdout)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / STAGES, out / STAGES, dirs_exist_ok=True)
    new_stage = old.model_copy(
        update={"folds": ["all"], "settings": [*old.settings, *(settings or [])]}
    )
    new_spec = spec.model_copy(
        update={
            "name": f"{spec.name}-{ds.name}",
            "stages": [new_stage if s.name == stage else s for s in spec.stages],
        }
    )
    write_spec(new_spec, out)
    evaluate = partial(
        evaluate_pipeline, split=split, cases=eval_cases, device=device or "auto", tta=tta
    )
    before = evaluate(src, ds.root, out / "evaluation_before")
    target = stage_dir(out, stage)
    shutil.rmtree(target)
    train_stage(
        out,
        stage,
        ds.root,
        device=device,
        force=True,
        pretrained=stage_dir(src, stage),
        plans_from=ModelLayout(stage_dir(src, stage)).plans,
        work=work_dir(out),
        cases=train_cases,
    )
    after = evaluate(out, ds.root, out / "evaluation_after")
    keys = ("dice", "lesions", "seconds_per_case")
    report = {
        "stage": stage,
        "from": str(src),
        "dataset": str(ds.root),
        "held_out_split": split,
        "held_out_cases": eval_cases if eval_cases is not None else "all labelled imagesTs",
        "trained_on": train_cases,
        "before": {k: before[k] for k in keys},
        "after": {k: after[k] for k in keys},
    }
    for r in (report["before"], report["after"]):
        for lesion in r["lesions"].values():
            lesion.pop("per_case", None)
    write_json(out / "finetune_report.json", _finite(report))
    return report
