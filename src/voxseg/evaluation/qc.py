"""Quality control of label maps without a reference: what can be judged from the prediction
alone, and from how far the members of an ensemble agreed on it.

Per label: the volume, the number of connected components (``cc3d``, 26-connectivity; a 2D
image, z of size 1, acts as 8-connectivity), the share of the largest one, whether it touches
the image border (a structure cut by the field of view), and whether the volume lies outside
the training cases' range (Tukey's fences, 1.5 IQR, on the logarithm of the volumes of the
training cases that hold the label: volumes are skewed, and a halved organ is as odd as a
doubled one).

Member agreement (folds × TTA flips): from the share ``f_k`` of members voting label ``k`` at
each voxel, the pooled pairwise Dice between members is

    Σ_v f_k (M f_k − 1)  /  ((M − 1) Σ_v f_k)

(the pairs' intersections over the pairs' sizes, summed over all ``M (M − 1) / 2`` pairs: a
pair agrees on a voxel ``n_k (n_k − 1) / 2`` times when ``n_k = M f_k`` members vote ``k``),
1 when every member draws the same map. A voxel is *split* when its winning label holds less
than ``1 − 1 / (2M)`` of the votes (some member voted otherwise).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cc3d
import numpy as np

from voxseg.config import atomic_write_text, read_json, write_json
from voxseg.errors import VoxsegError
from voxseg.evaluation.evaluate import label_mask

#: The table ``voxseg predict --qc`` writes beside the predictions (one row per case).
QC_CSV = "qc.csv"
#: The folder beside the predictions with one ``<case>.json`` per case and ``run.json``.
QC_DIR = "qc"
#: ``qc/run.json``: the model, its labels and channels, where the training volumes came from.
QC_RUN = "run.json"
#: Fewer training volumes than this give no range (a fence needs quartiles).
MIN_TRAINING_CASES = 4
#: Tukey's fence factor (on log volumes).
FENCE_IQR = 1.5


@dataclass
class LabelQC:
    """What one label of a predicted map looks like."""

    volume_ml: float
    components: int
    largest_share: float  # largest component / label volume (NaN when empty)
    touches_border: bool
    #: the training cases' range of this label's volume (ml), when known
    training_range: tuple[float, float] | None = None
    #: pooled pairwise Dice between ensemble members (NaN: no member drew it, or one member)
    agreement: float = math.nan

    @property
    def volume_flag(self) -> str:
        """``"empty"``, ``"low"``, ``"high"`` (outside the training range) or ``""``."""
        if self.volume_ml == 0:
            return "empty"
        if self.training_range is None:
            return ""
        lo, hi = self.training_range
        return "low" if self.volume_ml < lo else "high" if self.volume_ml > hi else ""


@dataclass
class CaseQC:
    """QC of one predicted case: per label, and the members' agreement on the whole map."""

    case_id: str
    labels: dict[str, LabelQC]
    members: int = 1
    #: voxels whose vote was split / voxels any member labelled (NaN with one member)
    split_fraction: float = math.nan
    #: the files: ``prediction`` and ``image`` (channel files or a DICOM folder)
    files: dict[str, Any] = field(default_factory=dict)

    @property
    def agreement(self) -> float:
        """The case's score: mean over labels of the members' pooled pairwise Dice (labels no
        member drew left out); NaN with a single member."""
        values = [q.agreement for q in self.labels.values() if not math.isnan(q.agreement)]
        return float(np.mean(values)) if values else math.nan

    @property
    def flags(self) -> list[str]:
        """One short phrase per finding: ``liver: empty``, ``spleen: volume high``."""
        out = []
        for name, q in self.labels.items():
            flag = q.volume_flag
            if flag == "empty":
                out.append(f"{name}: empty")
            elif flag:
                out.append(f"{name}: volume {flag}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The case as JSON (NaN as ``null``)."""
        return _nan_to_none(
            {
                "case": self.case_id,
                "agreement": self.agreement,
                "members": self.members,
                "split_fraction": self.split_fraction,
                "flags": self.flags,
                "labels": {
                    n: {**asdict(q), "volume_flag": q.volume_flag} for n, q in self.labels.items()
                },
                "files": self.files,
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseQC:
        labels = {}
        for name, q in data["labels"].items():
            rng = q.get("training_range")
            labels[name] = LabelQC(
                float(q["volume_ml"]),
                int(q["components"]),
                _num(q.get("largest_share")),
                bool(q["touches_border"]),
                (float(rng[0]), float(rng[1])) if rng else None,
                _num(q.get("agreement")),
            )
        return cls(
            str(data["case"]),
            labels,
            int(data.get("members", 1)),
            _num(data.get("split_fraction")),
            dict(data.get("files", {})),
        )

    def csv_row(self) -> dict[str, Any]:
        """One row of ``qc.csv``: the case's score and flags, then per label its volume,
        components, largest share, border contact, volume flag and agreement."""
        row: dict[str, Any] = {
            "case": self.case_id,
            "agreement": _cell(self.agreement),
            "split_fraction": _cell(self.split_fraction),
            "members": self.members,
            "flags": "; ".join(self.flags),
        }
        for name, q in self.labels.items():
            row[f"{name}_ml"] = _cell(q.volume_ml)
            row[f"{name}_components"] = q.components
            row[f"{name}_largest_share"] = _cell(q.largest_share)
            row[f"{name}_touches_border"] = int(q.touches_border)
            row[f"{name}_volume_flag"] = q.volume_flag
            row[f"{name}_agreement"] = _cell(q.agreement)
        return row


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def write_case_qc(folder: str | os.PathLike[str], qc: CaseQC) -> Path:
    """``folder/qc/<case>.json`` (atomically)."""
    path = Path(folder) / QC_DIR / f"{qc.case_id}.json"
    write_json(path, qc.to_dict())
    return path


def read_qc(folder: str | os.PathLike[str]) -> list[CaseQC]:
    """Every ``folder/qc/<case>.json`` (``run.json`` aside), sorted by case."""
    out = []
    for path in sorted((Path(folder) / QC_DIR).glob("*.json")):
        if path.name == QC_RUN:
            continue
        try:
            out.append(CaseQC.from_dict(read_json(path)))
        except (KeyError, TypeError, ValueError) as exc:
            raise VoxsegError(f"{path}: not a QC record of voxseg predict --qc ({exc})") from exc
    return out


def write_qc_table(folder: str | os.PathLike[str], cases: Sequence[CaseQC]) -> Path:
    """``folder/qc.csv``: one row per case, worst first (lowest agreement, then most flags)."""
    rows = [c.csv_row() for c in sorted(cases, key=worst_first)]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = Path(folder) / QC_CSV
    atomic_write_text(path, buf.getvalue())
    return path


def worst_first(qc: CaseQC) -> tuple[float, int, str]:
    """Sort key: lowest agreement first (cases without one last), then most flags."""
    score = qc.agreement
    return (math.inf if math.isnan(score) else score, -len(qc.flags), qc.case_id)


def voxel_volume_ml(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """One voxel in ml (a 2D image, z of size 1: the pixel area in cm²)."""
    mm = [float(s) for s in spacing]
    if len(shape) == 3 and shape[0] == 1:
        mm = mm[1:]
    return float(np.prod(mm)) / 1000.0


def touches_border(mask: np.ndarray) -> bool:
    """Whether ``mask`` has a voxel on a face of its grid (the z faces of a single slice
    are not borders)."""
    for axis in range(mask.ndim):
        if mask.shape[axis] == 1:
            continue
        first = np.take(mask, 0, axis=axis)
        last = np.take(mask, mask.shape[axis] - 1, axis=axis)
        if first.any() or last.any():
            return True
    return False


def label_qc(
    seg: np.ndarray,
    spacing: Sequence[float],
    labels: Mapping[str, int | Sequence[int]],
    *,
    connectivity: int = 26,
) -> dict[str, LabelQC]:
    """Volume, components, largest share and border contact of every label (or region).

    Plain labels share one multi-label ``cc3d`` pass (components never cross labels), so a
    map of a hundred labels costs about what one costs; regions get a pass each."""
    voxel = voxel_volume_ml(seg.shape, spacing)
    out: dict[str, LabelQC] = {}
    plain = {n: int(v) for n, v in labels.items() if not isinstance(v, (list, tuple))}
    if plain:
        out.update(_plain_label_qc(seg, plain, voxel, connectivity))
    for name, value in labels.items():
        if name in plain:
            continue
        mask = label_mask(seg, value)
        count = int(np.count_nonzero(mask))
        if count == 0:
            out[name] = LabelQC(0.0, 0, math.nan, False)
            continue
        components, n = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
        sizes = np.bincount(components.ravel())[1:]
        out[name] = LabelQC(count * voxel, int(n), float(sizes.max()) / count, touches_border(mask))
    return {name: out[name] for name in labels}


def _plain_label_qc(
    seg: np.ndarray, labels: Mapping[str, int], voxel: float, connectivity: int
) -> dict[str, LabelQC]:
    components, n = cc3d.connected_components(seg, connectivity=connectivity, return_N=True)
    flat = components.ravel()
    sizes = np.bincount(flat, minlength=n + 1)
    value_of = np.zeros(n + 1, dtype=seg.dtype)  # each component's label value
    value_of[flat] = seg.ravel()
    faces = [
        np.take(seg, i, axis=a)
        for a in range(seg.ndim)
        if seg.shape[a] > 1
        for i in (0, seg.shape[a] - 1)
    ]
    on_border = (
        set(np.unique(np.concatenate([f.ravel() for f in faces])).tolist()) if faces else set()
    )
    out = {}
    for name, value in labels.items():
        own = sizes[1:][value_of[1:] == value]
        count = int(own.sum())
        if count == 0:
            out[name] = LabelQC(0.0, 0, math.nan, False)
            continue
        out[name] = LabelQC(
            count * voxel, int(own.size), float(own.max()) / count, value in on_border
        )
    return out


def training_range(volumes_ml: Sequence[float]) -> tuple[float, float] | None:
    """Tukey's fences on the log volumes of the training cases that hold a label (zeros, cases
    without it, left out); None with fewer than :data:`MIN_TRAINING_CASES`."""
    v = np.asarray([x for x in volumes_ml if x > 0 and math.isfinite(x)], float)
    if v.size < MIN_TRAINING_CASES:
        return None
    q1, q3 = np.percentile(np.log(v), [25, 75])
    iqr = q3 - q1
    return float(np.exp(q1 - FENCE_IQR * iqr)), float(np.exp(q3 + FENCE_IQR * iqr))


def member_agreement(votes: np.ndarray, members: int) -> tuple[np.ndarray, float]:
    """Pooled pairwise Dice per channel of ``votes`` (``[C, ...]``: the share of members voting
    each channel at each voxel) and the split fraction over the voxels any member labelled
    with a channel. NaN where no member voted a channel (and everywhere with one member).

    Pass only the foreground channels (softmax: drop channel 0; regions: every channel).
    """
    n_channels = votes.shape[0]
    dice = np.full(n_channels, math.nan)
    if members < 2:
        return dice, math.nan
    m = float(members)
    for k in range(n_channels):
        f = votes[k].astype(np.float64, copy=False)
        total = float(f.sum())
        if total > 0:
            dice[k] = float((f * (m * f - 1.0)).sum()) / ((m - 1.0) * total)
    labelled = np.zeros(votes.shape[1:], bool)
    unanimous = np.ones(votes.shape[1:], bool)
    floor, top = 0.5 / m, 1.0 - 0.5 / m
    for k in range(n_channels):
        f = votes[k]
        some = f >= floor  # at least one member's worth of vote (half, for blending)
        labelled |= some
        unanimous &= ~some | (f >= top)
    n_labelled = int(np.count_nonzero(labelled))
    if n_labelled == 0:
        return dice, math.nan
    split = int(np.count_nonzero(labelled & ~unanimous))
    return dice, split / n_labelled
