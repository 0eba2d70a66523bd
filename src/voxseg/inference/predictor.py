"""The predictor: raw image → the plan's preprocessing → sliding window → label map (and
optionally probabilities) in the input's own geometry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from pydantic import ValidationError

from voxseg.devices import amp_dtype, pick_device
from voxseg.errors import VoxsegError
from voxseg.inference.export import (
    labels_from_logits,
    place_in_original,
    probabilities_from_logits,
)
from voxseg.inference.model import ModelFolder
from voxseg.inference.sliding_window import (
    WindowSettings,
    ensemble_members,
    mirror_combinations,
    predict_logits_and_votes,
)
from voxseg.io import Image, from_sitk
from voxseg.modelconfig import PredictionConfig
from voxseg.modelfolder import ModelLayout


@dataclass
class Prediction:
    """A label map in the input's geometry; per-class probabilities when asked for; with
    ``agreement``, how far the ensemble's members (folds, or one fold's TTA flips) agreed."""

    segmentation: Image
    probabilities: Image | None = None
    agreement: MemberAgreement | None = None


@dataclass
class MemberAgreement:
    """Pooled pairwise Dice between members per foreground label (NaN: no member drew it)
    and the share of labelled voxels whose vote was split, on the network's grid
    (:func:`voxseg.evaluation.qc.member_agreement`)."""

    members: int
    dice: dict[str, float]
    split_fraction: float


def _as_image(image: Image | np.ndarray | sitk.Image) -> Image:
    if isinstance(image, Image):
        return image
    if isinstance(image, sitk.Image):
        return from_sitk(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    return Image(arr)


def default_batch_windows(device: torch.device) -> int:
    """Windows per forward pass: 4 on a GPU; on a CPU as many as torch has threads (≤ 4).

    Measured on 2 cores (PlainConvUNet 8–64 features, 48×96×96 windows): 0.25 s per window
    at 2 windows per pass, 0.35 s at 4, 0.49 s at 1 — a batch that splits evenly over the
    threads and stays in cache wins.
    """
    if device.type != "cpu":
        return 4
    return max(1, min(4, torch.get_num_threads()))


def _mirror_axes(model: ModelFolder) -> tuple[int, ...]:
    """The axes TTA may flip — only those the model was trained with mirrored (see
    :meth:`voxseg.augment.config.MirrorConfig.resolved_axes`: none when the training
    mirroring probability is 0, else its ``axes``, else the plan's ``mirror_axes``, else
    every axis). A model trained without flips along an axis (e.g. to tell left from right)
    must not be averaged over flips along it."""
    pc = model.plan_config
    mirror = model.config.augmentation.mirror
    return mirror.resolved_axes(pc.mirror_axes, len(pc.patch_size))


def _prediction_settings(model: ModelFolder, **overrides: Any) -> PredictionConfig:
    """The model's ``config.prediction`` with the arguments that are not None put over it."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return PredictionConfig.model_validate({**model.config.prediction.model_dump(), **given})
    except ValidationError as exc:
        raise VoxsegError(f"invalid prediction setting(s) {given}:\n{exc}") from exc


