"""Model folders: the one place that spells their file names, and the loaders that open them.

A voxseg model folder (``voxseg train`` writes it, ``voxseg predict -m`` reads it)::

    MODEL/
        config.json  plans.json  dataset.json    the model (copies in every fold_<k>/ too)
        postprocessing.json                      steps chosen on cross-validation (optional)
        postprocessing_report.json
        fold_<k>/                                one per trained fold (``fold_all``: all cases)
            weights.safetensors                  final weights
            checkpoint_best.safetensors          best EMA validation Dice
            checkpoint_last.safetensors          resumable (network, optimiser, RNG, log)
            training_log.csv  progress.png  snapshots/
            budget.json                          with --time-budget: what was spent on what
            validation/<case>  validation/summary.json

``voxseg auto`` writes a model folder of this shape with ``summary.json`` (what was trained
and why the winner won) and ``auto_state.json`` (the time spent, for a re-run to resume);
its training runs live in ``auto_<configuration>/`` inside it.

a pipeline folder holds ``pipeline.json`` and one model folder per stage in
``stages/<stage>/``; an nnU-Net v2 results folder holds ``plans.json``, ``dataset.json`` and
``fold_<k>/checkpoint_{final,best,latest}.pth``.

Opening a folder goes through :data:`LOADERS`, tried in order: the first whose
``matches(path)`` is true loads it. Adding a kind of model folder is one call::

    register_loader("mykind", matches=is_my_folder, load="mypkg.models:MyModel.load")

``load`` is a callable or a ``module:attr`` name imported only when a folder matches (so
this foundation module never imports the layers that build models).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxseg.errors import VoxsegError

CONFIG = "config.json"
PLANS = "plans.json"
DATASET = "dataset.json"
POSTPROCESSING = "postprocessing.json"
POSTPROCESSING_REPORT = "postprocessing_report.json"
FINAL_WEIGHTS = "weights.safetensors"
CHECKPOINT_BEST = "checkpoint_best.safetensors"
CHECKPOINT_LAST = "checkpoint_last.safetensors"
TRAINING_LOG = "training_log.csv"
PROGRESS_PLOT = "progress.png"
SNAPSHOTS = "snapshots"
VALIDATION = "validation"
SUMMARY = "summary.json"
BUDGET = "budget.json"  # fold_<k>/: how a time budget was spent
AUTO_STATE = "auto_state.json"  # voxseg auto's model folder: seconds spent so far
REPORT = "report"  # voxseg auto's model folder: its HTML report (index.html)
PIPELINE_SPEC = "pipeline.json"
STAGES = "stages"
FOLD_PREFIX = "fold_"

#: ``--checkpoint`` names → the weights file in ``fold_<k>/`` of a voxseg model.
WEIGHT_FILES = {"final": FINAL_WEIGHTS, "best": CHECKPOINT_BEST, "last": CHECKPOINT_LAST}
#: ``--checkpoint`` names → the checkpoint in ``fold_<k>/`` of an nnU-Net v2 results folder.
NNUNET_CHECKPOINT_FILES = {
    "final": "checkpoint_final.pth",
    "best": "checkpoint_best.pth",
    "last": "checkpoint_latest.pth",
}


def fold_dir_name(fold: int | str) -> str:
    return f"{FOLD_PREFIX}{fold}"


def fold_of(path: str | os.PathLike[str]) -> str | None:
    """``"3"`` for ``.../fold_3``, else None."""
    name = Path(path).name
    return name[len(FOLD_PREFIX) :] if name.startswith(FOLD_PREFIX) else None


def fold_sort_key(fold: str) -> tuple[int, str]:
    """Folds in number order, named folds (``all``) last."""
    return (int(fold), fold) if fold.isdigit() else (1 << 30, fold)


@dataclass(frozen=True)
class ModelLayout:
    """The paths of one model folder (nothing is read or created)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def plans(self) -> Path:
        return self.root / PLANS

    @property
    def dataset(self) -> Path:
        return self.root / DATASET

    @property
    def postprocessing(self) -> Path:
        return self.root / POSTPROCESSING

    @property
    def postprocessing_report(self) -> Path:
        return self.root / POSTPROCESSING_REPORT

    def fold_dir(self, fold: int | str) -> Path:
        return self.root / fold_dir_name(fold)

    def weights(self, fold: int | str, checkpoint: str = "final") -> Path:
        """``fold_<k>/`` + the weights file of ``checkpoint`` (final, best or last)."""
        return self.fold_dir(fold) / checkpoint_file(checkpoint, WEIGHT_FILES)

    def validation_dir(self, fold: int | str) -> Path:
        return self.fold_dir(fold) / VALIDATION

    def folds_with(self, relative: str | os.PathLike[str]) -> list[str]:
        """The folds (numbers first, then ``all``) whose ``fold_<k>/relative`` exists."""
        folds = [
            fold
            for p in self.root.glob(f"{FOLD_PREFIX}*")
            if (fold := fold_of(p)) is not None and (p / relative).exists()
        ]
        return sorted(folds, key=fold_sort_key)

    def select_folds(self, requested: Sequence[int | str] | None, relative: str) -> list[str]:
        """``requested`` (default: every fold with ``fold_<k>/relative``), checked to exist."""
        available = self.folds_with(relative)
        chosen = [str(f) for f in requested] if requested else available
        missing = [f for f in chosen if f not in available]
        if missing or not chosen:
            raise VoxsegError(
                f"{self.root}: no {relative} for fold(s) {', '.join(missing) or '?'}; "
                f"trained folds: {', '.join(available) or 'none'}"
            )
        return chosen

    # ---------------------------------------------------------------- pipelines
    @property
    def pipeline_spec(self) -> Path:
        return self.root / PIPELINE_SPEC

    def stage_dir(self, stage: str) -> Path:
        return self.root / STAGES / stage


