"""Typed configs and ``--set key.sub=value`` overrides.

Every step's parameters are pydantic models, saved as readable JSON with every default
resolved. Overrides are dotted paths; values are parsed as JSON when they parse
(``3``, ``0.01``, ``true``, ``[1, 2]``, ``{"a": 1}``) and kept as strings otherwise.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from voxseg.errors import VoxsegError

M = TypeVar("M", bound=BaseModel)


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["training.epochs=5", "network.name=unet"]`` → ``{"training.epochs": 5, ...}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise VoxsegError(f"override {item!r} is not of the form key.subkey=value")
        out[key.strip()] = parse_value(value.strip())
    return out


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key == "a.b"``, creating dicts on the way; a
    number indexes a list (``postprocessing.0.labels``)."""
    parts = key.split(".")
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[_index(node, part, key)]
            continue
        child = node.get(part)
        if not isinstance(child, (dict, list)):
            child = {}
            node[part] = child
        node = child
    if isinstance(node, list):
        node[_index(node, parts[-1], key)] = value
    else:
        node[parts[-1]] = value


def _index(items: list[Any], part: str, key: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise VoxsegError(f"setting {key!r}: {part!r} is not an index of a list of {len(items)}")
    return int(part)


def apply_overrides(model: M, overrides: dict[str, Any] | list[str] | None) -> M:
    """Return a validated copy of ``model`` with dotted overrides applied."""
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    if not overrides:
        return model
    data = model.model_dump(mode="json")
    for key, value in overrides.items():
        _check_path(model, key)
        set_dotted(data, key, value)
    try:
        return type(model).model_validate(data)
    except ValidationError as exc:
        raise VoxsegError(f"invalid override for {type(model).__name__}:\n{exc}") from exc


def _check_path(model: BaseModel, key: str) -> None:
    node: Any = model
    walked = []
    for part in key.split("."):
        walked.append(part)
        if isinstance(node, BaseModel):
            fields = type(node).model_fields
            if part not in fields and type(node).model_config.get("extra") == "allow":
                return
            if part not in fields:
                valid = ", ".join(sorted(fields))
                raise VoxsegError(f"unknown setting {'.'.join(walked)!r}; valid keys here: {valid}")
            node = getattr(node, part)
        elif isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list):
            node = node[_index(node, part, key)]
        else:
            return


def new_file_mode(directory: bool = False) -> int:
    """The mode a plain ``open()`` (``mkdir()``) would give a new file (folder): 0o666
    (0o777) less the process's umask. Temporary files and folders that are renamed into
    place get it, so outputs are as readable as any other file a user writes (``mkstemp``
    and ``mkdtemp`` make them private to their owner)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2) -> None:
    """Atomically write ``data`` (a dict or a pydantic model) as JSON, indented unless
    ``indent=None`` (compact, and ~30× faster for large lists: the C encoder)."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    atomic_write_text(path, json.dumps(data, indent=indent, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise VoxsegError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise VoxsegError(f"{path}: not valid JSON ({exc})") from exc


def load_model(cls: type[M], path: str | os.PathLike[str]) -> M:
    """Read and validate a JSON config, naming the file on error."""
    try:
        return cls.model_validate(read_json(path))
    except ValidationError as exc:
        raise VoxsegError(f"{path}: invalid {cls.__name__}:\n{exc}") from exc
