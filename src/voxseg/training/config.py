"""The model config's classes under their former module name; they live in
:mod:`voxseg.modelconfig` (below training, which writes ``config.json``, and inference, which
reads it)."""

from voxseg.modelconfig import (
    BudgetRecord,
    EarlyStoppingConfig,
    LoggingConfig,
    ModelConfig,
    NetworkConfig,
    OptimizerConfig,
    PredictionConfig,
    ScheduleConfig,
    TrainingConfig,
)

__all__ = [
    "BudgetRecord",
    "EarlyStoppingConfig",
    "LoggingConfig",
    "ModelConfig",
    "NetworkConfig",
    "OptimizerConfig",
    "PredictionConfig",
    "ScheduleConfig",
    "TrainingConfig",
]
