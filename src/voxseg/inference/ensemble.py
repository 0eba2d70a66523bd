"""Ensembles of saved probabilities: average the ``<case>.npz`` files that
``voxseg predict --save-probabilities`` writes for several models or configurations, then
turn the mean into a label map (nnU-Net's ``nnUNetv2_ensemble``).

Softmax models: the label is the argmax of the mean probabilities. Region (sigmoid) models:
each region whose mean probability is above 0.5 is painted with its value, in
``regions_class_order`` (later regions overwrite earlier ones), as the predictor does.
One case is held in memory at a time; probabilities are summed in float32.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxseg.data.dataset import DatasetInfo
from voxseg.errors import VoxsegError
from voxseg.io import Image, file_ending, write_image

#: Tolerance on the per-voxel class sum of softmax probabilities stored as float16.
SOFTMAX_SUM_TOLERANCE = 2e-2


@dataclass(frozen=True)
class LabelRule:
    """How probabilities become labels: argmax, or sigmoid regions painted in order."""

    region_values: tuple[int, ...] | None = None

    @classmethod
    def from_info(cls, info: DatasetInfo) -> LabelRule:
        """The rule of a dataset's labels (regions when any label is a list of values)."""
        values = info.region_values
        return cls() if values is None else cls(tuple(values))

    @property
    def is_regions(self) -> bool:
        return self.region_values is not None


@dataclass
class EnsembleReport:
    """What :func:`ensemble_folders` did: cases written, skipped (already done), and cases
    left out because some inputs lack them (case → the input folders without it)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)


def load_probabilities(path: str | os.PathLike[str]) -> Image:
    """A saved ``.npz`` (``probabilities`` ``[C, z, y, x]`` plus ``spacing``, ``origin``,
    ``direction``) as an :class:`Image` (no pickle)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [
                k for k in ("probabilities", "spacing", "origin", "direction") if k not in data
            ]
            if missing:
                raise VoxsegError(
                    f"{path}: not a voxseg probabilities file (missing {', '.join(missing)}); "
                    "write it with `voxseg predict --save-probabilities`"
                )
            probs = data["probabilities"]
            spacing, origin, direction = data["spacing"], data["origin"], data["direction"]
    except (OSError, ValueError) as exc:
        raise VoxsegError(f"{path}: cannot read probabilities ({exc})") from exc
    if probs.ndim != 4:
        raise VoxsegError(f"{path}: probabilities must be [C, z, y, x], got {probs.shape}")
    return Image(probs, tuple(spacing), tuple(origin), np.asarray(direction).reshape(3, 3))


def mean_probabilities(paths: Sequence[str | os.PathLike[str]]) -> Image:
    """The voxel-wise mean of several probability files of one case (float32), with the
    geometry of the first; a file whose grid or classes differ is named in the error."""
    if not paths:
        raise ValueError("mean_probabilities needs at least one file")
    first = load_probabilities(paths[0])
    total = first.array.astype(np.float32)
    geometry = first.geometry
    for path in paths[1:]:
        image = load_probabilities(path)
        if image.array.shape[0] != total.shape[0]:
            raise VoxsegError(
                f"{path}: {image.array.shape[0]} classes, but {paths[0]} has {total.shape[0]}; "
                "only models with the same labels can be ensembled"
            )
        problems = geometry.differences(image.geometry)
        if problems:
            raise VoxsegError(f"{path}: geometry differs from {paths[0]}: " + "; ".join(problems))
        np.add(total, image.array, out=total, dtype=np.float32)
        del image
    total /= np.float32(len(paths))
    return Image.from_geometry(total, geometry)


def labels_from_probabilities(probabilities: np.ndarray, rule: LabelRule) -> np.ndarray:
    """Label map ``[z, y, x]`` from probabilities ``[C, z, y, x]`` (see the module docstring)."""
    if rule.region_values is None:
        n_labels = probabilities.shape[0] - 1
        dtype = np.uint8 if n_labels < 256 else np.uint16
        return np.argmax(probabilities, axis=0).astype(dtype)
    if len(rule.region_values) != probabilities.shape[0]:
        raise VoxsegError(
            f"{probabilities.shape[0]} probability channels but {len(rule.region_values)} "
            "regions in dataset.json"
        )
    dtype = np.uint8 if max(rule.region_values) < 256 else np.uint16
    out = np.zeros(probabilities.shape[1:], dtype=dtype)
    for channel, value in enumerate(rule.region_values):
        out[probabilities[channel] > 0.5] = value
    return out


