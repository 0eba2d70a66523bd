"""Train a pipeline stage by stage with voxseg's own flow.

For each stage: write its derived raw dataset (``work/raw/<stage>``: the stage's inputs and
remapped labels, with the source dataset's folds), plan it (the stage's options; Nyúl
landmarks learned on its training images when asked), preprocess, train the folds, and copy
the model folder into ``stages/<stage>``. Training inputs that depend on an earlier stage
come from that stage's *labels* or, with ``train_from="predictions"``, from its
cross-validated predictions (each case predicted by the fold that did not train on it).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxseg.augment.mask import MASK_AUGMENTATION
from voxseg.config import apply_overrides, read_json, write_json
from voxseg.data import Dataset
from voxseg.data.dataset import write_dataset_json
from voxseg.errors import VoxsegError
from voxseg.io import Image, read_image, write_image
from voxseg.modelfolder import CHECKPOINT_LAST, CONFIG, SNAPSHOTS, ModelLayout
from voxseg.pipelines.derive import derive, stage_label_map
from voxseg.pipelines.spec import (
    CenterlineCropInput,
    CenterlinePatchesInput,
    FullInput,
    PipelineSpec,
    PreviousPredictionInput,
    StageSpec,
    read_spec,
    stage_dir,
    work_dir,
)
from voxseg.sampling.paste import PasteConfig

log = logging.getLogger(__name__)

PLAN_NAME = "pipeline"
NYUL_SCHEME = "nyul"
HEATMAP_LOSS = "heatmap"
EXTRA_CHANNEL = "noNorm"

SourceFn = Callable[[str, Image, np.ndarray | None], dict[str, np.ndarray]]


# --------------------------------------------------------------------------- sources
def label_sources(spec: PipelineSpec, stage: StageSpec) -> SourceFn:
    """Earlier stages' outputs taken from the ground truth (their remapped labels)."""

    def sources(case_id: str, image: Image, label: np.ndarray | None) -> dict[str, np.ndarray]:
        if stage.source is None or label is None:
            return {}
        return {stage.source: stage_label_map(label, spec.stage(stage.source).labels)}

    return sources


def cross_validated_sources(
    pipeline_dir: Path, spec: PipelineSpec, stage: StageSpec, dataset: Dataset, device: str
) -> SourceFn:
    """Earlier stage's outputs predicted by the fold of that stage that held the case out."""
    from voxseg.data.splits import get_splits
    from voxseg.pipelines.predict import PipelineRunner

    source = spec.stage(stage.source)
    n_folds = min(source.plan.num_folds, len(dataset.case_ids("Tr")))
    splits = get_splits(dataset.root, num_folds=n_folds)
    fold_of = {c: str(k) for k, f in enumerate(splits) for c in f["val"]}
    missing = sorted(set(fold_of.values()) - set(source.folds))
    if missing:
        raise VoxsegError(
            f"stage {stage.name!r} trains on cross-validated predictions of {source.name!r}, "
            f"but {source.name!r} has no fold(s) {', '.join(missing)}; set its folds to "
            f"{sorted(set(fold_of.values()))}"
        )
    runners: dict[str, PipelineRunner] = {}

    def sources(case_id: str, image: Image, label: np.ndarray | None) -> dict[str, np.ndarray]:
        fold = fold_of[case_id]
        if fold not in runners:
            runners[fold] = PipelineRunner(  # the source stage's own prediction settings
                pipeline_dir, device=device, folds={source.name: [fold]}, spec=spec
            )
        result = runners[fold].predict(image, case_id=case_id, until=source.name)
        return {source.name: result.stages[source.name].array}

    return sources


