"""A fold's final validation: predict its full validation cases from the raw images with the
predictor (as new scans would be), then evaluate against the references.

When the fold predicts with test-time flips, each case also gets the quality control of
``voxseg predict --qc`` (``validation/qc/<case>.json`` and ``validation/qc.csv``,
:mod:`voxseg.inference.qc`): the flips' agreement is measured on the passes the prediction
makes anyway, so the report can say how well that score ranks the true Dice."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from voxseg.inference.model import ModelFolder
from voxseg.inference.predictor import Predictor
from voxseg.inference.qc import QualityControl
from voxseg.io import write_image
from voxseg.modelfolder import VALIDATION
from voxseg.progress import ProgressReporter

log = logging.getLogger(__name__)


def validate_fold(setup: Any, folder: Path, network: torch.nn.Module) -> dict:
    """Write ``validation/<case>`` predictions and ``validation/summary.json``; return the
    summary."""
    from voxseg.evaluation import evaluate_folder

    model = ModelFolder.load(setup.model_dir, folds=[str(setup.fold)])
    network.eval()
    predictor = Predictor(  # the model's own prediction settings, as `voxseg predict`
        model,
        networks=[network],
        device=str(next(network.parameters()).device),
        postprocess=False,
    )
    out = folder / VALIDATION
    out.mkdir(parents=True, exist_ok=True)
    quality = QualityControl(predictor, out) if predictor.members > 1 else None
    dataset = setup.dataset
    total = len(setup.val_ids)
    with ProgressReporter("validating", total, log) as progress:
        for i, case_id in enumerate(setup.val_ids, 1):
            case = dataset.case(case_id)
            image, _ = dataset.load_case(case)
            pred = predictor.predict(image, agreement=quality is not None)
            name = f"{case_id}{dataset.file_ending}"
            write_image(pred.segmentation, out / name)
            if quality is not None:
                files = {"prediction": name, "image": [str(p) for p in case.images]}
                quality.case(case_id, pred.segmentation, pred.agreement, files)
            progress.item(f"validation case {i}/{total}: {case_id}")
    if quality is not None:
        quality.finish()
    return evaluate_folder(out, dataset.root / "labelsTr", dataset=dataset.root, output_dir=out)