class Predictor:
    """Predicts with one model folder (one or several folds, ensembled by averaging logits).

    The sliding-window settings are the model's ``config.prediction`` (those its validation
    used); ``tta`` and ``step`` override them when given.

    >>> predictor = Predictor("voxseg_home/models/Organs/default/3d_fullres", folds=["0"])
    >>> prediction = predictor.predict(read_image("case_0000.nii.gz"))
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | ModelFolder,
        *,
        folds: list[str] | None = None,
        device: str = "auto",
        tta: bool | None = None,
        step: float | None = None,
        batch_windows: int | None = None,
        checkpoint: str = "final",
        amp: str = "auto",
        postprocess: bool = True,
        networks: list[torch.nn.Module] | None = None,
    ) -> None:
        self.model = (
            model
            if isinstance(model, ModelFolder)
            else ModelFolder.load(model, folds=folds, checkpoint=checkpoint)
        )
        self.device = pick_device(device)
        pc = self.model.plan_config
        prediction = _prediction_settings(self.model, tta=tta, step=step)
        self.settings = WindowSettings(
            patch_size=tuple(int(p) for p in pc.patch_size),
            step=prediction.step,
            sigma_scale=prediction.sigma_scale,
            tta=prediction.tta,
            batch_windows=batch_windows or default_batch_windows(self.device),
            amp=amp_dtype(amp, self.device),
            mirror_axes=_mirror_axes(self.model),
        )
        self.networks = networks or self.model.load_networks(self.device)
        self.postprocessing = self._postprocessing() if postprocess else []

    @property
    def members(self) -> int:
        """Ensemble members whose agreement ``predict(..., agreement=True)`` measures: the
        folds, or the TTA flips of a single fold (:func:`ensemble_members`)."""
        s = self.settings
        axes = s.mirror_axes if s.mirror_axes is not None else tuple(range(len(s.patch_size)))
        flips = len(mirror_combinations(axes)) if s.tta else 1
        return ensemble_members(len(self.networks), flips)

    def _postprocessing(self) -> list[dict[str, Any]]:
        path = ModelLayout(self.model.folder).postprocessing
        if path.is_file():
            from voxseg.postprocess import load_postprocessing

            return load_postprocessing(path)
        return [step.arguments() for step in self.model.config.postprocessing]

    # ------------------------------------------------------------------ one image
    def predict(
        self,
        image: Image | np.ndarray | sitk.Image,
        *,
        roi: Image | np.ndarray | None = None,
        probabilities: bool = False,
        progress: Any = None,
        agreement: bool = False,
    ) -> Prediction:
        """Predict one image (``[z, y, x]`` or ``[c, z, y, x]`` with geometry); with
        ``agreement``, also measure how far the members agreed (each member's logits are kept
        in bfloat16 while predicting)."""
        from voxseg.preprocessing import preprocess_case

        image = _as_image(image)
        expected = self.model.info.num_channels
        if image.num_channels != expected:
            raise VoxsegError(
                f"the model expects {expected} channel(s) "
                f"({', '.join(self.model.info.channel_list)}), the image has {image.num_channels}"
            )
        image, roi, restore = self.model.to_model_space(image, roi)
        data, roi_pre, meta = preprocess_case(
            image,
            self.model.plans,
            self.model.config.configuration,
            label=_as_image(roi) if roi is not None else None,
        )
        roi_mask = None if roi_pre is None else np.asarray(roi_pre).reshape(data.shape[1:]) > 0
        logits, votes = self._logits(data, roi_mask, progress, agreement)
        prediction = restore(self._export(logits, meta, probabilities))
        if votes is not None:
            prediction.agreement = self._agreement(votes)
        return prediction

    def _agreement(self, votes: torch.Tensor) -> MemberAgreement:
        from voxseg.evaluation.qc import member_agreement

        regions = self.model.region_values is not None
        names = self.model.info.class_names
        fg = (votes if regions else votes[1:]).cpu().numpy()
        dice, split = member_agreement(fg, self.members)
        return MemberAgreement(
            self.members, {n: float(d) for n, d in zip(names, dice, strict=True)}, split
        )

    def _logits(
        self, data: np.ndarray, roi: np.ndarray | None, progress: Any, agreement: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        votes = None
        if agreement:
            votes = "positive" if self.model.region_values is not None else "argmax"
        kwargs = dict(device=self.device, roi=roi, progress=progress, votes=votes)
        if self.device.type != "cuda":
            return predict_logits_and_votes(
                data, self.networks, self.model.num_outputs, self.settings, **kwargs
            )
        try:
            return predict_logits_and_votes(
                data, self.networks, self.model.num_outputs, self.settings, **kwargs
            )
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            return predict_logits_and_votes(
                data,
                self.networks,
                self.model.num_outputs,
                self.settings,
                accumulate_device=torch.device("cpu"),
                **kwargs,
            )

    def _export(self, logits: torch.Tensor, meta: Any, probabilities: bool) -> Prediction:
        axis = meta.separate_z_axis if meta.separate_z_axis is not None else 0
        nearest = meta.separate_z_axis is not None
        shape = tuple(meta.shape_after_crop)
        regions = self.model.region_values
        n_labels = max(regions) if regions else self.model.num_outputs - 1
        dtype = np.uint8 if n_labels < 256 else np.uint16
        seg = labels_from_logits(
            logits, shape, axis=axis, nearest_along_axis=nearest, region_values=regions, dtype=dtype
        )
        seg_img = place_in_original(seg, meta)
        if self.postprocessing:
            from voxseg.postprocess import apply_postprocessing

            seg_img = seg_img.with_array(
                apply_postprocessing(seg_img.array, seg_img.spacing, self.postprocessing)
            )
        probs_img = None
        if probabilities:
            probs = probabilities_from_logits(
                logits, shape, axis=axis, nearest_along_axis=nearest, regions=regions is not None
            )
            probs_img = place_in_original(probs, meta, fill_background=regions is None)
        return Prediction(seg_img, probs_img)