# --------------------------------------------------------------------------- dataset
def build_stage_dataset(
    spec: PipelineSpec,
    stage: StageSpec,
    dataset: Dataset,
    folder: Path,
    sources: SourceFn,
    *,
    cases: list[str] | None = None,
) -> Dataset:
    """Write the stage's derived raw dataset into ``folder`` (finished cases are kept);
    ``cases`` restricts it to some training cases (fine-tuning keeps others held out)."""
    from voxseg.data.splits import get_splits

    if isinstance(stage.input, CenterlinePatchesInput):
        from voxseg.pipelines.vessels import build_patch_dataset

        return build_patch_dataset(stage, dataset, folder, cases=cases)
    n_img = dataset.info.num_channels
    channels = dict(dataset.info.channel_names)
    if isinstance(stage.input, PreviousPredictionInput):
        source_labels = len(spec.stage(stage.input.source).labels)
        for i in range(source_labels - len(set(stage.input.fill))):
            channels[str(n_img + i)] = EXTRA_CHANNEL
    ending = ".nii.gz"
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    counts = {s.name: len(s.labels) for s in spec.stages}
    kept = []
    for case in dataset.cases("Tr"):
        if cases is not None and case.case_id not in cases:
            continue
        label_path = folder / "labelsTr" / f"{case.case_id}{ending}"
        if label_path.is_file():
            kept.append(case.case_id)
            continue
        if case.label is None:
            continue
        image, label_img = dataset.load_case(case)
        label = np.asarray(label_img.array)
        stage_label = stage_label_map(label, stage.labels)
        derived = derive(stage, image, sources(case.case_id, image, label), stage_label, counts)
        if derived is None:
            log.info(f"{case.case_id}: stage {stage.source!r} is empty, case left out")
            continue
        for c in range(derived.image.num_channels):
            write_image(
                derived.image.channel(c),
                folder / "imagesTr" / f"{case.case_id}_{c:04d}{ending}",
            )
        write_image(
            Image.from_geometry(derived.label.astype(np.uint8), derived.image.geometry), label_path
        )
        kept.append(case.case_id)
    if not kept:
        raise VoxsegError(f"{dataset.root}: no training case gives stage {stage.name!r} an input")
    write_dataset_json(folder, channels, stage.stage_labels, len(kept), ending)
    if stage.folds != ["all"] or (dataset.root / "splits.json").is_file():
        n_folds = min(stage.plan.num_folds, len(dataset.case_ids("Tr")))
        keep = set(kept)
        splits = [
            {k: [c for c in f[k] if c in keep] for k in ("train", "val")}
            for f in get_splits(dataset.root, num_folds=n_folds)
        ]
        write_json(folder / "splits.json", splits)
    return Dataset(folder)


# --------------------------------------------------------------------------- plan
def _shape_spacing(dataset: Dataset, orientation: str | None, shape: list[int]) -> list[float]:
    """The spacing that brings the median (reoriented) case extent to ``shape``."""
    from voxseg.spatial import reorient

    extents = []
    for case in dataset.cases("Tr"):
        img = read_image(case.images[0])
        if orientation:
            img, _ = reorient(img, orientation)
        extents.append(np.asarray(img.shape) * np.asarray(img.spacing))
    return [float(v) for v in np.median(extents, axis=0) / np.asarray(shape)]


def fit_nyul_for(dataset: Dataset, channels: list[int]) -> dict[int, dict]:
    """Nyúl landmarks per channel from the dataset's training images (nonzero voxels)."""
    from voxseg.normalization import fit_nyul

    out = {}
    for c in channels:
        arrays = (read_image(case.images[c]).array for case in dataset.cases("Tr"))
        out[c] = fit_nyul(arrays)
    return out


