"""Training: the loop, checkpoints, logs, schedules, cross-validation and DDP."""

from voxseg.modelconfig import (
    EarlyStoppingConfig,
    LoggingConfig,
    ModelConfig,
    NetworkConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainingConfig,
)
from voxseg.training.recipes import RECIPES, apply_recipe
from voxseg.training.trainer import Trainer, train_fold

__all__ = [
    "EarlyStoppingConfig",
    "LoggingConfig",
    "ModelConfig",
    "NetworkConfig",
    "OptimizerConfig",
    "RECIPES",
    "ScheduleConfig",
    "Trainer",
    "TrainingConfig",
    "apply_recipe",
    "train_fold",
]
