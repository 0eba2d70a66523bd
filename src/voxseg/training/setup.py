"""Everything a training run resolves before the loop starts: plan, data, folds, labels."""

from __future__ import annotations

import inspect
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from voxseg.config import write_json
from voxseg.data import Dataset
from voxseg.errors import VoxsegError
from voxseg.inference.validation import validate_fold
from voxseg.modelconfig import ModelConfig
from voxseg.modelfolder import ModelLayout
from voxseg.nets import Topology
from voxseg.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class TrainingSetup:
    """The resolved inputs of one fold's training."""

    config: ModelConfig
    fold: int | str
    dataset: Dataset
    plans: Any
    plan_config: Any
    plans_path: Path
    store: Any
    train_ids: list[str]
    val_ids: list[str]
    model_dir: Path
    sampling_extras: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def create(
        cls, config: ModelConfig, fold: int | str, *, home: str | os.PathLike[str] | None = None
    ) -> TrainingSetup:
        from voxseg.config import load_model
        from voxseg.data.splits import get_splits
        from voxseg.planning.plans import Plans
        from voxseg.preprocessing.store import PreprocessedStore

        ws = Workspace.from_env(home)
        dataset = Dataset(find_dataset(ws, config))
        name = dataset.name
        plans_path = ws.preprocessed_dataset_dir(name) / "plans" / f"{config.plan}.json"
        if not plans_path.is_file():
            raise VoxsegError(
                f"{plans_path}: no plan {config.plan!r}; run `voxseg plan {name}` first"
            )
        plans = load_model(Plans, plans_path)
        if config.configuration not in plans.configurations:
            raise VoxsegError(
                f"{plans_path}: no configuration {config.configuration!r}; planned: "
                f"{', '.join(plans.configurations)}"
            )
        plan_config = plans.configurations[config.configuration]
        config = _with_plan_batch_dice(config, plan_config.batch_dice)
        store = PreprocessedStore(ws.preprocessed_dir(name, config.plan, plan_config.data_from))
        cases = store.case_ids()
        if not cases:
            raise VoxsegError(
                f"{store.folder}: no preprocessed cases; run `voxseg preprocess {name} "
                f"--plan {config.plan} --config {plan_config.data_from}` first"
            )
        if fold == "all":
            train_ids, val_ids = cases, cases
        else:
            splits = get_splits(dataset.root)
            k = int(fold)
            if not 0 <= k < len(splits):
                raise VoxsegError(f"fold {k} does not exist: splits.json has {len(splits)} folds")
            train_ids = [c for c in splits[k]["train"] if c in cases]
            val_ids = [c for c in splits[k]["val"] if c in cases]
        model_dir = ws.model_dir(name, config.plan, config.model_name)
        return cls(
            config=config,
            fold=fold,
            dataset=dataset,
            plans=plans,
            plan_config=plan_config,
            plans_path=plans_path,
            store=store,
            train_ids=train_ids,
            val_ids=val_ids,
            model_dir=model_dir,
        )

    # ------------------------------------------------------------ derived values
    @property
    def fold_dir(self) -> Path:
        return ModelLayout(self.model_dir).fold_dir(self.fold)

    @property
    def topology(self) -> Topology:
        return self.plan_config.topology

    @property
    def patch_size(self) -> list[int]:
        return list(self.plan_config.patch_size)

    @property
    def batch_size(self) -> int:
        return self.config.training.batch_size or int(self.plan_config.batch_size)

    @property
    def dummy_2d(self) -> bool:
        """nnU-Net's rule: a 3D patch whose first axis is > 3× shorter than its longest is
        augmented in-plane only ("dummy 2D")."""
        patch = self.patch_size
        return len(patch) == 3 and max(patch) / patch[0] > 3

    @property
    def in_channels(self) -> int:
        return self.dataset.info.num_channels

    @property
    def ignore_label(self) -> int | None:
        return self.dataset.info.ignore_label

    @property
    def regions(self) -> list[list[int]] | None:
        """Region-based training: the label values making up each region (sigmoid outputs)."""
        return self.dataset.info.regions

    @property
    def region_class_order(self) -> list[int]:
        order = self.dataset.info.regions_class_order
        return [o - 1 for o in order] if order else list(range(len(self.regions or [])))

    @property
    def num_outputs(self) -> int:
        return self.dataset.info.num_outputs

    @property
    def class_names(self) -> list[str]:
        return self.dataset.info.class_names

    # ------------------------------------------------------------ model folder
    def write_model_files(self) -> None:
        """config.json, plans.json and dataset.json beside the weights (self-describing)."""
        for folder in (self.model_dir, self.fold_dir):
            folder.mkdir(parents=True, exist_ok=True)
            layout = ModelLayout(folder)
            write_json(layout.config, self.config)
            shutil.copyfile(self.plans_path, layout.plans)
            shutil.copyfile(self.dataset.root / "dataset.json", layout.dataset)

    def validate_fold(self, folder: Path, network: torch.nn.Module) -> None:
        """Predict the fold's full validation cases and write ``validation/summary.json``."""
        if self.fold == "all" or not self.val_ids:
            return
        validate_fold(self, folder, network)


def find_dataset(ws: Workspace, config: ModelConfig) -> Path:
    """The model's raw dataset: its recorded path, else its name in the workspace (a
    dataset that has moved since training started; the fallback is said)."""
    if config.dataset_path and (Path(config.dataset_path) / "dataset.json").is_file():
        return Path(config.dataset_path)
    root = ws.dataset_dir(config.dataset)
    if config.dataset_path:
        log.info("dataset %s not found; using %s", config.dataset_path, root)
    return root


def _with_plan_batch_dice(config: ModelConfig, planned: bool | None) -> ModelConfig:
    """The plan's ``batch_dice`` for a loss that takes it and whose config leaves it unset;
    the model's ``config.json`` then records the value used."""
    loss = config.loss
    if planned is None or loss.batch_dice is not None or loss.terms is not None:
        return config
    from voxseg.losses import LOSSES

    factory = LOSSES.get(loss.name)
    if "batch_dice" not in inspect.signature(factory).parameters:
        return config
    return config.model_copy(update={"loss": loss.model_copy(update={"batch_dice": planned})})
