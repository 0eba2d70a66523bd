"""Training checkpoints: one safetensors file holding the network, the optimizer's tensors,
the RNG state and, in its metadata, everything else as JSON. Written atomically; no pickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from voxseg.errors import VoxsegError
from voxseg.nets.weights import CHECKPOINT_NETWORK_PREFIX as _MODEL

_OPT = "optim."
_RNG = "rng."
_AVG = "average."


@dataclass
class TrainState:
    """What a resumed run needs besides tensors."""

    epoch: int = 0
    best_ema: float | None = None
    ema: float | None = None
    epochs_since_best: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    config_hash: str = ""
    seconds: float = 0.0  # of a time budget, spent up to this checkpoint
    averaged: int = 0  # epochs in the weight average the checkpoint holds


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        plain = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPT}{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[key] = value
        rest["state"][str(pid)] = plain
    return tensors, rest


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in rest["state"].items()}
    for name, value in tensors.items():
        pid, key = name[len(_OPT) :].split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: TrainState,
    average: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Atomically write a checkpoint (temporary file, then rename); ``average`` is a
    running weight average to keep beside the weights."""
    path = Path(path)
    # clone: some networks (dynamic-network-architectures' U-Net) expose one tensor under
    # two names, which safetensors refuses to store twice without copies; contiguous:
    # safetensors stores row-major tensors only, and CPU training runs channels-last
    tensors = {
        f"{_MODEL}{k}": v.detach().cpu().clone(memory_format=torch.contiguous_format)
        for k, v in model.state_dict().items()
    }
    for k, v in (average or {}).items():
        tensors[f"{_AVG}{k}"] = v.detach().cpu().clone(memory_format=torch.contiguous_format)
    meta: dict[str, Any] = {"train_state": state.__dict__}
    if optimizer is not None:
        opt_tensors, opt_rest = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        meta["optimizer"] = opt_rest
    tensors[f"{_RNG}torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{_RNG}cuda{i}"] = s
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"voxseg": json.dumps(meta)})
    os.replace(tmp, path)
    return path


def load_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    restore_rng: bool = True,
) -> TrainState:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model``/``optimizer``."""
    path = Path(path)
    if not path.is_file():
        raise VoxsegError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["voxseg"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise VoxsegError(f"{path}: not a voxseg checkpoint ({exc})") from exc
    weights = {k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    model.load_state_dict(weights)
    if optimizer is not None and "optimizer" in meta:
        opt = {k: v for k, v in tensors.items() if k.startswith(_OPT)}
        optimizer.load_state_dict(_unflatten_optimizer(opt, meta["optimizer"]))
    if restore_rng:
        torch.set_rng_state(tensors[f"{_RNG}torch"])
        if torch.cuda.is_available():
            states = [tensors[k] for k in sorted(tensors) if k.startswith(f"{_RNG}cuda")]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
    return TrainState(**meta["train_state"])


def load_average(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The weight average a checkpoint holds (empty when it holds none)."""
    with safe_open(str(path), framework="pt") as f:
        return {k[len(_AVG) :]: f.get_tensor(k) for k in f.keys() if k.startswith(_AVG)}
