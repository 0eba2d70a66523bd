"""A trained model folder: config, plan, dataset labels and one weights file per fold."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from voxseg.config import load_model, read_json
from voxseg.data import DatasetInfo
from voxseg.errors import VoxsegError
from voxseg.training.config import ModelConfig

WEIGHT_FILES = {
    "final": "weights.safetensors",
    "best": "checkpoint_best.safetensors",
    "last": "checkpoint_last.safetensors",
}


@dataclass
class ModelFolder:
    """``MODEL_DIR/{config,plans,dataset}.json`` and ``MODEL_DIR/fold_<k>/<weights>``."""

    folder: Path
    config: ModelConfig
    plans: Any
    info: DatasetInfo
    folds: list[str]
    checkpoint: str = "final"

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike[str],
        folds: list[str] | None = None,
        checkpoint: str = "final",
    ) -> ModelFolder:
        from voxseg.inference.nnunet import NnUNetModelFolder, is_nnunet_model_folder
        from voxseg.planning.plans import Plans

        folder = Path(folder)
        if is_nnunet_model_folder(folder):
            return NnUNetModelFolder.load(folder, folds=folds, checkpoint=checkpoint)
        if (folder / "config.json").is_file() and folder.name.startswith("fold_"):
            folds = folds or [folder.name[len("fold_") :]]
            folder = folder.parent
        for name in ("config.json", "plans.json", "dataset.json"):
            if not (folder / name).is_file():
                raise VoxsegError(f"{folder}: not a voxseg model folder ({name} is missing)")
        if checkpoint not in WEIGHT_FILES:
            raise VoxsegError(f"checkpoint must be one of {', '.join(WEIGHT_FILES)}")
        available = sorted(
            p.name[len("fold_") :]
            for p in folder.glob("fold_*")
            if (p / WEIGHT_FILES[checkpoint]).is_file()
        )
        chosen = [str(f) for f in folds] if folds else available
        missing = [f for f in chosen if f not in available]
        if missing or not chosen:
            raise VoxsegError(
                f"{folder}: no {WEIGHT_FILES[checkpoint]} for fold(s) {', '.join(missing) or '?'}; "
                f"trained folds: {', '.join(available) or 'none'}"
            )
        return cls(
            folder=folder,
            config=load_model(ModelConfig, folder / "config.json"),
            plans=load_model(Plans, folder / "plans.json"),
            info=DatasetInfo.model_validate(read_json(folder / "dataset.json")),
            folds=chosen,
            checkpoint=checkpoint,
        )

    @property
    def plan_config(self) -> Any:
        return self.plans.configurations[self.config.configuration]

    @property
    def regions(self) -> list[list[int]] | None:
        if not self.info.has_regions:
            return None
        return [v if isinstance(v, list) else [v] for v in self.info.foreground_labels.values()]

    @property
    def region_values(self) -> list[int] | None:
        if self.regions is None:
            return None
        return list(self.info.regions_class_order or range(1, len(self.regions) + 1))

    @property
    def num_outputs(self) -> int:
        if self.regions is not None:
            return len(self.regions)
        return max(int(v) for v in self.info.foreground_labels.values()) + 1

    @property
    def in_channels(self) -> int:
        return self.info.num_channels

    def to_model_space(self, image: Any, roi: Any) -> tuple[Any, Any, Any]:
        """``(image, roi, restore)``: the input laid out as the network was trained (the same
        for voxseg models) and the function taking a prediction back to the input's layout."""
        return image, roi, lambda prediction: prediction

    def build_network(self) -> torch.nn.Module:
        from voxseg.nets import build_network

        return build_network(
            self.config.network.name,
            in_channels=self.in_channels,
            num_classes=self.num_outputs,
            topology=self.plan_config.topology,
            patch_size=tuple(self.plan_config.patch_size),
            deep_supervision=False,
            **self.config.network.kwargs,
        )

    def load_networks(self, device: torch.device) -> list[torch.nn.Module]:
        """One network per fold, in eval mode on ``device``."""
        from voxseg.nets import load_weights
        from voxseg.training.checkpoint import load_checkpoint

        nets = []
        for fold in self.folds:
            net = self.build_network()
            path = self.folder / f"fold_{fold}" / WEIGHT_FILES[self.checkpoint]
            try:
                if self.checkpoint == "final":
                    load_weights(net, path)
                else:
                    load_checkpoint(path, net, None, restore_rng=False)
            except RuntimeError as exc:
                raise VoxsegError(
                    f"{path}: the weights do not fit the network of config.json/plans.json "
                    f"({str(exc).splitlines()[0]})"
                ) from exc
            nets.append(net.to(device).eval())
        return nets
