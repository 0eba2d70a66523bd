"""Inference: sliding window with TTA and fold ensembles, export in the original geometry."""

from voxseg.inference.files import CaseInput, PredictReport, discover_inputs, predict_folder
from voxseg.inference.model import ModelFolder
from voxseg.inference.predictor import Prediction, Predictor
from voxseg.inference.sliding_window import WindowSettings, predict_logits

__all__ = [
    "CaseInput",
    "ModelFolder",
    "PredictReport",
    "Prediction",
    "Predictor",
    "WindowSettings",
    "discover_inputs",
    "predict_folder",
    "predict_logits",
]
