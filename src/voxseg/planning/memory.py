"""Memory and compute estimates for a U-Net topology and patch, and a measured check.

Activation memory (what autograd keeps for the backward pass) of nnU-Net's
``PlainConvUNet`` (every conv block is conv → instance norm → LeakyReLU(inplace)), per
sample, in elements, with ``|S_s|`` the voxels of stage ``s``, ``f_s`` its features,
``n_s``/``m_s`` its encoder/decoder convs, ``C`` input channels and ``K`` classes::

    A = C·|S_0|                                    network input
      + Σ_s     n_s · 2 · f_s·|S_s|                 encoder: norm input + activation per conv
      + Σ_{s<N} (2·f_s·|S_s|                        decoder: concatenation (skip + upsampled)
                 + m_s · 2 · f_s·|S_s|              decoder convs
                 + K·|S_s|)                         segmentation output (deep supervision)

Training memory on a GPU = ``GPU_OVERHEAD`` × batch × A × 2 bytes (mixed precision)
+ 16 bytes per parameter (weights, gradients, momentum, AMP copy) + a fixed CUDA context.
``GPU_OVERHEAD`` (allocator fragmentation, cuDNN workspaces, loss buffers) is set so that
nnU-Net's default 3D plan (128³, 6 stages, 32–320 features, batch 2) needs ≈ 7.7 GB, the
figure nnU-Net reports. :func:`check_memory_estimate` measures ``A`` on a real network.

Compute (for CPU planning): forward FLOPs = Σ over convolutions 2·k·c_in·c_out·|S_out|;
one training iteration ≈ 3 × forward × batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from voxseg.nets.topology import Topology

GPU_OVERHEAD = 1.75
CUDA_CONTEXT_BYTES = 0.75 * 1024**3
AMP_BYTES = 2
BYTES_PER_PARAMETER = 16


def stage_shapes(topology: Topology, patch_size: Sequence[int]) -> list[list[int]]:
    """Spatial shape of every stage (ceil division by the cumulative strides)."""
    shape = [int(p) for p in patch_size]
    out = []
    for stride in topology.strides:
        shape = [math.ceil(s / st) for s, st in zip(shape, stride, strict=True)]
        out.append(list(shape))
    return out


def activation_elements(
    topology: Topology, patch_size: Sequence[int], in_channels: int, num_classes: int
) -> int:
    """``A`` of the module docstring: activation elements kept for backward, per sample."""
    sizes = [math.prod(s) for s in stage_shapes(topology, patch_size)]
    f = topology.features_per_stage
    total = in_channels * math.prod(patch_size)
    for s, n in enumerate(topology.n_conv_per_stage):
        total += n * 2 * f[s] * sizes[s]
    for s, m in enumerate(topology.n_conv_per_stage_decoder):
        total += (2 + 2 * m) * f[s] * sizes[s] + num_classes * sizes[s]
    return int(total)


def num_parameters(topology: Topology, in_channels: int, num_classes: int) -> int:
    """Weights and biases of the convolutions (norm parameters are negligible)."""
    f = topology.features_per_stage
    total = 0
    prev = in_channels
    for s, n in enumerate(topology.n_conv_per_stage):
        k = math.prod(topology.kernel_sizes[s])
        total += (prev * f[s] * k + f[s]) + (n - 1) * (f[s] * f[s] * k + f[s])
        prev = f[s]
    for s, m in enumerate(topology.n_conv_per_stage_decoder):
        k = math.prod(topology.kernel_sizes[s])
        total += f[s + 1] * f[s] * math.prod(topology.strides[s + 1])
        total += (2 * f[s] * f[s] * k + f[s]) + (m - 1) * (f[s] * f[s] * k + f[s])
        total += f[s] * num_classes + num_classes
    return int(total)


@dataclass(frozen=True)
class BatchCost:
    """What one training iteration costs at batch size ``b``: ``fixed + b × per_sample``."""

    fixed: float
    per_sample: float

    def at(self, batch_size: int) -> float:
        return self.fixed + batch_size * self.per_sample


def gpu_training_bytes(
    topology: Topology, patch_size: Sequence[int], in_channels: int, num_classes: int
) -> BatchCost:
    """Estimated GPU memory of one mixed-precision training step (module docstring): the
    activations per sample, the parameters' state and the CUDA context once."""
    act = activation_elements(topology, patch_size, in_channels, num_classes)
    params = num_parameters(topology, in_channels, num_classes)
    return BatchCost(
        fixed=BYTES_PER_PARAMETER * params + CUDA_CONTEXT_BYTES,
        per_sample=GPU_OVERHEAD * act * AMP_BYTES,
    )


