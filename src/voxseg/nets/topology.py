"""The network topology a plan chooses and every network factory receives."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class Topology(BaseModel):
    """An encoder–decoder layout: one entry per resolution stage, highest resolution first.

    ``strides[0]`` is all ones; ``strides[i]`` is the downsampling from stage ``i-1`` to ``i``
    per spatial axis (array order). ``kernel_sizes``/``strides`` have ``spatial_dims`` entries.
    """

    spatial_dims: int = Field(3, ge=2, le=3)
    features_per_stage: list[int]
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    n_conv_per_stage: list[int]
    n_conv_per_stage_decoder: list[int]

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        n = len(self.features_per_stage)
        if not (len(self.kernel_sizes) == len(self.strides) == len(self.n_conv_per_stage) == n):
            raise ValueError(
                "features, kernel_sizes, strides and n_conv_per_stage differ in length"
            )
        if len(self.n_conv_per_stage_decoder) != n - 1:
            raise ValueError("n_conv_per_stage_decoder needs one entry per stage but the last")
        for k, s in zip(self.kernel_sizes, self.strides, strict=True):
            if len(k) != self.spatial_dims or len(s) != self.spatial_dims:
                raise ValueError(f"kernel/stride entries must have {self.spatial_dims} values")
        return self

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    @property
    def total_downsampling(self) -> list[int]:
        """Product of strides per axis: patch sizes must be divisible by it."""
        out = [1] * self.spatial_dims
        for s in self.strides:
            out = [a * b for a, b in zip(out, s, strict=True)]
        return out

    @classmethod
    def simple(
        cls,
        spatial_dims: int = 3,
        n_stages: int = 4,
        base_features: int = 8,
        max_features: int = 320,
    ) -> Topology:
        """An isotropic layout (stride 2 on every axis), for tests and quick experiments."""
        return cls(
            spatial_dims=spatial_dims,
            features_per_stage=[min(base_features * 2**i, max_features) for i in range(n_stages)],
            kernel_sizes=[[3] * spatial_dims for _ in range(n_stages)],
            strides=[[1] * spatial_dims] + [[2] * spatial_dims for _ in range(n_stages - 1)],
            n_conv_per_stage=[2] * n_stages,
            n_conv_per_stage_decoder=[2] * (n_stages - 1),
        )
