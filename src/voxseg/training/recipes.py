"""Named training recipes: a set of optimiser and schedule settings chosen by one name.

``nnunet`` (the default) is nnU-Net's SGD + poly recipe, made for 1000 epochs of 250
iterations. ``adamw`` (AdamW, lr 1e-3, weight decay 1e-4, two warm-up epochs, cosine decay)
learns small structures within the first few hundred iterations, which makes it the recipe
for short budgets, a CPU above all. A run of fewer than ``SHORT_RUN_ITERATIONS`` iterations
gets a peak learning rate raised in proportion, at most 3× (``schedules.peak_learning_rate``):
AdamW moves a weight by about the learning rate per step, so a short run at 1e-3 ends before
a low-contrast class wins anywhere (the demo's spleen: Dice 0 after 969 iterations at 1e-3,
0.76 at 3e-3). A recipe is applied before any ``--set``, so single values can still be
changed, and ``config.json`` stores the resolved settings either way.
"""

from __future__ import annotations

from voxseg.errors import VoxsegError
from voxseg.modelconfig import ModelConfig, OptimizerConfig, ScheduleConfig

#: ``adamw``: a run shorter than this gets the total weight travel (peak lr × iterations) of
#: this many iterations at 1e-3, up to a 3× peak; the 15-minute CPU runs that learned every
#: organ at 1e-3 (``benchmarks/train_accuracy_organs.py``) had 3 350–6 500 iterations and
#: keep 1e-3.
SHORT_RUN_ITERATIONS = 3000

#: name -> (optimiser, schedule)
RECIPES: dict[str, tuple[OptimizerConfig, ScheduleConfig]] = {
    "nnunet": (OptimizerConfig(), ScheduleConfig()),
    "adamw": (
        OptimizerConfig(name="adamw", lr=1e-3, weight_decay=1e-4),
        ScheduleConfig(
            name="warmup_cosine", warmup_epochs=2, short_run_iterations=SHORT_RUN_ITERATIONS
        ),
    ),
}


def apply_recipe(config: ModelConfig, name: str) -> ModelConfig:
    """``config`` with the optimiser and schedule of the recipe ``name``."""
    if name not in RECIPES:
        raise VoxsegError(f"unknown training recipe {name!r}; choose one of {', '.join(RECIPES)}")
    optimizer, schedule = RECIPES[name]
    update = {"optimizer": optimizer.model_copy(), "schedule": schedule.model_copy()}
    return config.model_copy(update=update)  # copies: the recipes stay as defined
