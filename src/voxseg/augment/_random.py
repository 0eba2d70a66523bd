"""Batched random draws from one ``torch.Generator``, moved to the data's device.

Every draw has a shape fixed by the batch, never by earlier outcomes, so one seed gives one
stream of parameters whatever was applied.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rand(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """Uniform [0, 1) float32 of ``shape`` on ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def randn(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """Standard normal float32 of ``shape`` on ``device``."""
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def bernoulli(
    shape: tuple[int, ...], p: float, generator: torch.Generator, device: torch.device
) -> Tensor:
    """Booleans that are true with probability ``p``."""
    return rand(shape, generator, device) < p


def uniform(
    shape: tuple[int, ...],
    low: float,
    high: float,
    generator: torch.Generator,
    device: torch.device,
) -> Tensor:
    """Uniform on [low, high)."""
    return low + (high - low) * rand(shape, generator, device)


def factor(
    shape: tuple[int, ...],
    low: float,
    high: float,
    sampling: str,
    generator: torch.Generator,
    device: torch.device,
) -> Tensor:
    """A multiplicative factor: ``uniform`` or ``split_at_one`` (batchgeneratorsv2 BGContrast)."""
    if sampling == "uniform":
        return uniform(shape, low, high, generator, device)
    below = rand(shape, generator, device) < 0.5
    u = rand(shape, generator, device)
    low_side = low + (min(high, 1.0) - low) * u
    high_side = max(low, 1.0) + (high - max(low, 1.0)) * u
    return torch.where(below & (low < 1.0), low_side, high_side)


def row_mask(
    batch: int,
    channels: int,
    p: float,
    p_per_channel: float,
    generator: torch.Generator,
    device: torch.device,
) -> Tensor:
    """``[b, c]`` booleans: a sample is chosen with ``p``, then each of its channels with
    ``p_per_channel``."""
    sample = bernoulli((batch, 1), p, generator, device)
    channel = bernoulli((batch, channels), p_per_channel, generator, device)
    return sample & channel
