"""The loss registry, the loss config and ``build_loss``.

Every loss factory is called as ``factory(num_classes=..., region_based=...,
ignore_label=..., **settings)`` and returns a module ``loss(logits, target) -> scalar`` for
one resolution; ``build_loss`` wraps it for deep supervision.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from voxseg._registry import Registry
from voxseg.errors import VoxsegError
from voxseg.losses._targets import downsample_target

LOSSES: Registry[nn.Module] = Registry("losses")


def register_loss(name: str) -> Callable:
    """Decorator: ``@register_loss("dice")`` on a loss class or factory."""
    return LOSSES.register(name)


class LossConfig(BaseModel):
    """A loss by name with its settings, e.g. ``{"name": "dice_ce", "batch_dice": true}``.

    The built-in losses' settings are declared (``None`` = the loss's own default) so that
    ``--set loss.batch_dice=true`` works; other fields are passed on as they are,
    for a user's loss. A ``combo`` sums its ``terms``, each weighted by its ``weight``.
    ``deep_supervision_target`` brings the target to lower output resolutions by ``nearest``
    neighbour (default) or ``max`` pooling (region masks only).
    """

    model_config = ConfigDict(extra="allow")

    name: str = "dice_ce"
    weight: float = 1.0
    terms: list[LossConfig] | None = None
    deep_supervision_target: Literal["nearest", "max"] = "nearest"
    batch_dice: bool | None = None
    smooth: float | None = None
    include_background: bool | None = None
    weight_ce: float | None = None
    weight_dice: float | None = None
    gamma: float | None = None
    alpha: float | None = None
    beta: float | None = None

    def settings(self) -> dict[str, Any]:
        """The keyword arguments for the loss factory (settings left at None are omitted)."""
        fixed = {"name", "weight", "deep_supervision_target"}
        out = {k: v for k, v in self if k not in fixed and v is not None}
        out.update(self.model_extra or {})
        return out


def as_config(config: LossConfig | dict[str, Any] | str) -> LossConfig:
    """Validate a loss config given as a model, a dict or just a name."""
    if isinstance(config, LossConfig):
        return config
    if isinstance(config, str):
        config = {"name": config}
    try:
        return LossConfig.model_validate(config)
    except ValidationError as exc:
        raise VoxsegError(f"invalid loss config {config!r}:\n{exc}") from exc


def build_single(
    config: LossConfig | dict[str, Any] | str,
    *,
    num_classes: int,
    region_based: bool,
    ignore_label: int | None,
) -> tuple[float, nn.Module]:
    """``(weight, loss module)`` for one resolution."""
    config = as_config(config)
    settings = config.settings()
    factory = LOSSES.checked(config.name, settings)
    try:
        module = factory(
            num_classes=num_classes,
            region_based=region_based,
            ignore_label=ignore_label,
            **settings,
        )
    except TypeError as exc:
        raise VoxsegError(
            f"loss {config.name!r} does not take the settings {sorted(settings)} ({exc}); "
            f"its parameters: {_parameters(factory)}"
        ) from exc
    return config.weight, module


def build_loss(
    config: LossConfig | dict[str, Any] | str,
    *,
    num_classes: int,
    region_based: bool = False,
    ignore_label: int | None = None,
    deep_supervision_weights: Sequence[float] | None = None,
) -> nn.Module:
    """Build the training loss: ``loss(logits or [logits, ...], target) -> scalar``.

    ``num_classes`` is the number of network outputs (classes with background, or regions).
    ``target`` is ``[b, 1, *spatial]`` integer labels, or ``[b, R, *spatial]`` region masks
    (``[b, R + 1, ...]`` with the ignore mask last when ``ignore_label`` is set). A list of
    logits (highest resolution first) is weighted by ``deep_supervision_weights``, by default
    nnU-Net's ``1/2^i`` with the lowest resolution at 0, normalised to sum 1.
    """
    config = as_config(config)
    if config.deep_supervision_target == "max" and not region_based:
        raise VoxsegError(
            "loss: deep_supervision_target 'max' pools region masks; integer labels need 'nearest'"
        )
    _, loss = build_single(
        config, num_classes=num_classes, region_based=region_based, ignore_label=ignore_label
    )
    return DeepSupervisionLoss(loss, deep_supervision_weights, config.deep_supervision_target)


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's weights for ``n`` outputs: ``1/2^i``, the lowest resolution 0, sum 1."""
    weights = [1 / 2**i for i in range(n)]
    if n > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


class DeepSupervisionLoss(nn.Module):
    """Applies a loss to one output, or to each deep-supervision output with its weight.

    The target is brought to each output's spatial size (nearest neighbour or max pooling);
    outputs with weight 0 are skipped.
    """

    def __init__(
        self,
        loss: nn.Module,
        weights: Sequence[float] | None = None,
        target_mode: Literal["nearest", "max"] = "nearest",
    ) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else _normalised(weights)
        self.target_mode = target_mode

    def forward(
        self, logits: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        if isinstance(logits, torch.Tensor):
            return self.loss(logits, target)
        weights = self.weights or deep_supervision_weights(len(logits))
        if len(weights) != len(logits):
            raise VoxsegError(
                f"loss: {len(logits)} deep-supervision outputs but {len(weights)} weights"
            )
        total = logits[0].new_zeros(())
        for w, out in zip(weights, logits, strict=True):
            if w:
                total = total + w * self.loss(
                    out, downsample_target(target, out.shape[2:], self.target_mode)
                )
        return total


def _normalised(weights: Sequence[float]) -> list[float]:
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise VoxsegError(
            f"deep-supervision weights {list(weights)} must be ≥ 0 with a positive sum"
        )
    return [float(w) / total for w in weights]


def _parameters(factory: Callable[..., Any]) -> str:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return "unknown"
    skip = {"self", "num_classes", "region_based", "ignore_label"}
    return ", ".join(p for p in params if p not in skip) or "none"
