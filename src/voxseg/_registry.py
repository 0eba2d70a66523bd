"""A small name → factory registry shared by networks, losses, augmentations, samplers,
normalisations and post-processing steps.

A component is addressed by a registered name (``"unet"``), by a dotted path to a
user's own object (``"mypkg.nets:MyNet"``) or by a package entry point in the group
``voxseg.<kind>``. Unknown names raise an error listing the valid ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Generic, TypeVar

from voxseg.errors import VoxsegError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories of one kind of component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: ``@NETWORKS.register("unet")``."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items and self._items[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Callable[..., T]:
        """The factory for ``name``: a registered name, ``module:attr`` or an entry point."""
        if name in self._items:
            return self._items[name]
        if ":" in name:
            return _load_dotted(name, self.kind)
        for ep in metadata.entry_points(group=f"voxseg.{self.kind}"):
            if ep.name == name:
                return ep.load()
        raise VoxsegError(
            f"unknown {self.kind} {name!r}; registered: {', '.join(self.names()) or 'none'}; "
            f"or give a dotted path such as 'mypkg.module:MyClass'"
        )

    def build(self, name: str, /, **kwargs: Any) -> T:
        """Build the component ``name`` with keyword arguments from the config."""
        return self.get(name)(**kwargs)


def _load_dotted(path: str, kind: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise VoxsegError(f"{kind} {path!r}: cannot import module {module_name!r}: {exc}") from exc
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as exc:
        raise VoxsegError(f"{kind} {path!r}: {module_name!r} has no attribute {attr!r}") from exc
    return obj