def check_softmax(probabilities: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Refuse to argmax probabilities that do not sum to one (sigmoid region outputs)."""
    sums = probabilities.sum(axis=0, dtype=np.float32)
    worst = float(np.abs(sums - 1).max()) if sums.size else 0.0
    if worst > SOFTMAX_SUM_TOLERANCE:
        raise VoxsegError(
            f"{path}: the class probabilities do not sum to 1 (off by up to {worst:.3f}), so "
            "they look like region (sigmoid) outputs; give the dataset with --dataset so the "
            "regions and regions_class_order are known"
        )


def ensemble_case(
    paths: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    rule: LabelRule,
    *,
    save_probabilities: bool = False,
    check: bool = False,
) -> Image:
    """Average one case's probability files, write its label map to ``output`` (atomically)
    and, if asked, the mean probabilities beside it as ``<case>.npz``; return the label map."""
    from voxseg.inference.files import save_probabilities_npz

    mean = mean_probabilities(paths)
    if check and not rule.is_regions:
        check_softmax(mean.array, paths[0])
    segmentation = mean.with_array(labels_from_probabilities(mean.array, rule))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if save_probabilities:
        npz = output.with_name(output.name[: -len(file_ending(output))] + ".npz")
        save_probabilities_npz(npz, mean.with_array(mean.array.astype(np.float16)))
    write_image(segmentation, output)
    return segmentation


def probability_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """``{case: folder/<case>.npz}`` for the saved probabilities in a prediction folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VoxsegError(f"{folder}: prediction folder not found")
    return {
        p.name[: -len(".npz")]: p
        for p in sorted(folder.glob("*.npz"))
        if not p.name.startswith(".")
    }


def label_ending(folder: Path, case: str, default: str = ".nii.gz") -> str:
    """The file ending of ``case``'s label map in ``folder`` (``default`` when it has none)."""
    from voxseg.evaluation.evaluate import LABEL_ENDINGS

    for ending in LABEL_ENDINGS:
        if (folder / f"{case}{ending}").is_file():
            return ending
    return default


def find_dataset_info(
    inputs: Sequence[str | os.PathLike[str]],
    dataset: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
) -> DatasetInfo | None:
    """The labels of the ensembled models: ``dataset`` (a ``dataset.json``, its folder, or a
    dataset name in the workspace), else a ``dataset.json`` in an input folder or up to three
    folders above it (``fold_k/validation`` → ``fold_k``), else in the model folder of a
    workspace prediction folder (``predictions/<ds>/<plan>/<model>/…`` → ``models/…``)."""
    from voxseg.config import load_model
    from voxseg.workspace import Workspace

    if dataset is not None:
        path = Path(dataset)
        if not path.is_file():
            path = Workspace.from_env(home).dataset_dir(dataset) / "dataset.json"
        return load_model(DatasetInfo, path)
    for folder in (Path(p).absolute() for p in inputs):
        candidates = [folder, *list(folder.parents)[:3]]
        parts = folder.parts
        if "predictions" in parts:
            i = len(parts) - 1 - parts[::-1].index("predictions")
            if len(parts) >= i + 4:
                candidates.append(Path(*parts[:i], "models", *parts[i + 1 : i + 4]))
        for candidate in candidates:
            if (candidate / "dataset.json").is_file():
                return load_model(DatasetInfo, candidate / "dataset.json")
    return None


def ensemble_folders(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    dataset: str | os.PathLike[str] | None = None,
    save_probabilities: bool = False,
    fmt: str | None = None,
    overwrite: bool = False,
    home: str | os.PathLike[str] | None = None,
) -> EnsembleReport:
    """Average the saved probabilities of every case present in all ``inputs`` and write
    label maps (ending of the first input's label maps, or ``fmt``) to ``output``.

    Cases whose output exists are skipped unless ``overwrite``; cases missing from some
    input are left out and listed in the report. Without a ``dataset.json`` (see
    :func:`find_dataset_info`) the probabilities are taken as softmax and checked to be so.
    """
    if len(inputs) < 2:
        raise VoxsegError("an ensemble needs at least two input folders")
    folders = [Path(p) for p in inputs]
    files = [probability_files(f) for f in folders]
    for folder, found in zip(folders, files, strict=True):
        if not found:
            raise VoxsegError(
                f"{folder}: no probabilities (<case>.npz); predict with --save-probabilities"
            )
    info = find_dataset_info(folders, dataset, home)
    rule = LabelRule.from_info(info) if info is not None else LabelRule()
    every = sorted(set().union(*files))
    report = EnsembleReport()
    for case in every:
        lacking = [str(f) for f, found in zip(folders, files, strict=True) if case not in found]
        if lacking:
            report.missing[case] = lacking
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for case in (c for c in every if c not in report.missing):
        ending = fmt if fmt else label_ending(folders[0], case)
        ending = ending if ending.startswith(".") else "." + ending
        target = output / f"{case}{ending}"
        finished = target.is_file() and (
            not save_probabilities or (output / f"{case}.npz").is_file()
        )
        if finished and not overwrite:
            report.skipped.append(case)
            continue
        ensemble_case(
            [found[case] for found in files],
            target,
            rule,
            save_probabilities=save_probabilities,
            check=info is None,
        )
        report.done.append(case)
    return report


__all__ = [
    "EnsembleReport",
    "LabelRule",
    "check_softmax",
    "ensemble_case",
    "ensemble_folders",
    "find_dataset_info",
    "label_ending",
    "labels_from_probabilities",
    "load_probabilities",
    "mean_probabilities",
    "probability_files",
]
