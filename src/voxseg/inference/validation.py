"""A fold's final validation: predict its full validation cases from the raw images with the
predictor (as new scans would be), then evaluate against the references."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from voxseg.inference.model import ModelFolder
from voxseg.inference.predictor import Predictor
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
    dataset = setup.dataset
    total = len(setup.val_ids)
    with ProgressReporter("validating", total, log) as progress:
        for i, case_id in enumerate(setup.val_ids, 1):
            case = dataset.case(case_id)
            image, _ = dataset.load_case(case)
            pred = predictor.predict(image)
            write_image(pred.segmentation, out / f"{case_id}{dataset.file_ending}")
            progress.item(f"validation case {i}/{total}: {case_id}")
    return evaluate_folder(out, dataset.root / "labelsTr", dataset=dataset.root, output_dir=out)
