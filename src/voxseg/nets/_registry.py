"""The network registry, capability flags and ``build_network``.

Every factory is called with the same keywords::

    factory(in_channels=..., num_classes=..., topology=..., patch_size=...,
            deep_supervision=..., **kwargs) -> nn.Module

and returns a module mapping ``[b, in_channels, *spatial]`` to logits
``[b, num_classes, *spatial]``; with deep supervision, a list of logits, highest
resolution first (each later entry at the next lower decoder resolution).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from torch import nn

from voxseg._registry import Registry
from voxseg.errors import VoxsegError
from voxseg.nets.topology import Topology

NETWORKS: Registry[nn.Module] = Registry("networks")


@dataclass(frozen=True)
class NetworkInfo:
    """What a network family can do; read by planners and trainers before building.

    ``needs_patch_divisible_by`` is an int (same on every axis) or ``"topology"`` (the
    product of the topology's strides per axis). ``fixed_input_size``: the input must have
    exactly the patch size (e.g. learned position embeddings). ``min_input_size``: the
    smallest size per axis the network takes.
    """

    supports_2d: bool = True
    supports_3d: bool = True
    supports_deep_supervision: bool = False
    needs_patch_divisible_by: int | Literal["topology"] = 1
    fixed_input_size: bool = False
    min_input_size: int = 1

    def divisor(self, topology: Topology) -> list[int]:
        """Per-axis number the input's spatial shape must be divisible by."""
        if self.needs_patch_divisible_by == "topology":
            return topology.total_downsampling
        return [int(self.needs_patch_divisible_by)] * topology.spatial_dims


def register_network(name: str, info: NetworkInfo | None = None) -> Callable:
    """Decorator: register a factory under ``name`` with its capability flags."""

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        factory.info = info or NetworkInfo()  # type: ignore[attr-defined]
        return NETWORKS.register(name)(factory)

    return decorator


@dataclass(frozen=True)
class NetworkRequest:
    """What a network is asked for: the keywords every factory is called with (a family
    registered with :func:`register_family` gets them as one object)."""

    in_channels: int
    num_classes: int
    topology: Topology
    patch_size: list[int]
    deep_supervision: bool = False


_REQUEST_FIELDS = tuple(f.name for f in fields(NetworkRequest))


def register_family(
    name: str, info: NetworkInfo | None = None, *, forwards_kwargs_to: Sequence[Any] = ()
) -> Callable:
    """Decorator: register ``build(request, /, **settings)`` as the factory ``name``.

    The one shared builder of voxseg's families (as timm's ``build_model_with_cfg``): the
    registry's keywords become a :class:`NetworkRequest`, so a family writes only what it
    builds. ``forwards_kwargs_to`` names what ``build`` passes its ``**settings`` on to
    (a class or a ``"module:attr"`` string), so unknown settings are refused by name.
    """

    def decorator(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        def factory(**kwargs: Any) -> nn.Module:  # build_network's keywords, then settings
            request = {f: kwargs.pop(f) for f in _REQUEST_FIELDS if f in kwargs}
            return build(NetworkRequest(**request), **kwargs)

        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(factory, attr, getattr(build, attr))
        factory.forwards_kwargs_to = (build, *forwards_kwargs_to)  # type: ignore[attr-defined]
        return register_network(name, info)(factory)

    return decorator


def network_info(name: str) -> NetworkInfo:
    """Capability flags of a registered, dotted-path or entry-point network."""
    return _info_of(NETWORKS.get(name))


def _info_of(factory: Callable[..., nn.Module]) -> NetworkInfo:
    info = getattr(factory, "info", None)
    return info if isinstance(info, NetworkInfo) else NetworkInfo()


def build_network(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    topology: Topology,
    patch_size: Sequence[int],
    deep_supervision: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build network ``name`` after checking its capabilities against the request.

    The returned module checks every input's shape and raises a ``VoxsegError`` that says
    what to change instead of failing deep inside a convolution.
    """
    factory = NETWORKS.checked(name, kwargs)
    info = _info_of(factory)
    dims = topology.spatial_dims
    patch = [int(p) for p in patch_size]
    if len(patch) != dims:
        raise VoxsegError(f"network {name!r}: patch size {patch} has not {dims} axes")
    if (dims == 2 and not info.supports_2d) or (dims == 3 and not info.supports_3d):
        raise VoxsegError(f"network {name!r} does not support {dims}D; choose another network")
    if deep_supervision and not info.supports_deep_supervision:
        raise VoxsegError(
            f"network {name!r} has no deep supervision; set deep_supervision to false"
        )
    divisor = info.divisor(topology)
    if any(p % d for p, d in zip(patch, divisor, strict=True)):
        raise VoxsegError(
            f"network {name!r}: patch size {patch} must be divisible by {divisor} per axis"
        )
    if min(patch) < info.min_input_size:
        raise VoxsegError(
            f"network {name!r}: patch size {patch} is below its minimum {info.min_input_size}"
        )
    model = factory(
        in_channels=in_channels,
        num_classes=num_classes,
        topology=topology,
        patch_size=patch,
        deep_supervision=deep_supervision,
        **kwargs,
    )
    exact = patch if info.fixed_input_size else None
    check = _InputCheck(name, in_channels, divisor, exact, info.min_input_size)
    model.register_forward_pre_hook(check)
    return model


@dataclass(frozen=True)
class _InputCheck:
    """Forward pre-hook: a clear error for inputs the network cannot take."""

    name: str
    in_channels: int
    divisor: list[int]
    exact: list[int] | None
    min_size: int

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor):
            return
        dims = len(self.divisor)
        spatial = list(x.shape[2:])
        if x.ndim != dims + 2 or x.shape[1] != self.in_channels:
            raise VoxsegError(
                f"network {self.name!r} expects input [batch, {self.in_channels}, "
                f"{dims} spatial axes], got {list(x.shape)}"
            )
        if self.exact is not None and spatial != self.exact:
            raise VoxsegError(
                f"network {self.name!r} takes exactly the patch size {self.exact}, got "
                f"{spatial}; predict with a sliding window of that size"
            )
        if min(spatial) < self.min_size:
            raise VoxsegError(
                f"network {self.name!r}: input spatial shape {spatial} is below its minimum "
                f"{self.min_size} per axis; pad the input"
            )
        if any(s % d for s, d in zip(spatial, self.divisor, strict=True)):
            raise VoxsegError(
                f"network {self.name!r}: input spatial shape {spatial} is not divisible by "
                f"{self.divisor}; pad the input to a multiple of it"
            )
