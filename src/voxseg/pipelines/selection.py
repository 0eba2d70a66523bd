"""Model selection on cross-validation (nnU-Net's ``find_best_configuration``).

Every trained model folder of a dataset and plan (``models/<dataset>/<plan>/<model>``) is a
candidate. Its score is the foreground mean Dice (the mean over labels of the per-label mean
over cases) of the cross-validation predictions of all its folds taken together: the
per-case metrics of each ``fold_k/validation/summary.json`` are merged and summarised as one
set, so a fold with more cases weighs more (not the mean of fold means). Pairs of models whose
validation probabilities exist (``fold_k/validation/<case>.npz``) are ensembled and scored the
same way. Post-processing is then chosen on the best candidate's merged predictions
(:func:`voxseg.postprocess.determine_postprocessing`), and the commands that reproduce the
winner on new scans are written to ``reports/<dataset>/selection.json``.

Candidates are compared on the same folds: by default every fold found in any candidate;
a candidate missing one is listed as skipped with the reason.
"""

from __future__ import annotations

import itertools
import math
import os
import shlex
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxseg.config import read_json, write_json
from voxseg.errors import VoxsegError
from voxseg.modelfolder import SUMMARY, VALIDATION, ModelLayout, fold_sort_key

if TYPE_CHECKING:
    from rich.table import Table

#: Placeholders of the printed inference commands.
INPUT = "INPUT_FOLDER"
OUTPUT = "OUTPUT_FOLDER"


@dataclass
class TrainedModel:
    """A model folder with cross-validation results: fold → its ``validation/`` folder."""

    name: str
    folder: Path
    configuration: str
    folds: dict[str, Path]

    def summaries(self) -> dict[str, dict[str, Any]]:
        return {k: read_json(v / SUMMARY) for k, v in self.folds.items()}

    def validation_cases(self) -> dict[str, str]:
        """``{case: fold}`` over every fold's validation summary."""
        out: dict[str, str] = {}
        for fold, summary in self.summaries().items():
            for entry in summary.get("metric_per_case", []):
                out.setdefault(entry["case"], fold)
        return out

    def probability_files(self) -> dict[str, Path]:
        """``{case: fold_k/validation/<case>.npz}`` for every validation case."""
        return {c: self.folds[k] / f"{c}.npz" for c, k in self.validation_cases().items()}

    def has_probabilities(self) -> bool:
        files = self.probability_files()
        return bool(files) and all(p.is_file() for p in files.values())


@dataclass
class Candidate:
    """One ranked entry: a single model or an ensemble of several, with its merged scores."""

    name: str
    members: list[TrainedModel]
    folds: list[str]
    num_cases: int
    foreground_dice: float
    dice: dict[str, float]
    predictions: Path | None = None

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "ensemble" if self.is_ensemble else "model",
            "models": [str(m.folder) for m in self.members],
            "configurations": [m.configuration for m in self.members],
            "folds": self.folds,
            "num_cases": self.num_cases,
            "foreground_dice": self.foreground_dice,
            "dice": self.dice,
        }


@dataclass
class Selection:
    """The ranking, what was left out and why, the chosen post-processing and commands."""

    dataset: str
    plan: str
    reference: Path
    ranking: list[Candidate]
    skipped: dict[str, str] = field(default_factory=dict)
    postprocessing: list[dict[str, Any]] = field(default_factory=list)
    postprocessing_file: Path | None = None
    postprocessed_dice: float | None = None
    commands: list[str] = field(default_factory=list)

    @property
    def best(self) -> Candidate:
        return self.ranking[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "plan": self.plan,
            "reference": str(self.reference),
            "score": "foreground mean Dice over all cross-validation cases (folds merged)",
            "ranking": [c.to_dict() for c in self.ranking],
            "skipped": self.skipped,
            "best": {
                **self.best.to_dict(),
                "postprocessing": self.postprocessing,
                "postprocessing_file": (
                    str(self.postprocessing_file) if self.postprocessing_file else None
                ),
                "foreground_dice_postprocessed": self.postprocessed_dice,
            },
            "commands": self.commands,
        }

    def table(self) -> Table:
        """The ranking as a rich table (Dice per label and the foreground mean)."""
        from rich.table import Table

        labels = list(self.best.dice)
        table = Table(
            title=f"{self.dataset} / {self.plan}: cross-validation Dice, folds merged "
            f"({self.best.num_cases} cases)"
        )
        for column in ("rank", "candidate", "configuration", "folds"):
            table.add_column(column, no_wrap=column != "configuration")
        for name in labels:
            table.add_column(name, justify="right")
        table.add_column("foreground", justify="right")
        for rank, c in enumerate(self.ranking, 1):
            table.add_row(
                str(rank),
                c.name,
                " + ".join(m.configuration for m in c.members),
                " ".join(c.folds),
                *(_fmt(c.dice.get(n)) for n in labels),
                f"[bold]{_fmt(c.foreground_dice)}[/]" if rank == 1 else _fmt(c.foreground_dice),
            )
        if self.postprocessed_dice is not None:
            table.add_row(
                "",
                f"{self.best.name} + post-processing",
                "",
                "",
                *([""] * len(labels)),
                _fmt(self.postprocessed_dice),
            )
        return table