def checkpoint_file(checkpoint: str, files: dict[str, str]) -> str:
    if checkpoint not in files:
        raise VoxsegError(f"checkpoint must be one of {', '.join(files)}, not {checkpoint!r}")
    return files[checkpoint]


def split_fold(
    folder: str | os.PathLike[str], folds: Sequence[int | str] | None, marker: str
) -> tuple[Path, list[str] | None]:
    """``(model folder, folds)`` for a path that may be one ``fold_<k>`` of a model (told by
    ``marker``, a file the model folder has and a fold folder lacks, or vice versa): the
    fold becomes the default ``folds``."""
    folder = Path(folder)
    fold = fold_of(folder)
    if fold is not None and (folder.parent / marker).is_file():
        return folder.parent, [str(f) for f in folds] if folds else [fold]
    return folder, [str(f) for f in folds] if folds else None


def open_layout(
    folder: str | os.PathLike[str],
    folds: Sequence[int | str] | None,
    checkpoint: str,
    *,
    kind: str,
    required: Sequence[str],
    weight_files: dict[str, str],
) -> tuple[ModelLayout, list[str], str]:
    """``(layout, folds, weights file)`` of a model folder of ``kind`` (or one ``fold_<k>`` of
    it: that fold by default, told by the first ``required`` file), checked to hold every
    ``required`` file and the ``checkpoint``'s weights for each fold."""
    folder, folds = split_fold(folder, folds, marker=required[0])
    layout = ModelLayout(folder)
    for name in required:
        if not (folder / name).is_file():
            raise VoxsegError(f"{folder}: not {kind} ({name} is missing)")
    file = checkpoint_file(checkpoint, weight_files)
    return layout, layout.select_folds(folds, file), file


# ------------------------------------------------------------------------------- kinds
def is_voxseg_model_folder(folder: str | os.PathLike[str]) -> bool:
    """A voxseg model folder (or one ``fold_<k>`` in it): ``config.json`` beside the plans."""
    folder = Path(folder)
    return (folder / CONFIG).is_file() and (folder / PLANS).is_file()


def is_nnunet_model_folder(folder: str | os.PathLike[str]) -> bool:
    """True for an nnU-Net v2 training output folder (or one of its ``fold_<k>``)."""
    folder = Path(folder)
    if fold_of(folder) is not None and any(folder.glob("checkpoint_*.pth")):
        folder = folder.parent
    return (
        (folder / PLANS).is_file()
        and (folder / DATASET).is_file()
        and not (folder / CONFIG).is_file()
        and any(folder.glob(f"{FOLD_PREFIX}*/checkpoint_*.pth"))
    )


def is_pipeline_folder(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / PIPELINE_SPEC).is_file()


# ------------------------------------------------------------------------------ loaders
@dataclass(frozen=True)
class ModelLoader:
    """One kind of model folder: ``matches(path)`` tells it, ``load(path, **options)`` opens
    it (a callable or a ``module:attr`` name)."""

    name: str
    matches: Callable[[Path], bool]
    load: Callable[..., Any] | str

    def __call__(self, path: str | os.PathLike[str], **options: Any) -> Any:
        load = _resolve(self.load) if isinstance(self.load, str) else self.load
        return load(path, **options)


#: Tried in order; the first match loads the folder.
LOADERS: list[ModelLoader] = []


def register_loader(
    name: str,
    matches: Callable[[Path], bool],
    load: Callable[..., Any] | str,
    *,
    before: str | None = None,
) -> ModelLoader:
    """Add a kind of model folder (tried before the loader ``before`` when given, else last;
    a folder of two kinds goes to the first)."""
    if any(loader.name == name for loader in LOADERS):
        raise ValueError(f"model-folder loader {name!r} is registered twice")
    loader = ModelLoader(name, matches, load)
    index = len(LOADERS)
    if before is not None:
        index = next((i for i, lo in enumerate(LOADERS) if lo.name == before), index)
    LOADERS.insert(index, loader)
    return loader


def find_loader(path: str | os.PathLike[str]) -> ModelLoader:
    """The first loader that matches ``path``; an error naming every kind tried."""
    path = Path(path)
    if not path.is_dir():
        raise VoxsegError(f"{path}: model folder not found")
    for loader in LOADERS:
        if loader.matches(path):
            return loader
    raise VoxsegError(
        f"{path}: not a model folder voxseg can open (tried: "
        f"{', '.join(lo.name for lo in LOADERS)}); a voxseg model folder has {CONFIG}, "
        f"{PLANS} and {DATASET} and fold_<k>/{FINAL_WEIGHTS}"
    )


def load_model_folder(path: str | os.PathLike[str], **options: Any) -> Any:
    """Open ``path`` with the first matching loader (``options``: folds, checkpoint)."""
    return find_loader(path)(path, **options)


def _resolve(dotted: str) -> Callable[..., Any]:
    module, _, attr = dotted.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


register_loader("nnunet", is_nnunet_model_folder, "voxseg.inference.nnunet:NnUNetModelFolder.read")
register_loader("pipeline", is_pipeline_folder, "voxseg.pipelines.predict:open_pipeline")
register_loader("voxseg", is_voxseg_model_folder, "voxseg.inference.model:ModelFolder.read")
