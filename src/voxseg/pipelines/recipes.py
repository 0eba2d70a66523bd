"""Ready-made pipelines: ``cord-lesion`` (SCT's deepseg lesion), ``spine`` (heatmap → crop →
segment), ``cascade`` (nnU-Net's ``3d_lowres`` → ``3d_cascade_fullres``) and ``vessels``
(SeqSeg: a local model on centerline patches, tracing from seeds)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from voxseg.data import Dataset
from voxseg.errors import VoxsegError
from voxseg.pipelines.spec import (
    BBoxCropInput,
    CenterlineCropInput,
    CenterlinePatchesInput,
    FullInput,
    PipelineSpec,
    PlanSettings,
    PreviousPredictionInput,
    StageSpec,
    write_spec,
)

RECIPES = ("cord-lesion", "spine", "cascade", "vessels")
#: The lesion stage centres 3 of 4 patches on a lesion (nnU-Net: 1 of 3): lesions fill
#: < 1 % of the cord window, and on ``voxseg synth cord`` the stage learned nothing in
#: 1 000 iterations at 1/3, while at 3/4 its validation Dice left 0 after ≈ 1 300.
LESION_SETTINGS = ("sampling.foreground_fraction=0.75",)
#: The cord-lesion recipe's cord (localisation) stage: its grid is at least this coarse (mm).
CORD_INPLANE_SPACING = 1.0
#: The cord is one tube: the cord stage keeps its largest connected component, so that a
#: false positive elsewhere in a wide field of view cannot pull the centerline (a per-slice
#: centre of mass) and the lesion windows away from the cord.
CORD_SETTINGS = ('postprocessing=[{"name": "keep_largest_component"}]',)
#: The spine recipe's whole-image heatmap grid (z, y, x) per device.
HEATMAP_SHAPE_GPU = (128, 64, 64)
HEATMAP_SHAPE_CPU = (64, 32, 32)


def _foreground(ds: Dataset) -> dict[str, int]:
    if ds.info.has_regions:
        raise VoxsegError(f"{ds.root}: region-based labels are not supported by the recipes")
    return {k: int(v) for k, v in ds.info.foreground_labels.items()}


def _spec(ds: Dataset, recipe: str, labels: dict[str, int], **fields: Any) -> PipelineSpec:
    """A ``recipe`` pipeline for ``ds``, named after both, with ``labels`` and background 0."""
    return PipelineSpec(
        name=f"{ds.name}-{recipe}",
        recipe=recipe,
        dataset=str(ds.root),
        channel_names=dict(ds.info.channel_names),
        labels={"background": 0, **labels},
        **fields,
    )


def _label(labels: dict[str, int], name: str, ds: Dataset) -> int:
    if name not in labels:
        raise VoxsegError(
            f"{ds.root / 'dataset.json'}: the recipe needs a label named {name!r}; labels: "
            f"{', '.join(labels)} (for synthetic data: 'voxseg synth cord --target both')"
        )
    return labels[name]


def cord_lesion(
    ds: Dataset,
    *,
    spacing: float = 0.5,
    window: int = 48,
    cord_spacing: float | None = CORD_INPLANE_SPACING,
    device: str | None = None,
    patch_size: list[int] | None = None,
    cord_patch_size: list[int] | None = None,
    settings: list[str] | None = None,
) -> PipelineSpec:
    """Cord (RPI, the plan's spacing coarsened to at least ``cord_spacing`` mm) → centerline
    → 48×48 window at 0.5 mm along it → Nyúl standardisation → lesions; both pasted back into
    the input geometry.

    The cord stage only has to place the window (24 mm wide at 0.5 mm around a cord about
    10 mm across), so it runs on a coarse grid: at 1 mm, a quarter of the in-plane voxels of
    a 0.5 mm acquisition; thick slices keep their spacing. ``cord_spacing=None`` keeps the
    plan's spacing.
    """
    labels = _foreground(ds)
    cord, lesion = _label(labels, "cord", ds), _label(labels, "lesion", ds)
    common = list(settings or [])
    return _spec(
        ds,
        "cord-lesion",
        {"cord": cord, "lesion": lesion},
        lesion_labels=["lesion"],
        stages=[
            StageSpec(
                name="cord",
                labels={"cord": [cord, lesion]},
                input=FullInput(
                    orientation="sct:RPI",
                    min_spacing=None if cord_spacing is None else [cord_spacing] * 3,
                ),
                plan=PlanSettings(device=device, patch_size=cord_patch_size),
                settings=[*CORD_SETTINGS, *common],
                output={"cord": cord},
            ),
            StageSpec(
                name="lesion",
                labels={"lesion": [lesion]},
                input=CenterlineCropInput(
                    source="cord", spacing=[spacing] * 3, window=[window, window]
                ),
                plan=PlanSettings(device=device, patch_size=patch_size, normalization="nyul"),
                settings=[*LESION_SETTINGS, *common],
                output={"lesion": lesion},
            ),
        ],
    )


def spine(
    ds: Dataset,
    *,
    heatmap_shape: list[int] | None = None,
    margin_mm: float = 10.0,
    device: str | None = None,
    patch_size: list[int] | None = None,
    settings: list[str] | None = None,
) -> PipelineSpec:
    """Heatmap of the spine on the whole image resized to ``heatmap_shape`` (z, y, x) at LPS
    → its box grown by ``margin_mm`` → vertebra segmentation inside the box.

    The default shape is the spine repo's 128×64×64 on a GPU and 64×32×32 on a CPU, where
    the whole-image heatmap network at 128×64×64 needs ≈ 23 GFLOP per iteration even at
    4 base features (8.5 s per iteration on 2 cores at 8): a box with a 10 mm margin does
    not need a finer localisation.
    """
    from voxseg.planning import default_device

    labels = _foreground(ds)
    on_cpu = (device or default_device()) == "cpu"
    shape = list(heatmap_shape or (HEATMAP_SHAPE_CPU if on_cpu else HEATMAP_SHAPE_GPU))
    common = list(settings or [])
    return _spec(
        ds,
        "spine",
        labels,
        stages=[
            StageSpec(
                name="locate",
                model="heatmap",
                labels={"spine": sorted(labels.values())},
                input=FullInput(orientation="LPS", shape=shape),
                plan=PlanSettings(device=device),
                settings=common,
            ),
            StageSpec(
                name="segment",
                labels={k: [v] for k, v in labels.items()},
                input=BBoxCropInput(source="locate", margin_mm=[margin_mm] * 3),
                plan=PlanSettings(device=device, patch_size=patch_size),
                settings=common,
                output={k: v for k, v in labels.items()},
            ),
        ],
    )


def cascade(
    ds: Dataset,
    *,
    num_folds: int = 5,
    device: str | None = None,
    patch_size: list[int] | None = None,
    settings: list[str] | None = None,
) -> PipelineSpec:
    """``3d_lowres`` (k folds) → ``3d_cascade_fullres`` trained on the lower stage's
    cross-validated predictions (one-hot channels, ovseg's mask augmentation)."""
    labels = _foreground(ds)
    folds = [str(k) for k in range(num_folds)]
    common = list(settings or [])
    stage_labels = {k: [v] for k, v in labels.items()}
    return _spec(
        ds,
        "cascade",
        labels,
        stages=[
            StageSpec(
                name="lowres",
                labels=stage_labels,
                input=FullInput(),
                plan=PlanSettings(
                    configuration="3d_lowres",
                    device=device,
                    patch_size=patch_size,
                    num_folds=num_folds,
                ),
                folds=folds,
                settings=common,
            ),
            StageSpec(
                name="fullres",
                labels=stage_labels,
                input=PreviousPredictionInput(source="lowres"),
                plan=PlanSettings(device=device, patch_size=patch_size, num_folds=num_folds),
                train_from="predictions",
                mask_augmentation=True,
                settings=common,
                output={k: k_v for k, k_v in labels.items()},
            ),
        ],
    )


def small_stage_unsupported(ds: Dataset) -> str | None:
    """Why :func:`small_structures` cannot be built for ``ds`` (None when it can): its first
    stage is a model trained on the dataset's own labels, so they must be plain values
    1..K (no regions)."""
    if ds.info.has_regions:
        return f"{ds.root / 'dataset.json'}: region-based labels"
    values = sorted(int(v) for v in ds.info.foreground_labels.values())
    if values != list(range(1, len(values) + 1)):
        return f"{ds.root / 'dataset.json'}: label values {values} are not 1..{len(values)}"
    return None


def small_structures(
    ds: Dataset,
    small: list[int],
    *,
    whole_configuration: str = "3d_lowres",
    device: str | None = None,
    settings: list[str] | None = None,
    inside: dict[int, int] | None = None,
    paste: bool = True,
) -> PipelineSpec:
    """A whole-image model of every class (``whole``, trained elsewhere on the dataset
    itself, e.g. by ``voxseg auto``) → a full-resolution stage for the ``small`` classes
    (``small``) that sees the image plus the whole stage's other classes as one-hot
    channels, the small classes in those channels filled with their surroundings (the whole
    stage is too coarse to find them, so ground truth must not show them either). The small
    stage trains on ground-truth channels with ovseg's mask augmentation and centres 3 of 4
    patches on a small object (``LESION_SETTINGS``); its classes are written over the whole
    stage's output. ``inside`` (small class value → host class value, from
    :func:`voxseg.planning.small.host_label`) keeps a small class's predicted objects only
    inside the whole stage's host class; with ``paste`` the small stage also trains on its
    objects copied to other places inside that host (:mod:`voxseg.sampling.paste`)."""
    reason = small_stage_unsupported(ds)
    if reason is not None:
        raise VoxsegError(f"{reason}: the small-structure pipeline needs labels 1..K")
    labels = dict(sorted(_foreground(ds).items(), key=lambda item: item[1]))
    unknown = sorted(set(small) - set(labels.values()))
    if unknown or not small:
        raise VoxsegError(f"{ds.root}: small classes {small} are not foreground labels {labels}")
    small_labels = {k: v for k, v in labels.items() if v in small}
    names = {v: k for k, v in labels.items()}
    hosts = {names[v]: names[h] for v, h in (inside or {}).items() if v in small and h in names}
    return _spec(
        ds,
        "small-structures",
        labels,
        lesion_labels=list(small_labels),
        stages=[
            StageSpec(
                name="whole",
                labels={k: [v] for k, v in labels.items()},
                input=FullInput(),
                plan=PlanSettings(configuration=whole_configuration, device=device),
                # the small classes come from the small stage only: on the coarse grid the
                # whole stage's rare guesses at them are false positives
                output={k: v for k, v in labels.items() if v not in small},
            ),
            StageSpec(
                name="small",
                labels={k: [v] for k, v in small_labels.items()},
                input=PreviousPredictionInput(source="whole", fill=sorted(small)),
                plan=PlanSettings(device=device),
                folds=["0"],
                mask_augmentation=True,
                settings=[*LESION_SETTINGS, *(settings or [])],
                output=dict(small_labels),
                inside=hosts,
                paste=paste,
            ),
        ],
    )


def vessels(
    ds: Dataset,
    *,
    device: str | None = None,
    patch_size: list[int] | None = None,
    patch_percentile: float = 90.0,
    sampler: dict | None = None,
    tracing: dict | None = None,
    settings: list[str] | None = None,
) -> PipelineSpec:
    """SeqSeg: centerline-guided patches of the training trees (``centerlines/`` or extracted
    from the masks) → a local model whose patch holds the ``patch_percentile`` of the sampled
    box sides (unless ``patch_size``) → tracing every new scan from its seed file."""
    labels = _foreground(ds)
    if "vessel" in labels:
        value = labels["vessel"]
    elif len(labels) == 1:
        value = next(iter(labels.values()))
    else:
        raise VoxsegError(
            f"{ds.root / 'dataset.json'}: the vessels recipe needs a label named 'vessel' or a "
            f"single foreground label; labels: {', '.join(labels)}"
        )
    return _spec(
        ds,
        "vessels",
        {"vessel": value},
        stages=[
            StageSpec(
                name="vessel",
                labels={"vessel": [value]},
                input=CenterlinePatchesInput(
                    sampler=dict(sampler or {}),
                    patch_percentile=patch_percentile,
                    tracing=dict(tracing or {}),
                ),
                plan=PlanSettings(device=device, patch_size=patch_size),
                settings=list(settings or []),
                output={"vessel": value},
            )
        ],
    )


def init_pipeline(
    recipe: str,
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    force: bool = False,
    **options,
) -> PipelineSpec:
    """Write ``pipeline.json`` of ``recipe`` for ``dataset`` into the folder ``out``."""
    builders = {
        "cord-lesion": cord_lesion,
        "spine": spine,
        "cascade": cascade,
        "vessels": vessels,
    }
    if recipe not in builders:
        raise VoxsegError(f"unknown recipe {recipe!r}; recipes: {', '.join(RECIPES)}")
    out = Path(out)
    if (out / "pipeline.json").exists() and not force:
        raise VoxsegError(f"{out / 'pipeline.json'} exists; use --force to replace it")
    spec = builders[recipe](Dataset(dataset), **options)
    write_spec(spec, out)
    return spec
