"""Named training recipes: a set of optimiser and schedule settings chosen by one name.

``nnunet`` (the default) is nnU-Net's SGD + poly recipe, made for 1000 epochs of 250
iterations. ``adamw`` (AdamW, lr 1e-3, weight decay 1e-4, two warm-up epochs, cosine decay)
learns small structures within the first few hundred iterations, which makes it the recipe
for short budgets, a CPU above all. A recipe is applied before any ``--set``, so single
values can still be changed, and ``config.json`` stores the resolved settings either way.
"""

from __future__ import annotations

from typing import Any

from voxseg.errors import VoxsegError
from voxseg.training.config import ModelConfig, OptimizerConfig, ScheduleConfig

RECIPES: dict[str, dict[str, Any]] = {
    "nnunet": {
        "optimizer": OptimizerConfig().model_dump(mode="json"),
        "schedule": ScheduleConfig().model_dump(mode="json"),
    },
    "adamw": {
        "optimizer": OptimizerConfig(name="adamw", lr=1e-3, weight_decay=1e-4).model_dump(
            mode="json"
        ),
        "schedule": ScheduleConfig(name="warmup_cosine", warmup_epochs=2).model_dump(mode="json"),
    },
}


def apply_recipe(config: ModelConfig, name: str) -> ModelConfig:
    """``config`` with the optimiser and schedule of the recipe ``name``."""
    if name not in RECIPES:
        raise VoxsegError(f"unknown training recipe {name!r}; choose one of {', '.join(RECIPES)}")
    data = config.model_dump(mode="json")
    data.update(RECIPES[name])
    return ModelConfig.model_validate(data)
