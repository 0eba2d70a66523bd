"""``voxseg auto``: from a dataset to a ready model folder within a time budget.

check → plan for the device → preprocess → train the configurations the budget and the data
call for → model selection on validation → post-processing chosen on the same validation
predictions → ``models/<dataset>/auto/``, a model folder that ``voxseg predict -m`` takes
as it is, with ``summary.json`` saying what was trained, for how long, and why the winner won.

How the budget is spent (the rules, also in the README):

- The clock starts with the command. Checking, planning and preprocessing are timed and come
  out of the budget first; ``SELECTION_RESERVE`` is kept for the selection at the end.
- What is trained: 2D data → ``2d``. 3D on a CPU → the whole-image ``3d_lowres`` (the CPU
  plan's low-resolution stage holds the median image in one patch), plus ``3d_fullres`` once
  the training time reaches ``CPU_FULLRES_MIN_SECONDS``. 3D on a GPU → ``3d_fullres``, plus
  ``2d`` and ``3d_lowres`` once each run would still get ``GPU_EXTRA_MIN_SECONDS``.
- Small structures: when every configuration trained is coarser than the full-resolution
  grid (the CPU's whole-image ``3d_lowres``), each class's typical object (the fingerprint's
  object volumes, :mod:`voxseg.planning.small`) is compared with that grid's voxel; classes
  under ``SMALL_OBJECT_VOXELS`` voxels get a full-resolution stage (``SMALL_STAGE``) that
  sees the image plus the whole-image model's other classes and centres most patches on the
  small objects. It is one more run sharing the budget, and the model folder becomes a
  pipeline (:func:`voxseg.pipelines.recipes.small_structures`): the winner finds every
  class, the stage overwrites the small ones. ``summary.json`` says why, either way.
- Validation: 5-fold cross-validation when every fold of every configuration would get at
  least ``CV_MIN_RUN_SECONDS``; otherwise one held-out split (fold 0 of ``splits.json``: 80 %
  train, 20 % validation). The output says which.
- Each run gets an equal share of the training time left when it starts (time a run did not
  use passes to the next), trained with the ``adamw`` recipe and a time budget
  (:mod:`voxseg.training.budget`).
- A re-run after an interruption skips finished steps and runs, resumes an interrupted run
  from its last checkpoint, and spends only the budget left (``auto_state.json``).
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxseg.config import read_json, write_json
from voxseg.modelfolder import (
    AUTO_STATE,
    BUDGET,
    CHECKPOINT_LAST,
    CONFIG,
    DATASET,
    FINAL_WEIGHTS,
    PIPELINE_SPEC,
    PLANS,
    SUMMARY,
    VALIDATION,
    ModelLayout,
)
from voxseg.training.budget import format_duration

logger = logging.getLogger(__name__)

#: the model folder ``voxseg auto`` writes: ``models/<dataset>/<AUTO_MODEL>/``
AUTO_MODEL = "auto"
#: training runs are named ``auto_<configuration>`` in ``models/<dataset>/<plan>/``
RUN_PREFIX = "auto_"
RECIPE = "adamw"
NUM_FOLDS = 5
#: a fold of cross-validation is worth training when it gets at least this long
CV_MIN_RUN_SECONDS = 600.0
#: on a CPU, ``3d_fullres`` joins the whole-image ``3d_lowres`` from this much training time
CPU_FULLRES_MIN_SECONDS = 7200.0
#: on a GPU, ``2d`` and ``3d_lowres`` join ``3d_fullres`` when each run still gets this long
GPU_EXTRA_MIN_SECONDS = 1800.0
#: a run never gets less than this share of the budget (the run then ends late, and says so)
MIN_RUN_FRACTION = 0.1
#: kept for model selection and post-processing at the end, per configuration trained:
#: seconds + share of the budget. Both read the runs' saved validation predictions; one
#: configuration's selection took 0.1-0.5 s on the organs, brain and lesion benchmarks
#: (``auto_state.json``); the former 10 s + 2 % was most of the 5-8 % of a budget left unused.
SELECTION_RESERVE = (2.0, 0.005)
#: the full-resolution stage ``auto`` adds for classes too small for the whole-image grid
SMALL_STAGE = "small"
#: the pipeline stage that holds the selected whole-image model
WHOLE_STAGE = "whole"
#: configurations on the full-resolution grid: training one leaves no class unseen there
FULL_RESOLUTION = ("2d", "3d_fullres")


@dataclass
class AutoPlan:
    """What ``auto`` trains: configurations, folds, and the validation scheme in words."""

    configurations: list[str]
    folds: list[str]
    validation: str


def small_structure_rule(
    fingerprint: Any, plans: Any, configurations: list[str], labels_problem: str | None
) -> dict[str, Any]:
    """Whether ``auto`` adds the full-resolution small-structure stage, and why (the rule in
    the module docstring); ``labels_problem`` says why the dataset cannot have one."""
    from voxseg.planning.small import find_small_structures

    full_spacing = (
        plans.configuration("3d_fullres").spacing if "3d_fullres" in plans.configurations else None
    )
    full = [
        c
        for c in configurations
        if c in FULL_RESOLUTION or plans.configuration(c).spacing == full_spacing
    ]
    if full:
        return {
            "stage": False,
            "classes": [],
            "why": f"{full[0]} is trained on the full-resolution grid: no class needs a "
            "separate full-resolution stage",
        }
    coarse = min(configurations, key=lambda c: math.prod(plans.configuration(c).spacing))
    found = find_small_structures(fingerprint, plans, coarse)
    record: dict[str, Any] = {"stage": False, **found.to_dict()}
    if not found.classes:
        return record
    foreground = [v for n, v in plans.labels.items() if isinstance(v, int) and v and n != "ignore"]
    if "3d_fullres" not in plans.configurations:
        record["why"] += "; no 3d_fullres is planned to train a full-resolution stage on"
    elif len(found.classes) == len(foreground):
        record["why"] += (
            f"; every class is small for {coarse}, so no whole-image prediction is left to guide "
            "a full-resolution stage: train 3d_fullres for them (voxseg train -c 3d_fullres)"
        )
    elif labels_problem is not None:
        record["why"] += f"; no full-resolution stage: {labels_problem}"
    else:
        record["stage"] = True
        record["why"] += (
            f"; a full-resolution stage ({SMALL_STAGE!r}: the image plus the {coarse} "
            "prediction of the other classes, most patches centred on the small objects) "
            "is trained for them and writes them over the whole-image prediction"
        )
    return record


@dataclass
class AutoState:
    """Seconds spent by earlier (interrupted) runs of the same ``auto`` command."""

    budget: float
    spent: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)


def choose_runs(
    configurations: list[str], spatial_dims: int, device_type: str, train_seconds: float
) -> AutoPlan:
    """The configurations and folds for ``train_seconds`` of training (the rules above)."""

    def has(name: str) -> bool:
        return name in configurations

    if spatial_dims == 2 or not (has("3d_fullres") or has("3d_lowres")):
        chosen = ["2d"] if has("2d") else configurations[:1]
    elif device_type == "cpu":
        chosen = ["3d_lowres"] if has("3d_lowres") else ["3d_fullres"]
        if has("3d_lowres") and has("3d_fullres") and train_seconds >= CPU_FULLRES_MIN_SECONDS:
            chosen.append("3d_fullres")
    else:
        chosen = ["3d_fullres"] if has("3d_fullres") else ["3d_lowres"]
        for extra in ("2d", "3d_lowres"):
            if has(extra) and extra not in chosen:
                if train_seconds / (len(chosen) + 1) >= GPU_EXTRA_MIN_SECONDS:
                    chosen.append(extra)
    if train_seconds / (len(chosen) * NUM_FOLDS) >= CV_MIN_RUN_SECONDS:
        folds = [str(k) for k in range(NUM_FOLDS)]
        validation = f"{NUM_FOLDS}-fold cross-validation"
    else:
        folds = ["0"]
        validation = (
            "a held-out split of the training cases (fold 0 of splits.json): the budget "
            f"does not allow {NUM_FOLDS} runs of {format_duration(CV_MIN_RUN_SECONDS)} per "
            "configuration"
        )
    return AutoPlan(chosen, folds, validation)


def _selection_reserve(budget: float, configurations: int = 1) -> float:
    return configurations * (SELECTION_RESERVE[0] + SELECTION_RESERVE[1] * budget)


def run_auto(
    dataset: str | os.PathLike[str],
    budget_seconds: float,
    *,
    device: str = "auto",
    home: str | os.PathLike[str] | None = None,
    num_processes: int | None = None,
    log: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Path:
    """Run the whole flow within ``budget_seconds``; return the ``auto`` model folder.

    Each step is said through ``log`` (default: this module's logger, at INFO)."""
    from voxseg.data import Dataset, ensure_valid
    from voxseg.data.fingerprint import load_or_compute_fingerprint
    from voxseg.devices import pick_device
    from voxseg.pipelines.recipes import small_stage_unsupported
    from voxseg.planning import PlannerOptions, plan_dataset, read_plans, write_plans
    from voxseg.planning.plans import plans_path
    from voxseg.preprocessing import preprocess_dataset
    from voxseg.workspace import Workspace

    log = log or logger.info
    started = clock()
    num_processes = num_processes or max(1, min(4, os.cpu_count() or 1))
    ws = Workspace.from_env(home).ensure()
    root = ws.dataset_dir(dataset)
    ds = Dataset(root)
    name = ds.name
    out = ws.models / name / AUTO_MODEL
    out.mkdir(parents=True, exist_ok=True)
    state = _load_state(out / AUTO_STATE, budget_seconds)

    def spent() -> float:
        return state.spent + clock() - started

    def save_state(step: str) -> None:
        state.steps[step] = round(spent(), 1)
        write_json(
            out / AUTO_STATE,
            {"budget": state.budget, "spent": round(spent(), 1), "steps": state.steps},
        )

    if state.spent:
        log(f"resuming: {format_duration(state.spent)} of {format_duration(state.budget)} spent")
    torch_device = pick_device(device)
    kind = "cpu" if torch_device.type == "cpu" else "cuda"
    log(f"dataset {name} ({root}); device {torch_device}; budget {format_duration(state.budget)}")

    ensure_valid(root, num_processes=num_processes)
    save_state("check")
    pre = ws.preprocessed_dataset_dir(name)
    fingerprint = load_or_compute_fingerprint(ds, pre, num_processes=num_processes)
    plan_file = plans_path(pre, AUTO_MODEL)
    if plan_file.is_file() and read_plans(pre, AUTO_MODEL).device == kind:
        plans = read_plans(pre, AUTO_MODEL)
    else:
        # a CPU plan's whole-image stage is sized for the training time (CpuStrategy.lowres_budget)
        training = max(1.0, state.budget - spent() - _selection_reserve(state.budget))
        options = PlannerOptions(plan_name=AUTO_MODEL, device=kind, training_seconds=training)
        plans = plan_dataset(fingerprint, ds.info, options)
        write_plans(plans, pre)
    save_state("plan")
    dims = 3 if any(c.spatial_dims == 3 for c in plans.configurations.values()) else 2
    left = state.budget - spent()
    # preprocessing is not yet done: plan the runs on the budget after a first estimate of it
    auto = choose_runs(
        list(plans.configurations), dims, kind, max(0.0, left - _selection_reserve(state.budget))
    )
    reserve = _selection_reserve(state.budget, len(auto.configurations))
    log(f"training {', '.join(auto.configurations)}; validation: {auto.validation}")
    small = small_structure_rule(
        fingerprint, plans, auto.configurations, small_stage_unsupported(ds)
    )
    log(f"small structures: {small['why']}")
    for cfg_name in auto.configurations:
        source = plans.configuration(cfg_name).data_from
        preprocess_dataset(
            ds,
            plans,
            source,
            ws.preprocessed_dir(name, AUTO_MODEL, source),
            num_processes=num_processes,
        )
    (out / PIPELINE_SPEC).unlink(missing_ok=True)
    prepared = None
    if small["stage"]:
        from voxseg.pipelines.recipes import small_structures
        from voxseg.pipelines.spec import write_spec
        from voxseg.pipelines.train import prepare_stage

        values = [c["value"] for c in small["classes"]]
        inside = {c["value"]: c["inside"] for c in small["classes"] if c["inside"] is not None}
        spec = small_structures(
            ds, values, whole_configuration=auto.configurations[0], device=kind, inside=inside
        )
        write_spec(spec, out)
        log(f"preparing the {SMALL_STAGE} stage's data (work folder {out / 'work'})")
        prepared = prepare_stage(out, SMALL_STAGE, root, device=torch_device.type)
        if prepared.config.sampling.paste is not None:
            pasted = (
                f"the {SMALL_STAGE} stage also trains on its objects copied to other places "
                "inside their host (sampling.paste)"
            )
            small["why"] += f"; {pasted}"
            log(pasted)
    save_state("preprocess")

    runs = [(c, f) for c in auto.configurations for f in auto.folds]
    if prepared is not None:
        runs.append((SMALL_STAGE, "0"))
    trained: list[dict[str, Any]] = []
    for i, (cfg_name, fold) in enumerate(runs):
        share = (state.budget - spent() - reserve) / (len(runs) - i)
        if cfg_name == SMALL_STAGE:
            run = _small_stage_run(prepared)
        else:
            run = _configuration_run(ws, root, cfg_name, fold)
        trained.append(_budgeted_run(run, share, state.budget, torch_device.type, log, clock))
        save_state(f"train {cfg_name} fold {fold}")

    selection = _select(name, auto, home)
    folder = _write_model_folder(ws, name, selection, out)
    if prepared is not None:
        from voxseg.pipelines.spec import stage_dir
        from voxseg.pipelines.train import install_model

        _write_model_folder(ws, name, selection, stage_dir(out, WHOLE_STAGE))
        install_model(prepared.model_dir, stage_dir(out, SMALL_STAGE))
    summary = {
        "dataset": name,
        "dataset_path": str(root),
        "device": str(torch_device),
        "budget_seconds": state.budget,
        "spent_seconds": round(spent(), 1),
        "steps_seconds": state.steps,
        "configurations": auto.configurations,
        "folds": auto.folds,
        "validation": auto.validation,
        "small_structures": small,
        "recipe": RECIPE,
        "runs": trained,
        "ranking": [c.to_dict() for c in selection.ranking],
        "winner": selection.best.name,
        "why": _why(selection, auto, trained if prepared is not None else []),
        "postprocessing": selection.postprocessing,
        "validation_dice_postprocessed": selection.postprocessed_dice,
        "predict": predict_command(folder),
    }
    save_state("select")
    summary["spent_seconds"] = round(spent(), 1)
    write_json(folder / SUMMARY, summary)
    return folder


def predict_command(folder: Path) -> str:
    return f"voxseg predict -i INPUT_FOLDER -o OUTPUT_FOLDER -m {shlex.quote(str(folder))}"


def _load_state(path: Path, budget: float) -> AutoState:
    if not path.is_file():
        return AutoState(budget)
    saved = read_json(path)
    return AutoState(budget, float(saved.get("spent", 0.0)), dict(saved.get("steps", {})))


@dataclass(frozen=True)
class _Run:
    """One training run of ``voxseg auto``: a configuration's fold, or the small stage's."""

    what: str  # its name in the log
    config: Any
    fold: str
    fold_dir: Path
    home: Path
    record: dict[str, Any]  # what the summary says of it besides its figures


def _configuration_run(ws: Any, root: Path, cfg_name: str, fold: str) -> _Run:
    """A configuration's fold, trained as model ``auto_<configuration>`` of the ``auto`` plan."""
    from voxseg.training import ModelConfig

    model = RUN_PREFIX + cfg_name
    fold_dir = ws.model_dir(root.name, AUTO_MODEL, model, fold)
    config = ModelConfig(
        dataset=root.name,
        dataset_path=str(root),
        plan=AUTO_MODEL,
        configuration=cfg_name,
        model_name=model,
    )
    record = {"configuration": cfg_name, "fold": fold, "model": str(fold_dir.parent)}
    return _Run(cfg_name, config, fold, fold_dir, ws.root, record)


def _small_stage_run(prepared: Any) -> _Run:
    """The small-structure stage on its prepared data (one fold, ``0``)."""
    fold_dir = ModelLayout(prepared.model_dir).fold_dir("0")
    record = {"configuration": SMALL_STAGE, "fold": "0", "model": str(prepared.model_dir)}
    return _Run(f"{SMALL_STAGE} stage", prepared.config, "0", fold_dir, prepared.home, record)


def _budgeted_run(
    run: _Run,
    seconds: float,
    budget: float,
    device_type: str,
    log: Callable[[str], None],
    clock: Callable[[], float],
) -> dict[str, Any]:
    """Train ``run`` with the ``adamw`` recipe in ``seconds`` (or resume from its last
    checkpoint, or skip it when finished); its record with its time and figures."""
    from voxseg.config import apply_overrides, load_model
    from voxseg.training import ModelConfig, apply_recipe, train_fold

    what, fold, fold_dir = run.what, run.fold, run.fold_dir
    if (fold_dir / FINAL_WEIGHTS).is_file() and (fold_dir / VALIDATION / SUMMARY).is_file():
        log(f"{what} fold {fold}: already trained")
        return {**run.record, **_run_figures(fold_dir)}
    resume = (fold_dir / CHECKPOINT_LAST).is_file()
    if resume:
        cfg = load_model(ModelConfig, fold_dir / CONFIG)
        log(f"{what} fold {fold}: resuming")
    else:
        if seconds < MIN_RUN_FRACTION * budget:
            seconds = MIN_RUN_FRACTION * budget
            log(
                f"warning: the budget is almost spent before training {what} fold {fold}; "
                f"it gets {format_duration(seconds)} anyway (the run will end late; give a "
                "larger --time-budget)"
            )
        cfg = apply_overrides(
            apply_recipe(run.config, RECIPE),
            [
                f"training.time_budget={max(seconds, 1.0):.1f}",
                "training.iterations_per_epoch=auto",
                f"training.device={device_type}",
            ],
        )
        log(f"{what} fold {fold}: training for {format_duration(seconds)}")
    tic = clock()
    train_fold(cfg, fold, home=run.home, resume=resume, force=not resume)
    return {**run.record, "seconds": round(clock() - tic, 1), **_run_figures(fold_dir)}


def _run_figures(fold_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if (fold_dir / BUDGET).is_file():
        out["budget"] = read_json(fold_dir / BUDGET)
    summary = fold_dir / VALIDATION / SUMMARY
    if summary.is_file():
        out["validation_foreground_dice"] = read_json(summary)["foreground_mean"].get("dice")
    return out


def _select(name: str, auto: AutoPlan, home: Any) -> Any:
    from voxseg.pipelines.selection import select_models

    return select_models(
        name,
        plan=AUTO_MODEL,
        models=[RUN_PREFIX + c for c in auto.configurations],
        folds=auto.folds,
        ensembles=False,
        postprocess=True,
        home=home,
    )


def _write_model_folder(ws: Any, name: str, selection: Any, out: Path) -> Path:
    """Copy the winner into ``models/<dataset>/auto/`` as a plain model folder (weights are
    hard-linked where the file system allows) with the chosen post-processing."""
    best, layout = ModelLayout(selection.best.members[0].folder), ModelLayout(out)
    out.mkdir(parents=True, exist_ok=True)
    for item in (CONFIG, PLANS, DATASET):
        shutil.copyfile(best.root / item, out / item)
    for fold in selection.best.folds:
        src, dst = best.fold_dir(fold), layout.fold_dir(fold)
        dst.mkdir(parents=True, exist_ok=True)
        for path in src.iterdir():
            if path.is_file() and not path.name.startswith("checkpoint_"):
                target = dst / path.name
                target.unlink(missing_ok=True)
                if path.name == FINAL_WEIGHTS:
                    try:
                        os.link(path, target)
                        continue
                    except OSError:
                        pass
                shutil.copyfile(path, target)
    pp = layout.postprocessing
    pp.unlink(missing_ok=True)
    if selection.postprocessing_file is not None and selection.postprocessing_file.is_file():
        shutil.copyfile(selection.postprocessing_file, pp)
    return out


def _why(selection: Any, auto: AutoPlan, runs: list[dict[str, Any]]) -> str:
    best = selection.best
    text = (
        f"{best.name} has the best foreground mean Dice on {auto.validation.split(':')[0]} "
        f"({best.foreground_dice:.3f} over {best.num_cases} cases)"
    )
    if len(selection.ranking) > 1:
        second = selection.ranking[1]
        text += f"; next: {second.name} {second.foreground_dice:.3f}"
    if selection.postprocessing:
        text += f"; post-processing raises it to {selection.postprocessed_dice:.3f}"
    for run in runs:
        if run["configuration"] == SMALL_STAGE:
            dice = run.get("validation_foreground_dice")
            text += f"; the {SMALL_STAGE} stage adds the small classes at full resolution" + (
                ""
                if dice is None
                else f" (validation Dice {dice:.3f}, given ground-truth context channels)"
            )
    return text