def make_stage_plans(stage: StageSpec, dataset: Dataset, home: Path):
    """Plan the stage's derived dataset as its spec says; returns the written plans."""
    from voxseg.data.fingerprint import load_or_compute_fingerprint
    from voxseg.planning import PlannerOptions, default_device, plan_dataset, write_plans
    from voxseg.planning.plans import ChannelNormalization
    from voxseg.workspace import Workspace

    ws = Workspace.from_env(home)
    out_dir = ws.preprocessed_dataset_dir(dataset.name)
    fingerprint = load_or_compute_fingerprint(dataset, out_dir)
    ps = stage.plan
    orientation = stage.input.orientation if isinstance(stage.input, FullInput) else None
    spacing = ps.spacing
    if spacing is None and isinstance(stage.input, FullInput):
        spacing = stage.input.spacing
        if stage.input.shape is not None:
            spacing = _shape_spacing(dataset, orientation, stage.input.shape)
    if spacing is None and isinstance(stage.input, CenterlineCropInput):
        spacing = stage.input.spacing
    patch = ps.patch_size
    if patch is None and isinstance(stage.input, FullInput) and stage.input.shape is not None:
        patch = stage.input.shape
    options = PlannerOptions(
        plan_name=PLAN_NAME,
        device=ps.device or default_device(),
        cpu_gflops_per_iteration=ps.cpu_gflops_per_iteration,
        orientation=orientation,
        spacing=spacing,
        patch_size=patch,
    )
    if isinstance(stage.input, CenterlinePatchesInput):
        from voxseg.pipelines.vessels import local_model_options

        options, note = local_model_options(
            fingerprint, dataset.info, options, dataset.root, stage.input.patch_percentile
        )
        if note is not None:
            log.info(f"stage {stage.name}: {note}")
    floor = stage.input.min_spacing if isinstance(stage.input, FullInput) else None
    if spacing is None and floor is not None:  # the plan's spacing, coarsened to the floor
        own = plan_dataset(fingerprint, dataset.info, options).configurations["3d_fullres"]
        if len(floor) != len(own.spacing):
            raise VoxsegError(
                f"stage {stage.name!r}: min_spacing {floor} needs {len(own.spacing)} values"
            )
        coarse = [max(float(o), float(f)) for o, f in zip(own.spacing, floor, strict=True)]
        options = options.model_copy(update={"spacing": coarse})
    plans = plan_dataset(fingerprint, dataset.info, options)
    if ps.configuration not in plans.configurations:
        if ps.configuration != "3d_lowres" or "3d_fullres" not in plans.configurations:
            raise VoxsegError(
                f"stage {stage.name!r}: the plan of {dataset.name} has no configuration "
                f"{ps.configuration!r} (planned: {', '.join(plans.configurations)})"
            )
        full = plans.configurations["3d_fullres"]
        coarse = [2.0 * s for s in full.spacing]
        low = plan_dataset(
            fingerprint, dataset.info, options.model_copy(update={"spacing": coarse})
        ).configurations["3d_fullres"]
        low = low.model_copy(update={"name": "3d_lowres", "data_from": "3d_lowres"})
        low.explanations["spacing"] = (
            "pipeline: nnU-Net planned no 3d_lowres (the fullres patch covers enough of the "
            "image); this stage uses twice the 3d_fullres spacing instead"
        )
        plans.configurations["3d_lowres"] = low
    if ps.normalization == "nyul":
        chans = [n.channel for n in plans.normalization if n.scheme != "none"]
        learned = fit_nyul_for(dataset, chans)
        plans.normalization = [
            ChannelNormalization(
                channel=n.channel,
                channel_name=n.channel_name,
                scheme=NYUL_SCHEME,
                params=learned[n.channel],
                rule="pipeline: Nyúl percentile-landmark standardisation learned on the "
                "stage's training images",
            )
            if n.channel in learned
            else n
            for n in plans.normalization
        ]
    write_plans(plans, out_dir)
    return plans


# --------------------------------------------------------------------------- model
def paste_settings(spec: PipelineSpec, stage: StageSpec, n_img: int) -> dict[str, Any] | None:
    """``sampling.paste`` for a stage with ``paste``: its objects go inside the previous-
    prediction channel of their ``inside`` host, only the image channels carry values. One
    host per stage (the classes inside it are pasted); None without a host channel."""
    if not stage.paste or not isinstance(stage.input, PreviousPredictionInput):
        return None
    source = spec.stage(stage.input.source)
    kept = [v for v in range(1, len(source.labels) + 1) if v not in stage.input.fill]
    hosts = {list(source.labels).index(host) + 1 for host in stage.inside.values()}
    if len(hosts) != 1 or (host := hosts.pop()) not in kept:
        return None
    return {
        "classes": [stage.stage_labels[name] for name in stage.inside],
        "host_channel": n_img + kept.index(host),
        "channels": list(range(n_img)),
    }