def forward_flops(
    topology: Topology, patch_size: Sequence[int], in_channels: int, num_classes: int
) -> float:
    """Multiply–adds × 2 of one forward pass of one sample (convolutions only)."""
    shapes = stage_shapes(topology, patch_size)
    sizes = [math.prod(s) for s in shapes]
    f = topology.features_per_stage
    flops = 0.0
    prev = in_channels
    for s, n in enumerate(topology.n_conv_per_stage):
        k = math.prod(topology.kernel_sizes[s])
        flops += 2 * k * prev * f[s] * sizes[s] + (n - 1) * 2 * k * f[s] * f[s] * sizes[s]
        prev = f[s]
    for s, m in enumerate(topology.n_conv_per_stage_decoder):
        k = math.prod(topology.kernel_sizes[s])
        flops += 2 * f[s + 1] * f[s] * sizes[s]  # transposed conv, kernel = stride
        flops += 2 * k * 2 * f[s] * f[s] * sizes[s] + (m - 1) * 2 * k * f[s] * f[s] * sizes[s]
    flops += 2 * f[0] * num_classes * sizes[0]
    return float(flops)


def training_flops(
    topology: Topology, patch_size: Sequence[int], in_channels: int, num_classes: int
) -> BatchCost:
    """FLOPs of one training iteration: forward + backward ≈ 3 × forward, per sample."""
    forward = forward_flops(topology, patch_size, in_channels, num_classes)
    return BatchCost(fixed=0.0, per_sample=3.0 * forward)


@dataclass(frozen=True)
class MemoryCheck:
    """Estimated against measured activation bytes of one forward/backward."""

    estimated_bytes: float
    measured_bytes: float
    device: str

    @property
    def ratio(self) -> float:
        """measured / estimated."""
        return self.measured_bytes / self.estimated_bytes


def check_memory_estimate(
    topology: Topology,
    patch_size: Sequence[int],
    in_channels: int = 1,
    num_classes: int = 2,
    batch_size: int = 1,
    device: str = "cpu",
) -> MemoryCheck:
    """Build the U-Net, run one forward/backward in float32 and measure its activations.

    CPU: the bytes of every distinct storage autograd saves for backward (recorded with
    ``torch.autograd.graph.saved_tensors_hooks``; parameters excluded). CUDA: the peak of
    ``torch.cuda.max_memory_allocated`` above the model, input and gradients. Both are
    compared with ``activation_elements × 4 bytes × batch``.
    """
    import torch

    from voxseg.nets import build_network

    model = build_network(
        "unet",
        in_channels=in_channels,
        num_classes=num_classes,
        topology=topology,
        patch_size=list(patch_size),
        deep_supervision=True,
    ).to(device)
    x = torch.randn(batch_size, in_channels, *patch_size, device=device)
    estimated = (
        4.0 * batch_size * activation_elements(topology, patch_size, in_channels, num_classes)
    )
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        outputs = model(x)
        peak_forward = torch.cuda.max_memory_allocated(device) - base
        sum(o.float().mean() for o in outputs).backward()
        torch.cuda.synchronize(device)
        return MemoryCheck(estimated, float(peak_forward), device)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        outputs = model(x)
        loss = sum(o.float().mean() for o in outputs)
    loss.backward()
    return MemoryCheck(estimated, float(sum(saved.values())), device)
