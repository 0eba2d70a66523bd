"""Named training recipes: a set of optimiser and schedule settings chosen by one name.

``nnunet`` (the default) is nnU-Net's SGD + poly recipe, made for 1000 epochs of 250
iterations. ``adamw`` (AdamW, lr 1e-3, weight decay 1e-4, two warm-up epochs, cosine decay)
learns small structures within the first few hundred iterations, which makes it the recipe
for short budgets, a CPU above all. A recipe is applied before any ``--set``, so single
values can still be changed, and ``config.json`` stores the resolved settings either way.
"""

from __future__ import annotations

from voxseg.errors import VoxsegError
from voxseg.modelconfig import ModelConfig, OptimizerConfig, ScheduleConfig

#: name -> (optimiser, schedule)
RECIPES: dict[str, tuple[OptimizerConfig, ScheduleConfig]] = {
    "nnunet": (OptimizerConfig(), ScheduleConfig()),
    "adamw": (
        OptimizerConfig(name="adamw", lr=1e-3, weight_decay=1e-4),
        ScheduleConfig(name="warmup_cosine", warmup_epochs=2),
    ),
}


def apply_recipe(config: ModelConfig, name: str) -> ModelConfig:
    """``config`` with the optimiser and schedule of the recipe ``name``."""
    if name not in RECIPES:
        raise VoxsegError(f"unknown training recipe {name!r}; choose one of {', '.join(RECIPES)}")
    optimizer, schedule = RECIPES[name]
    update = {"optimizer": optimizer.model_copy(), "schedule": schedule.model_copy()}
    return config.model_copy(update=update)  # copies: the recipes stay as defined