def stage_model_config(
    stage: StageSpec, dataset: Dataset, device: str | None = None, spec: PipelineSpec | None = None
):
    """The stage's ``ModelConfig``: heatmap loss, mask augmentation, copy-paste (needs the
    pipeline ``spec``) and its settings."""
    from voxseg.training import ModelConfig

    cfg = ModelConfig(
        dataset=dataset.name,
        plan=PLAN_NAME,
        configuration=stage.plan.configuration,
        model_name=stage.name,
    )
    overrides: list[str] = []
    if stage.model == "heatmap":
        if len(stage.labels) != 1:
            raise VoxsegError(f"heatmap stage {stage.name!r} needs exactly one label")
        loss = {"name": HEATMAP_LOSS, "sigma": stage.heatmap_sigma, "kind": stage.heatmap_loss}
        cfg = ModelConfig.model_validate({**cfg.model_dump(mode="json"), "loss": loss})
        overrides.append("network.deep_supervision=false")
    n_img = sum(1 for v in dataset.info.channel_names.values() if v != EXTRA_CHANNEL)
    if stage.mask_augmentation and isinstance(stage.input, PreviousPredictionInput):
        extra = list(range(n_img, dataset.info.num_channels))
        aug = cfg.augmentation.model_copy(
            update={
                "intensity_order": [*cfg.augmentation.intensity_order, MASK_AUGMENTATION],
                "custom": {**cfg.augmentation.custom, MASK_AUGMENTATION: {"channels": extra}},
            }
        )
        cfg = cfg.model_copy(update={"augmentation": aug})
    paste = None if spec is None else paste_settings(spec, stage, n_img)
    if paste is not None:
        sampling = cfg.sampling.model_copy(update={"paste": PasteConfig(**paste)})
        cfg = cfg.model_copy(update={"sampling": sampling})
    if device is not None:
        overrides.append(f"training.device={device}")
    return apply_overrides(cfg, [*overrides, *stage.settings])


def install_model(model_dir: Path, target: Path) -> None:
    """Copy a trained model folder into the pipeline (without the resumable checkpoint).

    Each file is copied to a hidden temporary name beside its target and renamed, so a copy
    cut short leaves no half-written file under a final name (the next install copies it
    again)."""
    skip = shutil.ignore_patterns(CHECKPOINT_LAST, SNAPSHOTS)

    def copy(src: str, dst: str) -> str:
        dst_path = Path(dst)
        tmp = dst_path.with_name(f".{dst_path.name}.{os.getpid()}.tmp")
        try:
            shutil.copy2(src, tmp)
            os.replace(tmp, dst_path)
        finally:
            tmp.unlink(missing_ok=True)
        return dst

    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, target, dirs_exist_ok=True, ignore=skip, copy_function=copy)


@dataclass
class PreparedStage:
    """A stage ready to train: its derived dataset (planned and preprocessed), its model
    config, the training workspace and the model folder training writes."""

    dataset: Dataset
    config: Any
    home: Path
    model_dir: Path


def prepare_stage(
    pipeline_dir: str | os.PathLike[str],
    stage_name: str,
    dataset: str | os.PathLike[str],
    *,
    device: str | None = None,
    work: str | os.PathLike[str] | None = None,
    plans_from: str | os.PathLike[str] | None = None,
    cases: list[str] | None = None,
) -> PreparedStage:
    """Derive, plan and preprocess one stage's training data (finished cases are kept)."""
    from voxseg.preprocessing import preprocess_dataset
    from voxseg.workspace import Workspace

    pipeline_dir = Path(pipeline_dir)
    spec = read_spec(pipeline_dir)
    stage = spec.stage(stage_name)
    source_ds = Dataset(dataset)
    home = Path(work) if work is not None else work_dir(pipeline_dir)
    ws = Workspace.from_env(home)
    if stage.source is not None and stage.train_from == "predictions":
        sources = cross_validated_sources(pipeline_dir, spec, stage, source_ds, device or "auto")
    else:
        sources = label_sources(spec, stage)
    log.info(f"stage {stage.name}: deriving its training data")
    ds = build_stage_dataset(spec, stage, source_ds, ws.raw / stage.name, sources, cases=cases)
    if plans_from is not None:
        from voxseg.config import load_model
        from voxseg.planning import Plans, write_plans

        plans = load_model(Plans, plans_from).model_copy(update={"dataset": ds.name})
        write_plans(plans, ws.preprocessed_dataset_dir(ds.name))
    else:
        plans = make_stage_plans(stage, ds, home)
    cfg_plan = plans.configuration(stage.plan.configuration)
    preprocess_dataset(
        ds,
        plans,
        stage.plan.configuration,
        ws.preprocessed_dir(ds.name, PLAN_NAME, cfg_plan.data_from),
    )
    cfg = stage_model_config(stage, ds, device, spec)
    return PreparedStage(ds, cfg, home, ws.model_dir(ds.name, PLAN_NAME, stage.name))