def _fmt(value: float | None) -> str:
    return "" if value is None else ("nan" if math.isnan(value) else f"{value:.4f}")


# ----------------------------------------------------------------------------- discovery
def find_trained_models(
    plan_dir: str | os.PathLike[str],
    models: Sequence[str] | None = None,
    configs: Sequence[str] | None = None,
) -> list[TrainedModel]:
    """Model folders under ``models/<dataset>/<plan>`` (with ``config.json``) that have at least
    one ``fold_k/validation/summary.json``, filtered by model name and configuration."""
    plan_dir = Path(plan_dir)
    if not plan_dir.is_dir():
        raise VoxsegError(f"{plan_dir}: no trained models (train with `voxseg train` first)")
    found = []
    for folder in sorted(p for p in plan_dir.iterdir() if ModelLayout(p).config.is_file()):
        if models and folder.name not in models:
            continue
        layout = ModelLayout(folder)
        configuration = str(read_json(layout.config).get("configuration", "?"))
        if configs and configuration not in configs:
            continue
        folds = {
            fold: layout.validation_dir(fold)
            for fold in layout.folds_with(Path(VALIDATION) / SUMMARY)
        }
        if folds:
            found.append(TrainedModel(folder.name, folder, configuration, folds))
    unknown = sorted(set(models or ()) - {m.name for m in found})
    if unknown:
        raise VoxsegError(
            f"{plan_dir}: no cross-validation results for model(s) {', '.join(unknown)} "
            "(fold_k/validation/summary.json is written when a fold finishes training)"
        )
    return found


def merged_summary(model: TrainedModel) -> dict[str, Any]:
    """The summary of all folds' validation cases taken together (per-case metrics merged,
    then summarised as :func:`voxseg.evaluation.summarise` does for one folder)."""
    from voxseg.evaluation import summarise

    per_case: dict[str, dict] = {}
    labels: dict[str, Any] = {}
    for fold, summary in sorted(model.summaries().items(), key=lambda kv: fold_sort_key(kv[0])):
        labels = labels or dict(summary.get("labels", {}))
        for entry in summary.get("metric_per_case", []):
            if entry["case"] in per_case:
                raise VoxsegError(
                    f"{model.folds[fold] / SUMMARY}: case {entry['case']!r} is also a "
                    "validation case of another fold; the folds must not overlap"
                )
            per_case[entry["case"]] = entry
    cases = [per_case[c] for c in sorted(per_case)]
    if not labels and cases:
        labels = {n: n for n in cases[0]["metrics"]}
    return {"num_cases": len(cases), **summarise(cases, list(labels)), "labels": labels}


def _candidate(
    name: str, members: list[TrainedModel], folds: list[str], summary: dict
) -> Candidate:
    return Candidate(
        name=name,
        members=members,
        folds=folds,
        num_cases=int(summary["num_cases"]),
        foreground_dice=float(summary["foreground_mean"].get("dice", math.nan)),
        dice={n: float(m.get("dice", math.nan)) for n, m in summary["mean"].items()},
    )


