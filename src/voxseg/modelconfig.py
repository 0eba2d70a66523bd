"""The model parameters: one nested, readable parameter set per model (as ovseg's).

Saved as ``config.json`` in the model folder with every default resolved; any value can be
changed from the command line with ``--set training.epochs=50`` (dotted paths). Training
writes it and inference reads it, so it lives below both (``voxseg.training.config`` is the
same classes under their former name).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from voxseg.augment import AugmentationConfig, augmentation_preset
from voxseg.losses import LossConfig
from voxseg.postprocess.steps import PostprocessingStepConfig
from voxseg.sampling import SamplingConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkConfig(_Strict):
    """Which registered network (or ``module:Class`` path) to build from the plan."""

    name: str = "unet"
    deep_supervision: bool | None = Field(
        None, description="None: on when the network supports it (the U-Nets)"
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)


class OptimizerConfig(_Strict):
    """nnU-Net's default: SGD, lr 1e-2, Nesterov momentum 0.99, weight decay 3e-5."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(1e-2, gt=0)
    momentum: float = 0.99
    nesterov: bool = True
    weight_decay: float = 3e-5
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleConfig(_Strict):
    """``poly``: lr·(1 − epoch/epochs)^exponent (nnU-Net); ``warmup_cosine``: linear warm-up
    for ``warmup_epochs`` then cosine decay to ``min_lr``; ``constant``."""

    name: Literal["poly", "warmup_cosine", "constant"] = "poly"
    exponent: float = 0.9
    warmup_epochs: int = Field(0, ge=0)
    min_lr: float = 0.0
    short_run_iterations: int | None = Field(
        None,
        ge=1,
        description="a run of fewer iterations gets a peak lr raised in proportion (at most "
        "short_run_max_factor×; AdamW moves a weight about lr per step); None: off",
    )
    short_run_max_factor: float = Field(3.0, ge=1.0)


class EarlyStoppingConfig(_Strict):
    """Opt-in: stop when the EMA validation Dice has not improved by ``min_delta`` for
    ``patience`` epochs."""

    enabled: bool = False
    patience: int = Field(50, ge=1)
    min_delta: float = 0.0


class LoggingConfig(_Strict):
    """CSV log, progress plot and slice snapshots always; trackers are opt-in and offline."""

    snapshots: bool = True
    snapshot_every: int = Field(1, ge=1, description="a validation slice snapshot every N epochs")
    plot_seconds: float = Field(
        30.0, ge=0, description="redraw progress.png at most this often (~0.15 s a plot)"
    )
    tensorboard: bool = False
    wandb: bool = False
    wandb_mode: Literal["offline", "online"] = "offline"
    mlflow: bool = False
    mlflow_uri: str | None = None


class BudgetRecord(_Strict):
    """How a time-budgeted run fixed its length (measured, then stored in ``config.json``)."""

    seconds_per_iteration: float
    seconds_per_epoch: float
    iterations_per_epoch: int
    epochs: int
    reserved_seconds: float = Field(description="kept for the final validation and export")
    refits: int = Field(0, description="times the epoch count was fitted again mid-run")


class TrainingConfig(_Strict):
    """The training loop (defaults: nnU-Net's recipe; the batch size comes from the plan)."""

    epochs: int = Field(1000, ge=1, description="fixed by the trainer when time_budget is set")
    iterations_per_epoch: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="auto: 250, or with a time_budget about a 50th of the iterations that fit "
        "(10 to 250), so the schedule has enough epochs",
    )
    val_iterations: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto", description="validation batches per epoch; auto: a fifth of the epoch (≥ 5)"
    )
    time_budget: float | None = Field(
        None,
        gt=0,
        description="seconds for training, final validation and export (--time-budget 20m); "
        "the trainer measures its rate and fixes epochs (and an auto epoch length) to fit",
    )
    budget: BudgetRecord | None = Field(
        None, description="written by the trainer: how a time_budget was spent (not an input)"
    )
    batch_size: int | None = Field(None, ge=1, description="per process; default: the plan's")
    grad_clip: float | None = 12.0
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto",
        description="auto: bf16 on CUDA (fp16 if unsupported) and on CPUs with AMX, else off",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    seed: int = 0
    num_workers: int | None = Field(None, ge=0, description="data loader workers; None: auto")
    ema_alpha: float = Field(0.9, ge=0, lt=1, description="EMA of validation Dice for 'best'")
    average_last: float = Field(
        0.0,
        ge=0,
        le=1,
        description="export the mean of the weights after each of this last fraction of the "
        "epochs (stochastic weight averaging); 0: the last weights",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description="channels-last network and batches; auto: 3D on the CPU, else off",
    )
    compile: bool = False


class PredictionConfig(_Strict):
    """How the model predicts: the one owner of these settings. Validation after training,
    cross-validated selection and ``voxseg predict`` all read them from ``config.json``;
    ``voxseg predict --tta/--no-tta/--step`` only override them."""

    tta: bool = Field(
        True, description="flip test-time augmentation over the axes trained with mirroring"
    )
    step: float = Field(0.5, gt=0, le=1, description="window step as a fraction of the patch")
    sigma_scale: float = Field(
        1 / 8, gt=0, description="σ of the Gaussian window weight as a fraction of the patch"
    )


class ModelConfig(_Strict):
    """Everything that defines a model, besides the plan it was trained with."""

    dataset: str
    dataset_path: str | None = Field(
        None,
        description="the raw dataset's absolute path when training started (found again by "
        "name in the workspace when it has moved)",
    )
    plan: str = "default"
    configuration: str = "3d_fullres"
    model_name: str | None = Field(
        None, description="the model's folder name; default: the configuration's name"
    )
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    augmentation: AugmentationConfig = Field(
        default_factory=lambda: augmentation_preset("nnunet"),
        description="a preset name (nnunet, ovseg) or every setting; stored resolved",
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    prediction: PredictionConfig = Field(default_factory=PredictionConfig)
    postprocessing: list[PostprocessingStepConfig] = Field(
        default_factory=list,
        description="steps applied to every prediction unless postprocessing.json is present",
    )

    @model_validator(mode="after")
    def _default_model_name(self) -> ModelConfig:
        if self.model_name is None:
            self.model_name = self.configuration
        return self

    @field_validator("augmentation", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        return augmentation_preset(value) if isinstance(value, str) else value
