"""A small name → factory registry shared by networks, losses, augmentations, samplers,
normalisations and post-processing steps.

A component is addressed by a registered name (``"unet"``), by a dotted path to a
user's own object (``"mypkg.nets:MyNet"``) or by a package entry point in the group
``voxseg.<kind>``. Unknown names raise an error listing the valid ones. Every built-in
registers when its registry's package is imported; installed plug-in packages register
through the ``voxseg.plugins`` entry-point group (:func:`load_plugins`).

A model folder is data: a ``module:attr`` name, or keyword arguments a factory does not
declare, would let a downloaded ``config.json`` import and call any installed code. Both
are refused unless code is trusted (``voxseg --trust-code`` or ``VOXSEG_TRUST_CODE=1``);
see :func:`require_trusted_code`.
"""

from __future__ import annotations

import importlib
import inspect
import os
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
        load_plugins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> Callable[..., T]:
        """The factory for ``name``: a registered name, ``module:attr`` or an entry point."""
        load_plugins()
        if name in self._items:
            return self._items[name]
        if ":" in name:
            require_trusted_code(f"{self.kind} {name!r} (a module:attr path)")
            return _load_dotted(name, self.kind)
        for ep in metadata.entry_points(group=f"voxseg.{self.kind}"):
            if ep.name == name:
                return ep.load()
        raise VoxsegError(
            f"unknown {self.kind} {name!r}; registered: {', '.join(self.names()) or 'none'}; "
            f"or give a dotted path such as 'mypkg.module:MyClass'"
        )

    def checked(self, name: str, kwargs: dict[str, Any]) -> Callable[..., T]:
        """The factory for ``name`` after checking the config's ``kwargs`` against it."""
        factory = self.get(name)
        check_kwargs(factory, kwargs, f"{self.kind} {name!r}")
        return factory

    def build(self, name: str, /, **kwargs: Any) -> T:
        """Build the component ``name`` with keyword arguments from the config."""
        return self.checked(name, kwargs)(**kwargs)


#: Entry-point group of installed plug-in packages (see :func:`load_plugins`).
PLUGIN_GROUP = "voxseg.plugins"
_plugins_loaded = False


def load_plugins() -> None:
    """Import every installed plug-in once, the first time any registry is asked for a name.

    A plug-in is an entry point in the group ``voxseg.plugins`` naming a module (importing it
    runs its ``@register_network(...)``, ``@register_loss(...)``, ... decorators) or a
    function (called with no arguments). In the plug-in's ``pyproject.toml``::

        [project.entry-points."voxseg.plugins"]
        mynets = "mypkg.voxseg_plugin"
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in metadata.entry_points(group=PLUGIN_GROUP):
        try:
            loaded = ep.load()
        except ImportError as exc:
            raise VoxsegError(
                f"plug-in {ep.name!r} ({ep.value}) cannot be imported: {exc}"
            ) from exc
        if callable(loaded):
            loaded()


TRUST_CODE_ENV = "VOXSEG_TRUST_CODE"


def code_trusted() -> bool:
    """Whether the user allowed configs to name arbitrary code (``VOXSEG_TRUST_CODE=1``)."""
    return os.environ.get(TRUST_CODE_ENV, "").strip().lower() in ("1", "true", "yes")


def require_trusted_code(what: str) -> None:
    """Refuse ``what`` (a config entry that would run code voxseg does not ship) unless trusted."""
    if not code_trusted():
        raise VoxsegError(
            f"{what} asks to run code outside voxseg's registered components; if you trust "
            f"where this config or model folder comes from, rerun with 'voxseg --trust-code ...' "
            f"(or {TRUST_CODE_ENV}=1)"
        )


def declared_kwargs(factory: Callable[..., Any]) -> tuple[set[str], bool]:
    """``(names, open_ended)``: the keyword names ``factory`` declares (its own and those of
    the callables it forwards ``**kwargs`` to, ``factory.forwards_kwargs_to``) and whether
    it passes any other name on to code voxseg does not check. A forward target may be a
    ``"module:attr"`` string (imported only here, e.g. for a library imported lazily); a
    ``**_`` parameter swallows extra names and passes nothing on."""
    names: set[str] = set()
    targets = [
        _load_dotted(t, "forward target") if isinstance(t, str) else t
        for t in (factory, *getattr(factory, "forwards_kwargs_to", ()))
    ]
    open_ended = False
    for i, target in enumerate(targets):
        try:
            params = inspect.signature(target).parameters.values()
        except (TypeError, ValueError):
            return names, True
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                open_ended = i == len(targets) - 1 and p.name != "_"
            elif p.kind not in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY):
                names.add(p.name)
    return names, open_ended


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Refuse config keyword arguments ``factory`` does not declare: an error when nothing
    would take them, the trust rule (see the module docstring) when they would be passed on."""
    names, open_ended = declared_kwargs(factory)
    unknown = sorted(set(kwargs) - names)
    if not unknown:
        return
    known = ", ".join(sorted(names)) or "none"
    if not open_ended:
        raise VoxsegError(f"{what} takes no keyword argument(s) {unknown}; it takes: {known}")
    require_trusted_code(f"{what}: keyword argument(s) {unknown} (not among its declared {known})")


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