def train_stage(
    pipeline_dir: str | os.PathLike[str],
    stage_name: str,
    dataset: str | os.PathLike[str],
    *,
    device: str | None = None,
    force: bool = False,
    pretrained: str | os.PathLike[str] | None = None,
    work: str | os.PathLike[str] | None = None,
    install_to: str | os.PathLike[str] | None = None,
    plans_from: str | os.PathLike[str] | None = None,
    cases: list[str] | None = None,
) -> Path:
    """Train one stage on ``dataset`` and install it in the pipeline; returns its folder.

    Fine-tuning passes ``pretrained`` (the stage's model folder), ``plans_from`` (its
    ``plans.json``, so the network and normalisation stay those the weights were trained
    with), a separate ``work`` folder and ``install_to``.
    """
    from voxseg.training import train_fold

    pipeline_dir = Path(pipeline_dir)
    stage = read_spec(pipeline_dir).stage(stage_name)
    prepared = prepare_stage(
        pipeline_dir,
        stage_name,
        dataset,
        device=device,
        work=work,
        plans_from=plans_from,
        cases=cases,
    )
    for fold in stage.folds:
        layout = ModelLayout(prepared.model_dir)
        if layout.weights(fold).is_file() and not force:
            log.info(f"stage {stage.name}: fold {fold} already trained")
            continue
        resume = not force and _resumable(prepared.config, fold, prepared.home)
        verb = "resuming fold" if resume else "training fold"
        log.info(f"stage {stage.name}: {verb} {fold}")
        train_fold(
            prepared.config,
            fold,
            home=prepared.home,
            resume=resume,
            force=not resume,
            pretrained=None if resume else pretrained,
        )
    target = Path(install_to) if install_to is not None else stage_dir(pipeline_dir, stage.name)
    install_model(prepared.model_dir, target)
    return target


def _resumable(config: Any, fold: int | str, home: Path) -> bool:
    """Whether an interrupted run of this fold can go on: its last checkpoint exists and it
    was started with the stage's present settings, as training resolves them (else the
    fold starts again)."""
    from voxseg.training import ModelConfig
    from voxseg.training.setup import TrainingSetup
    from voxseg.training.trainer import config_hash

    setup = TrainingSetup.create(config, fold, home=home)
    saved = setup.fold_dir / CONFIG
    if not (setup.fold_dir / CHECKPOINT_LAST).is_file() or not saved.is_file():
        return False
    try:
        before = ModelConfig.model_validate(read_json(saved))
    except (VoxsegError, ValueError):
        return False
    return config_hash(before) == config_hash(setup.config)


def train_pipeline(
    pipeline_dir: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    *,
    stages: list[str] | None = None,
    device: str | None = None,
    force: bool = False,
) -> list[Path]:
    """Train the stages (all, or those named) in pipeline order."""
    spec = read_spec(pipeline_dir)
    names = [s.name for s in spec.stages]
    for n in stages or []:
        spec.stage(n)
    chosen = [n for n in names if not stages or n in stages]
    return [train_stage(pipeline_dir, n, dataset, device=device, force=force) for n in chosen]