def rank(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Best first: higher foreground Dice; ties go to fewer models, then to the name; NaN last."""

    def key(c: Candidate) -> tuple:
        score = c.foreground_dice
        return (math.isnan(score), -score if not math.isnan(score) else 0.0, len(c.members), c.name)

    return sorted(candidates, key=key)


# ----------------------------------------------------------------------------- ensembles
def predict_validation_probabilities(
    model: TrainedModel,
    dataset_root: str | os.PathLike[str],
    *,
    device: str = "auto",
    predictor_factory: Callable[..., Any] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``fold_k/validation/<case>.npz`` for every validation case that lacks it, by
    predicting the raw image with that fold's weights (the model's own prediction settings,
    no post-processing); return the files written."""
    from voxseg.data import Dataset
    from voxseg.inference.files import save_probabilities_npz

    if predictor_factory is None:
        from voxseg.inference.predictor import Predictor as predictor_factory
    dataset = Dataset(dataset_root)
    by_fold: dict[str, list[str]] = {}
    for case, fold in model.validation_cases().items():
        if overwrite or not (model.folds[fold] / f"{case}.npz").is_file():
            by_fold.setdefault(fold, []).append(case)
    written = []
    for fold, cases in sorted(by_fold.items()):
        predictor = predictor_factory(
            model.folder,
            folds=[fold],
            device=device,
            postprocess=False,
        )
        for case in cases:
            image, _ = dataset.load_case(dataset.case(case))
            prediction = predictor.predict(image, probabilities=True)
            path = model.folds[fold] / f"{case}.npz"
            save_probabilities_npz(path, prediction.probabilities)
            written.append(path)
    return written


def ensemble_validation(
    members: Sequence[TrainedModel],
    output: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    dataset: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Ensemble the members' validation probabilities case by case into ``output`` (label
    maps with the ending of the first member's), evaluate them and return the summary."""
    from voxseg.evaluation import evaluate_folder
    from voxseg.inference.ensemble import (
        LabelRule,
        ensemble_case,
        find_dataset_info,
        label_ending,
    )

    files = [m.probability_files() for m in members]
    cases = sorted(files[0])
    for member, found in zip(members[1:], files[1:], strict=True):
        if sorted(found) != cases:
            raise VoxsegError(
                f"{member.folder}: validation cases differ from {members[0].folder}; "
                "ensembles need models trained on the same splits"
            )
    info = find_dataset_info([members[0].folder], dataset)
    rule = LabelRule.from_info(info) if info is not None else LabelRule()
    output = Path(output)
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    first = members[0]
    case_fold = first.validation_cases()
    for case in cases:
        ending = label_ending(first.folds[case_fold[case]], case)
        ensemble_case([f[case] for f in files], output / f"{case}{ending}", rule)
    return evaluate_folder(output, reference, dataset=dataset, surface=False)


def merge_validation(model: TrainedModel, output: str | os.PathLike[str]) -> Path:
    """All folds' validation label maps in one folder (hard links where possible)."""
    from voxseg.evaluation.evaluate import LABEL_ENDINGS
    from voxseg.io import file_ending

    output = Path(output)
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    for case, fold in model.validation_cases().items():
        folder = model.folds[fold]
        sources = [
            folder / f"{case}{e}" for e in LABEL_ENDINGS if (folder / f"{case}{e}").is_file()
        ]
        if not sources:
            raise VoxsegError(f"{folder}: no label map for validation case {case!r}")
        target = output / f"{case}{file_ending(sources[0])}"
        try:
            os.link(sources[0], target)
        except OSError:
            shutil.copyfile(sources[0], target)
    return output


# ----------------------------------------------------------------------------- selection
def _resolve_dataset(ws: Any, dataset: str) -> tuple[str, Path | None]:
    """``(name, raw dataset folder or None)``: the raw folder names the models folder."""
    try:
        root = ws.dataset_dir(dataset)
        return root.name, root
    except VoxsegError:
        if (ws.models / dataset).is_dir():
            return dataset, None
        raise


def select_models(
    dataset: str,
    *,
    plan: str = "default",
    models: Sequence[str] | None = None,
    configs: Sequence[str] | None = None,
    folds: Sequence[str] | None = None,
    ensembles: bool = True,
    predict_probabilities: bool = False,
    postprocess: bool = True,
    device: str = "auto",
    home: str | os.PathLike[str] | None = None,
    predictor_factory: Callable[..., Any] | None = None,
) -> Selection:
    """Rank the dataset's trained models and their pairwise ensembles on cross-validation,
    choose post-processing for the best, and write ``reports/<dataset>/selection.json``.

    ``predict_probabilities`` first predicts missing validation probabilities (needs the
    weights and the raw images), so that every pair of models can be ensembled.
    """
    from voxseg.workspace import Workspace

    ws = Workspace.from_env(home)
    name, raw = _resolve_dataset(ws, dataset)
    found = find_trained_models(ws.models / name / plan, models, configs)
    if not found:
        raise VoxsegError(
            f"{ws.models / name / plan}: no model with cross-validation results"
            + (f" for configurations {', '.join(configs)}" if configs else "")
        )
    wanted = sorted(
        {str(f) for f in folds} if folds else {f for m in found for f in m.folds}, key=fold_sort_key
    )
    skipped: dict[str, str] = {}
    complete = []
    for m in found:
        lacking = [f for f in wanted if f not in m.folds]
        if lacking:
            skipped[m.name] = f"no validation results for fold(s) {', '.join(lacking)}"
        else:
            complete.append(
                TrainedModel(m.name, m.folder, m.configuration, {f: m.folds[f] for f in wanted})
            )
    if not complete:
        raise VoxsegError(
            f"no model has validation results for every fold {' '.join(wanted)}: "
            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    summaries = {m.name: merged_summary(m) for m in complete}
    if raw is not None:
        reference = raw / "labelsTr"
        dataset_json: Path | None = raw / "dataset.json"
    else:
        first = next(iter(complete[0].summaries().values()))
        reference, dataset_json = Path(first["reference"]), None
    work = ws.reports / name / "selection"
    candidates = [_candidate(m.name, [m], wanted, summaries[m.name]) for m in complete]

    if ensembles and len(complete) > 1:
        if predict_probabilities:
            if raw is None:
                raise VoxsegError(f"dataset {dataset!r} not found in {ws.raw}: cannot predict")
            for m in complete:
                predict_validation_probabilities(
                    m, raw, device=device, predictor_factory=predictor_factory
                )
        with_probs = [m for m in complete if m.has_probabilities()]
        for m in complete:
            if m not in with_probs:
                skipped[f"ensembles with {m.name}"] = (
                    "no validation probabilities (fold_k/validation/<case>.npz); "
                    "run `voxseg select` with --predict-probabilities"
                )
        for pair in itertools.combinations(with_probs, 2):
            ens_name = "ensemble__" + "__".join(m.name for m in pair)
            folder = work / ens_name / "crossval"
            try:
                summary = ensemble_validation(pair, folder, reference, dataset_json)
            except VoxsegError as exc:
                skipped[ens_name] = str(exc)
                continue
            candidate = _candidate(ens_name, list(pair), wanted, summary)
            candidate.predictions = folder
            candidates.append(candidate)

    selection = Selection(name, plan, reference, rank(candidates), skipped)
    best = selection.best
    if postprocess:
        _choose_postprocessing(selection, work / best.name, reference, dataset_json)
    selection.commands = inference_commands(selection)
    write_json(ws.reports / name / "selection.json", selection.to_dict())
    return selection


def _choose_postprocessing(
    selection: Selection, folder: Path, reference: Path, dataset_json: Path | None
) -> None:
    from voxseg.evaluation import evaluate_folder
    from voxseg.io import read_image, write_image
    from voxseg.postprocess import apply_postprocessing, determine_postprocessing

    best = selection.best
    predictions = best.predictions or merge_validation(best.members[0], folder / "crossval")
    steps = determine_postprocessing(
        predictions, reference, dataset=dataset_json, output_dir=folder
    )
    selection.postprocessing = steps
    selection.postprocessing_file = ModelLayout(folder).postprocessing
    if not steps:
        selection.postprocessed_dice = best.foreground_dice
        return
    out = folder / "crossval_postprocessed"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for path in sorted(p for p in predictions.iterdir() if p.is_file()):
        if path.name.endswith(".json") or path.suffix in (".csv", ".npz"):
            continue
        image = read_image(path)
        write_image(
            image.with_array(apply_postprocessing(image.array, image.spacing, steps)),
            out / path.name,
        )
    summary = evaluate_folder(out, reference, dataset=dataset_json, surface=False)
    selection.postprocessed_dice = float(summary["foreground_mean"].get("dice", math.nan))


def inference_commands(selection: Selection) -> list[str]:
    """The commands that predict new scans the way the best candidate was validated."""
    best = selection.best
    q = shlex.quote
    folds = " ".join(best.folds)
    steps = selection.postprocessing
    commands = []
    if best.is_ensemble:
        outputs = [f"{OUTPUT}_{m.name}" for m in best.members]
        for m, out in zip(best.members, outputs, strict=True):
            commands.append(
                f"voxseg predict -i {INPUT} -o {q(out)} -m {q(str(m.folder))} --folds {folds} "
                "--save-probabilities --no-postprocess"
            )
        commands.append(f"voxseg ensemble -i {' '.join(q(o) for o in outputs)} -o {OUTPUT}")
    else:
        commands.append(
            f"voxseg predict -i {INPUT} -o {OUTPUT} -m {q(str(best.members[0].folder))} "
            f"--folds {folds} --no-postprocess"
        )
    if steps and selection.postprocessing_file is not None:
        commands.append(
            f"voxseg postprocess apply {OUTPUT} {OUTPUT}_PP "
            f"--config {q(str(selection.postprocessing_file))}"
        )
    return commands
