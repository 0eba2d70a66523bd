"""Weight averaging over the last epochs of a run (stochastic weight averaging, Izmailov et
al. 2018): the network's weights at the end of each of the last ``average_last`` epochs
are averaged with equal weight, and the average is what the run exports. The running
average is part of the checkpoint, so a resumed run averages as if it had not stopped.
"""

from __future__ import annotations

import math

import torch


class WeightAverage:
    """Equal-weight running mean of a network's floating-point state over chosen epochs
    (integer buffers, such as a batch norm's step count, keep the network's own value)."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.tensors: dict[str, torch.Tensor] = {}
        self.count = 0

    def first_epoch(self, epochs: int) -> int:
        """The first epoch (0-based) of ``epochs`` whose weights go into the average."""
        return epochs - max(1, math.ceil(self.fraction * epochs)) if self.fraction > 0 else epochs

    def due(self, epoch: int, epochs: int) -> bool:
        """Whether the weights after ``epoch`` join the average (a time budget may refit
        ``epochs`` as it goes; an epoch counted before stays counted)."""
        return self.fraction > 0 and epoch >= self.first_epoch(epochs)

    @torch.no_grad()
    def update(self, network: torch.nn.Module) -> None:
        """Add the network's current weights to the average."""
        self.count += 1
        for name, value in network.state_dict().items():
            if not value.is_floating_point():
                continue
            if name not in self.tensors:
                self.tensors[name] = value.detach().clone()
            else:
                self.tensors[name].lerp_(value.detach(), 1.0 / self.count)

    def apply(self, network: torch.nn.Module) -> None:
        """Load the average into ``network`` (nothing when no epoch was averaged)."""
        if self.count:
            network.load_state_dict({**network.state_dict(), **self.tensors})

    def restore(self, tensors: dict[str, torch.Tensor], count: int) -> None:
        """The average as a checkpoint stored it."""
        self.tensors = dict(tensors)
        self.count = count if tensors else 0
