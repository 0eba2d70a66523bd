"""``voxseg predict --qc``: quality control of each prediction without a reference.

Each case gets ``qc/<case>.json`` beside its label map (:class:`voxseg.evaluation.qc.CaseQC`:
per label volume, components, largest share, border contact, volume against the training
cases' range, and the ensemble members' agreement), and ``qc.csv`` gathers every case, worst
first. The training volumes come from the model's dataset fingerprint (``fingerprint.json`` of
the workspace the model lives in, else of ``$VOXSEG_HOME``), else from the reference volumes
of its folds' validation cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxseg.config import read_json, write_json
from voxseg.errors import VoxsegError
from voxseg.evaluation.qc import (
    QC_DIR,
    QC_RUN,
    CaseQC,
    label_qc,
    read_qc,
    training_range,
    write_case_qc,
    write_qc_table,
)
from voxseg.io import Image, read_image
from voxseg.modelfolder import SUMMARY, VALIDATION


@dataclass
class TrainingVolumes:
    """Per label, the volume (ml) of every training case that holds it; where they came from."""

    volumes: dict[str, list[float]] = field(default_factory=dict)
    source: str = "none found"

    def ranges(self) -> dict[str, tuple[float, float] | None]:
        return {name: training_range(v) for name, v in self.volumes.items()}


def training_volumes(model: Any) -> TrainingVolumes:
    """The label volumes of the model's training cases (see the module docstring)."""
    labels = model.info.foreground_labels
    name = getattr(model.plans, "dataset", None)
    if name:
        from voxseg.workspace import Workspace

        for ws in Workspace.around(model.folder):
            path = ws.preprocessed_dataset_dir(str(name)) / "fingerprint.json"
            if path.is_file():
                cases = read_json(path).get("cases", [])
                volumes: dict[str, list[float]] = {}
                for label, value in labels.items():
                    values = value if isinstance(value, list) else [value]
                    volumes[label] = [
                        sum(float(c.get("label_volumes_mm3", {}).get(str(v), 0)) for v in values)
                        / 1000
                        for c in cases
                        if c.get("label_volumes_mm3")
                    ]
                return TrainingVolumes(volumes, f"{path} ({len(cases)} cases)")
    return _validation_volumes(Path(model.folder), list(labels))


def _validation_volumes(folder: Path, labels: list[str]) -> TrainingVolumes:
    """Reference volumes of the validation cases of every fold (``volume_ref``, mm³)."""
    volumes: dict[str, list[float]] = {name: [] for name in labels}
    found = sorted(folder.glob(f"*/{VALIDATION}/{SUMMARY}"))
    n = 0
    for path in found:
        for case in read_json(path).get("metric_per_case", []):
            n += 1
            for name in labels:
                ref = case.get("metrics", {}).get(name, {}).get("volume_ref")
                if ref is not None and math.isfinite(ref):
                    volumes[name].append(float(ref) / 1000)
    if not n:
        return TrainingVolumes({}, "none found (no fingerprint.json, no validation summaries)")
    return TrainingVolumes(volumes, f"the folds' validation references ({n} cases)")


class QualityControl:
    """Writes a :class:`CaseQC` per predicted case and ``qc.csv`` for a prediction folder."""

    def __init__(self, predictor: Any, output_dir: Path) -> None:
        self.model = predictor.model
        self.members = predictor.members
        self.output_dir = Path(output_dir)
        self.labels = self.model.info.foreground_labels
        self.training = training_volumes(self.model)
        self.ranges = self.training.ranges()
        write_json(
            self.output_dir / QC_DIR / QC_RUN,
            {
                "model": str(self.model.folder),
                "folds": list(self.model.folds),
                "members": self.members,
                "labels": self.model.info.labels,
                "channel_names": self.model.info.channel_names,
                "training_volumes": self.training.source,
                "training_ranges_ml": {k: list(v) if v else None for k, v in self.ranges.items()},
            },
        )

    def case(
        self,
        case_id: str,
        segmentation: Image,
        agreement: Any = None,
        files: dict[str, Any] | None = None,
    ) -> CaseQC:
        """Measure one prediction and write ``qc/<case>.json``."""
        labels = label_qc(segmentation.array, segmentation.spacing, self.labels)
        for name, q in labels.items():
            q.training_range = self.ranges.get(name)
            if agreement is not None:
                q.agreement = agreement.dice.get(name, math.nan)
        qc = CaseQC(case_id, labels, files=files or {})
        if agreement is not None:
            qc.members = agreement.members
            qc.split_fraction = agreement.split_fraction
        write_case_qc(self.output_dir, qc)
        return qc

    def existing(self, case_id: str, prediction: Path, files: dict[str, Any]) -> None:
        """A case predicted before without QC: measure its label map (no agreement)."""
        if (self.output_dir / QC_DIR / f"{case_id}.json").is_file():
            return
        try:
            seg = read_image(prediction, is_label=True)
        except VoxsegError:
            return
        self.case(case_id, seg, None, files)

    def finish(self) -> Path:
        """``qc.csv`` from every case record in the folder (also those of other parts)."""
        return write_qc_table(self.output_dir, read_qc(self.output_dir))
