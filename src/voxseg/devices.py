"""Devices and precision: which device ``auto`` means and which autocast dtype to use."""

from __future__ import annotations

import torch

from voxseg.errors import VoxsegError


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when torch sees a GPU, else MPS where available, else the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 in hardware (Intel AMX tiles).

    Measured on 2 cores of such a CPU (PlainConvUNet 8–128 features, 2×1×32×64×64): a
    training step 0.58 s in float32, 0.22 s under bf16 autocast; inference at 2×1×48×96×96
    0.80 s vs 0.30 s. CPUs without AMX keep float32 under ``auto`` (their bf16 speed is
    unmeasured here).
    """
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe is not None and probe())


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``setting`` on ``device``; ``None`` runs in float32.

    ``auto``: bf16 on CUDA (fp16 where bf16 is unsupported) and on CPUs with AMX; float32
    elsewhere (other CPUs, MPS).
    """
    if setting not in ("auto", "bf16", "fp16", "off"):
        raise VoxsegError(f"amp must be auto, bf16, fp16 or off, not {setting!r}")
    if setting == "off":
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


def use_channels_last(setting: bool | str, device: torch.device) -> bool:
    """Whether to train in the channels-last memory layout.

    ``auto``: on the CPU, where oneDNN's convolutions run faster on channels-last
    tensors — measured on 2 cores of an AVX2 CPU in float32, one training step (network
    and input both channels-last): 1.35–1.45× faster for 3D U-Nets (8–64 features at
    2×1×28×32×32, 8–128 at 2×1×32×64×64), 1.15× at 2×1×20×40×32, 1.07× for a 2D U-Net at
    7×1×96×96; inference forwards showed no difference, so prediction keeps the default
    layout. CPUs with AMX also get it (their bf16 step with it is unmeasured here); off
    elsewhere (unmeasured on GPUs here).
    """
    if setting == "auto":
        return device.type == "cpu"
    if isinstance(setting, bool):
        return setting
    raise VoxsegError(f"channels_last must be auto, true or false, not {setting!r}")


def memory_format(spatial_dims: int) -> torch.memory_format:
    """The channels-last memory format of a ``spatial_dims``-D batch."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
