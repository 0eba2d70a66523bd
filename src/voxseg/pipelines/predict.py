"""Run a pipeline on new images: each stage on its derived input, pasted back, combined.

A stage whose input needs an earlier stage's mask is skipped when that mask is empty: the
case gets a message and an empty result for that stage (and what depends on it), never an
exception.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxseg.errors import VoxsegError
from voxseg.io import Image, write_image
from voxseg.modelfolder import ModelLayout
from voxseg.pipelines.derive import derive
from voxseg.pipelines.spec import PipelineSpec, StageSpec, read_spec, stage_dir

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    """The final label map and every stage's output, all on the input image's grid."""

    segmentation: Image
    stages: dict[str, Image]
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0


def combine(spec: PipelineSpec, outputs: dict[str, np.ndarray], shape) -> np.ndarray:
    """The final label map: each stage's ``output`` labels written in stage order."""
    final = np.zeros(shape, dtype=np.uint8 if max(spec.labels.values()) < 256 else np.uint16)
    for stage in spec.stages:
        out = outputs.get(stage.name)
        if out is None:
            continue
        for label, value in stage.output.items():
            final[out == stage.stage_labels[label]] = value
    return final


def _inside(
    stage: StageSpec, spec: PipelineSpec, out: np.ndarray, outputs: dict[str, np.ndarray]
) -> np.ndarray:
    """``out`` without the objects that ``stage.inside`` requires to lie in a source label
    and that lie elsewhere. Where the source stage predicted the label itself, that is host
    too: a lesion the whole-image stage saw is a hole in its organ, not outside it."""
    if not stage.inside:
        return out
    from voxseg.postprocess.steps import keep_objects_inside

    source = outputs[stage.source]
    source_labels = spec.stage(stage.source).stage_labels
    for label, host in stage.inside.items():
        region = source == source_labels[host]
        if label in source_labels:
            region |= source == source_labels[label]
        out = keep_objects_inside(out, stage.stage_labels[label], region)
    return out


class PipelineRunner:
    """Predicts with a pipeline folder; ``folds`` picks folds per stage (default: all).

    Each stage predicts with its own model's prediction settings; ``tta`` overrides them
    for every stage when given."""

    def __init__(
        self,
        pipeline_dir: str | os.PathLike[str],
        *,
        device: str = "auto",
        tta: bool | None = None,
        folds: dict[str, list[str]] | None = None,
        spec: PipelineSpec | None = None,
    ) -> None:
        self.folder = Path(pipeline_dir)
        self.spec = spec or read_spec(self.folder)
        self.device = device
        self.tta = tta
        self.folds = dict(folds or {})
        self._predictors: dict[str, object] = {}

    def predictor(self, stage: StageSpec):
        from voxseg.inference import Predictor

        if stage.name not in self._predictors:
            folder = stage_dir(self.folder, stage.name)
            if not ModelLayout(folder).config.is_file():
                raise VoxsegError(
                    f"{folder}: stage {stage.name!r} is not trained; run "
                    f"'voxseg pipeline train {self.folder} DATASET'"
                )
            self._predictors[stage.name] = Predictor(
                folder, folds=self.folds.get(stage.name), device=self.device, tta=self.tta
            )
        return self._predictors[stage.name]

    def load(self) -> PipelineRunner:
        """Load every stage's networks now, so that a case's :attr:`PipelineResult.seconds`
        is prediction only, not model loading."""
        for stage in self.spec.stages:
            self.predictor(stage)
        return self

    def predict(
        self, image: Image, *, case_id: str = "case", until: str | None = None
    ) -> PipelineResult:
        """Run the stages in order (up to and including ``until``) on one image."""
        tic = time.perf_counter()
        geometry = image.geometry
        counts = {s.name: len(s.labels) for s in self.spec.stages}
        outputs: dict[str, np.ndarray] = {}
        messages: list[str] = []
        for stage in self.spec.stages:
            derived = derive(stage, image, outputs, source_counts=counts)
            if derived is None:
                messages.append(
                    f"{case_id}: stage {stage.source!r} found nothing, so stage {stage.name!r} "
                    "has no input; its result is empty"
                )
                outputs[stage.name] = np.zeros(geometry.shape, np.uint8)
            else:
                pred = self.predictor(stage).predict(derived.image)
                restored = derived.restore(pred.segmentation.array)
                outputs[stage.name] = _inside(
                    stage, self.spec, np.asarray(restored).astype(np.uint8, copy=False), outputs
                )
            if stage.name == until:
                break
        final = combine(self.spec, outputs, geometry.shape)
        return PipelineResult(
            Image.from_geometry(final, geometry),
            {n: Image.from_geometry(a, geometry) for n, a in outputs.items()},
            messages,
            time.perf_counter() - tic,
        )


def open_pipeline(
    pipeline_dir: str | os.PathLike[str],
    *,
    folds: list[str] | None = None,
    checkpoint: str = "final",
    device: str = "auto",
    tta: bool | None = None,
) -> PipelineRunner:
    """A pipeline folder as the ``pipeline`` loader of :mod:`voxseg.modelfolder` opens it:
    ``folds`` (default: all) for every stage, which predict with their final weights."""
    if checkpoint != "final":
        raise VoxsegError(f"{pipeline_dir}: a pipeline predicts with its stages' final weights")
    spec = read_spec(pipeline_dir)
    per_stage = {s.name: [str(f) for f in folds] for s in spec.stages} if folds else None
    return PipelineRunner(pipeline_dir, device=device, tta=tta, folds=per_stage, spec=spec)


def predict_pipeline_folder(
    pipeline_dir: str | os.PathLike[str],
    inputs: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
    tta: bool | None = None,
    save_stages: bool = False,
    overwrite: bool = False,
    seeds: str | os.PathLike[str] | None = None,
    allow_short: bool = False,
    series: Sequence[str] = (),
) -> dict:
    """Predict every case of ``inputs`` (a file or a folder, as ``voxseg predict``; ``series``
    chooses among the series of a DICOM folder, as there: :func:`discover_inputs`) into
    ``output_dir``; returns ``{"cases": {id: seconds}, "messages": [...], "skipped": [...]}``.
    A vessels pipeline traces each case from its seed file instead (``seeds``,
    ``allow_short``: :func:`voxseg.pipelines.vessels.trace_pipeline_folder`)."""
    from voxseg.inference.files import discover_inputs
    from voxseg.pipelines.spec import CenterlinePatchesInput

    spec = read_spec(pipeline_dir)
    if any(isinstance(s.input, CenterlinePatchesInput) for s in spec.stages):
        from voxseg.pipelines.vessels import trace_pipeline_folder

        return trace_pipeline_folder(
            pipeline_dir,
            inputs,
            output_dir,
            seeds=seeds,
            device=device,
            tta=tta,
            allow_short=allow_short,
            overwrite=overwrite,
            series=series,
        )
    runner = PipelineRunner(pipeline_dir, device=device, tta=tta, spec=spec).load()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"cases": {}, "messages": [], "skipped": []}
    for case in discover_inputs(inputs, series):
        target = out / f"{case.case_id}{case.ending}"
        if target.exists() and not overwrite:
            report["skipped"].append(case.case_id)
            continue
        result = runner.predict(case.read(), case_id=case.case_id)
        if save_stages:
            for name, img in result.stages.items():
                write_image(img, out / "stages" / name / f"{case.case_id}{case.ending}")
        write_image(result.segmentation, target)  # last: a case with it is finished
        report["cases"][case.case_id] = result.seconds
        report["messages"].extend(result.messages)
        for m in result.messages:
            log.info(m)
    return report
