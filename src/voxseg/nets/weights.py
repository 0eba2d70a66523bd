"""Network weights as safetensors, and adapting pretrained weights for fine-tuning."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.modules.conv import _ConvNd

from voxseg.config import new_file_mode
from voxseg.errors import VoxsegError

#: Prefix of the network's tensors in a training checkpoint (``voxseg.training.checkpoint``
#: stores the optimiser's and the RNG's beside them).
CHECKPOINT_NETWORK_PREFIX = "model."
#: The weights file's metadata: one key, because safetensors writes the metadata keys in a
#: random order per write (a Rust ``HashMap``; safetensors issue #584), so two keys made the
#: same weights two different files half of the time and a file's hash meaningless.
WEIGHTS_METADATA = {"format": "pt"}


def _storage_key(t: torch.Tensor) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """Equal for the names under which a model exposes one and the same tensor."""
    return t.data_ptr(), tuple(t.shape), t.stride()


def _unique_contiguous(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with each tensor it shares under several names once, as
    contiguous copies (channels-last parameters are not contiguous; safetensors stores
    row-major tensors only)."""
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
    out = {}
    for key, value in model.state_dict().items():
        ident = _storage_key(value)
        if ident in seen:
            continue
        seen.add(ident)
        out[key] = value.detach().cpu().clone(memory_format=torch.contiguous_format)
    return out


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write ``model``'s state dict to a safetensors file atomically (shared tensors once;
    ``load_weights`` restores the other names)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(_unique_contiguous(model), tmp, metadata=WEIGHTS_METADATA)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a safetensors state dict (CPU tensors), naming the file on error."""
    path = Path(path)
    if not path.is_file():
        raise VoxsegError(f"{path}: weights file not found")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as exc:
        raise VoxsegError(f"{path}: not a readable safetensors file ({exc})") from exc


def _complete(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Fill keys that ``save_weights`` stored once for tensors the model shares under two names."""
    own = model.state_dict()
    by_storage = {}
    for key, value in own.items():
        by_storage.setdefault(_storage_key(value), []).append(key)
    out = dict(state)
    for keys in by_storage.values():
        present = [k for k in keys if k in out]
        if present:
            for k in keys:
                out.setdefault(k, out[present[0]])
    return out


def load_weights(
    model: nn.Module, path: str | os.PathLike[str], strict: bool = True, *, prefix: str = ""
) -> None:
    """Load a safetensors file written by ``save_weights`` into ``model`` (in place); with
    ``prefix`` (:data:`CHECKPOINT_NETWORK_PREFIX`), the network of a training checkpoint."""
    state = read_weights(path)
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    state = _complete(state, model)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise VoxsegError(
            f"{path}: weights do not fit this network ({exc}); for another number of classes "
            f"or input channels use load_pretrained"
        ) from exc


@dataclass
class AdaptReport:
    """What ``adapt_state_dict`` did to each parameter of the target model."""

    loaded: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    adapted_channels: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        for title, keys in (
            ("re-initialised (output head: number of classes differs)", self.reinitialised),
            ("adapted to the new number of input channels", self.adapted_channels),
            ("not in the pretrained weights (kept initialised)", self.missing),
            ("in the pretrained weights but not in this network", self.unused),
        ):
            if keys:
                lines.append(f"{title}: {', '.join(keys)}")
        return "\n".join(lines)


def adapt_state_dict(
    state: dict[str, torch.Tensor], model: nn.Module
) -> tuple[dict[str, torch.Tensor], AdaptReport]:
    """Fit pretrained weights to ``model`` for fine-tuning; return the new state and a report.

    Tensors with equal names and shapes are kept. A tensor whose shape differs only in
    axis 1 by the change in input channels (the first layer, and any layer that also reads
    the raw input) is adapted: each new input channel gets the sum of the old channels'
    weights divided by the new count, so an input whose channels are all equal gives the same
    response as before. Every other shape mismatch (the output head when the number of
    classes differs) keeps the model's fresh initialisation.
    """
    own = model.state_dict()
    state = _complete(state, model)
    report = AdaptReport(unused=sorted(set(state) - set(own)))
    old_in, new_in = _input_channels(state, model)
    out: dict[str, torch.Tensor] = {}
    for key, target in own.items():
        if key not in state:
            report.missing.append(key)
            out[key] = target
            continue
        source = state[key].to(dtype=target.dtype)
        if source.shape == target.shape:
            report.loaded.append(key)
            out[key] = source
        elif _differs_only_in_axis1(source, target) and (source.shape[1], target.shape[1]) == (
            old_in,
            new_in,
        ):
            summed = source.sum(dim=1, keepdim=True) / new_in
            out[key] = summed.expand_as(target).clone()
            report.adapted_channels.append(key)
        else:
            if source.ndim != target.ndim:
                raise VoxsegError(
                    f"pretrained tensor {key!r} has shape {list(source.shape)}, the network "
                    f"needs {list(target.shape)}: the architectures differ"
                )
            out[key] = target
            report.reinitialised.append(key)
    if not report.loaded:
        raise VoxsegError("no pretrained tensor matches this network; is it the same architecture?")
    return out, report


def load_pretrained(model: nn.Module, path: str | os.PathLike[str]) -> AdaptReport:
    """Load pretrained safetensors weights into ``model`` through ``adapt_state_dict``."""
    state, report = adapt_state_dict(read_weights(path), model)
    model.load_state_dict(state, strict=True)
    return report


def _differs_only_in_axis1(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.ndim == b.ndim >= 2 and a.shape[0] == b.shape[0] and a.shape[2:] == b.shape[2:]


def _input_channels(
    state: dict[str, torch.Tensor], model: nn.Module
) -> tuple[int | None, int | None]:
    """Input channels of the pretrained and the new network, read from the first convolution."""
    for name, module in model.named_modules():
        if isinstance(module, _ConvNd) and not module.transposed:
            key = f"{name}.weight" if name else "weight"
            if key in state:
                return int(state[key].shape[1]), int(module.weight.shape[1])
    return None, None
