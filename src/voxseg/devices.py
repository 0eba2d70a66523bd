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


def use_channels_last(setting: bool | str, device: torch.device, spatial_dims: int = 3) -> bool:
    """Whether to train in the channels-last memory layout.

    ``auto``: for 3D networks on the CPU, where oneDNN's convolution backward passes run
    faster on channels-last tensors — ``benchmarks/memory_layout.py``, 2 cores of an AVX2
    CPU in float32, network and batch both channels-last: a training step 1.22–1.39×
    faster for the 3D U-Nets of the CPU plans; 0.95–1.08× for a 2D U-Net and 0.97–1.13×
    for inference forwards, so 2D training and prediction keep the default layout. CPUs
    with AMX also get it (their bf16 step with it is unmeasured here); off on GPUs
    (unmeasured here).
    """
    if setting == "auto":
        return device.type == "cpu" and spatial_dims == 3
    if isinstance(setting, bool):
        return setting
    raise VoxsegError(f"channels_last must be auto, true or false, not {setting!r}")


def memory_format(spatial_dims: int) -> torch.memory_format:
    """The channels-last memory format of a ``spatial_dims``-D batch."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
