"""A trained model folder: config, plan, dataset labels and one weights file per fold (the
layout: :mod:`voxseg.modelfolder`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from voxseg.config import load_model, read_json
from voxseg.data import DatasetInfo
from voxseg.errors import VoxsegError
from voxseg.modelconfig import ModelConfig
from voxseg.modelfolder import (
    CONFIG,
    DATASET,
    PLANS,
    WEIGHT_FILES,
    ModelLayout,
    find_loader,
    open_layout,
)
from voxseg.nets import build_network, load_weights
from voxseg.nets.weights import CHECKPOINT_NETWORK_PREFIX
from voxseg.planning.plans import Plans


@dataclass
class ModelFolder:
    """``MODEL_DIR/{config,plans,dataset}.json`` and ``MODEL_DIR/fold_<k>/<weights>``."""

    folder: Path
    config: ModelConfig
    plans: Any
    info: DatasetInfo
    folds: list[str]
    checkpoint: str = "final"

    KIND: ClassVar[str] = "a voxseg model folder"
    REQUIRED: ClassVar[tuple[str, ...]] = (CONFIG, PLANS, DATASET)
    WEIGHTS: ClassVar[dict[str, str]] = WEIGHT_FILES

    @classmethod
    def load(cls, folder: str | os.PathLike[str], **options: Any) -> ModelFolder:
        """Any single-model folder (voxseg, nnU-Net v2, ...): the first loader of
        :data:`voxseg.modelfolder.LOADERS` that matches ``folder`` opens it with ``options``
        (the built-in loaders take those of :meth:`read`: ``folds``, ``checkpoint``)."""
        loader = find_loader(folder)
        model = loader(folder, **options)
        if not isinstance(model, ModelFolder):
            raise VoxsegError(
                f"{folder}: a {loader.name} folder, not one model"
                + ("; predict with 'voxseg pipeline predict'" if loader.name == "pipeline" else "")
            )
        return model

    @classmethod
    def read(
        cls,
        folder: str | os.PathLike[str],
        folds: list[str] | None = None,
        checkpoint: str = "final",
    ) -> ModelFolder:
        """A folder of this class's kind (``KIND``: its ``REQUIRED`` files and one of its
        ``WEIGHTS`` per fold), or one ``fold_<k>`` in it: that fold by default."""
        layout, chosen, file = open_layout(
            folder,
            folds,
            checkpoint,
            kind=cls.KIND,
            required=cls.REQUIRED,
            weight_files=cls.WEIGHTS,
        )
        return cls.from_layout(layout, chosen, file, checkpoint)

    @classmethod
    def from_layout(
        cls, layout: ModelLayout, folds: list[str], weights_file: str, checkpoint: str
    ) -> ModelFolder:
        """The model of an opened folder: ``folds`` chosen, each with ``weights_file``."""
        return cls(
            folder=layout.root,
            config=load_model(ModelConfig, layout.config),
            plans=load_model(Plans, layout.plans),
            info=DatasetInfo.model_validate(read_json(layout.dataset)),
            folds=folds,
            checkpoint=checkpoint,
        )

    @property
    def plan_config(self) -> Any:
        return self.plans.configurations[self.config.configuration]

    @property
    def regions(self) -> list[list[int]] | None:
        return self.info.regions

    @property
    def region_values(self) -> list[int] | None:
        return self.info.region_values

    @property
    def num_outputs(self) -> int:
        return self.info.num_outputs

    @property
    def in_channels(self) -> int:
        return self.info.num_channels

    def to_model_space(self, image: Any, roi: Any) -> tuple[Any, Any, Any]:
        """``(image, roi, restore)``: the input laid out as the network was trained (the same
        for voxseg models) and the function taking a prediction back to the input's layout."""
        return image, roi, lambda prediction: prediction

    def build_network(self) -> torch.nn.Module:
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
        nets = []
        for fold in self.folds:
            net = self.build_network()
            path = ModelLayout(self.folder).weights(fold, self.checkpoint)
            prefix = "" if self.checkpoint == "final" else CHECKPOINT_NETWORK_PREFIX
            try:
                load_weights(net, path, prefix=prefix)
            except RuntimeError as exc:
                raise VoxsegError(
                    f"{path}: the weights do not fit the network of {CONFIG}/{PLANS} "
                    f"({str(exc).splitlines()[0]})"
                ) from exc
            nets.append(net.to(device).eval())
        return nets
