"""What a configuration may cost on its device: one strategy object per device kind.

A :class:`DeviceStrategy` is built from a :class:`DeviceProfile` (the network widths of a
device kind) and the user's budget. It says what a patch's cost is and its limit, how the
batch fills the budget, whether the network narrows for a fixed patch, and how the
low-resolution stage is budgeted:

- :class:`GpuStrategy` (nnU-Net's rules): the estimated training memory at batch 2
  (:func:`voxseg.planning.memory.gpu_training_bytes`) fits ``gpu_memory_gb``; the batch
  grows while it fits; the ``3d_lowres`` patch covers a quarter of the median image.
- :class:`CpuStrategy`: nnU-Net's default 3D network needs seconds per iteration on a
  laptop, so the CPU plan is narrower and one training iteration at batch 2 needs at most
  ``gflops`` GFLOPs; the ``3d_lowres`` patch holds the whole median image with a larger
  budget, scaled down for short trainings.

The constants below were tuned on phantoms; each sits next to the measurement that set it
(``benchmarks/RESULTS.md`` has the commands and the full tables).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import ClassVar

from pydantic import BaseModel, Field

from voxseg import devices
from voxseg.nets.topology import Topology
from voxseg.planning import memory, rules

#: nnU-Net's patch estimates and batch size are for batch 2, the smallest batch it trains.
MIN_BATCH = 2
#: nnU-Net: one batch covers at most 5 % of the dataset's voxels (no more samples per
#: iteration than the data can vary).
MAX_DATASET_COVERED = 0.05
#: nnU-Net: a ``3d_lowres`` stage is planned when the ``3d_fullres`` patch covers less than
#: a quarter of the median image, and on a GPU it coarsens until its patch covers a quarter.
LOWRES_THRESHOLD = 0.25

#: CPU per-iteration budget (GFLOP at batch 2). Measured for a CT-like plan (patch 14×40×40,
#: 4 stages, 4.2 GFLOP): 2.3–4.8 s per iteration on 2 cores shared at load ~6.5, about 1 s
#: on two idle cores (thin 3D convolutions, norms and activations run at ~5 GFLOP/s
#: effective on a CPU, far below the peak of wide convolutions). On a CPU with AMX, where
#: training runs under bf16 autocast, 2.5× this budget trains as fast per iteration (organs
#: phantoms: 11.6 GFLOP at patch 28×48×48 in 0.16 s vs 4.3 GFLOP at 20×40×32 in 0.167 s in
#: float32), but that larger patch reached a lower held-out Dice in 15 minutes (0.51 vs
#: 0.69; RESULTS.md, "bf16 and whole-image context"): the budget stays and AMX buys more
#: iterations instead.
CPU_GFLOPS = 5.0
#: CPU plans: the ``3d_lowres`` stage coarsens until its patch holds the whole median image
#: (nnU-Net: a quarter). On a short CPU training, context beats resolution: on the organs
#: phantoms (15 minutes, 2 cores) patches of a quarter of the image at full resolution
#: reached a held-out Dice of 0.51–0.69 with false positives far from the organs; the whole
#: image at half the in-plane resolution 0.84–0.85 (RESULTS.md, "Whole image, 8 base
#: features" and "The planner's CPU whole-image stage").
CPU_LOWRES_COVERAGE = 1.0
#: On a CPU that multiplies bf16 in hardware (AMX), the whole-image stage gets this many
#: times the per-iteration FLOP budget: under bf16 autocast a network 4× wider costs 1.3×
#: per iteration (organs, patch 48³: 8–64 features 0.21 s vs 4–32 features 0.166 s), since
#: thin convolutions leave the matrix units idle (RESULTS.md, "Whole image, 8 base features").
BF16_CPU_BUDGET_FACTOR = 4.0
#: On other CPUs (float32), the same 4×: 3D training runs channels-last there, 1.2–1.4×
#: faster per step (benchmarks/memory_layout.py), and the ``adamw`` recipe converges in a few
#: thousand iterations. On the organs phantoms (15 minutes, 2 cores of an AVX2 CPU, adamw)
#: the whole image at 20 GFLOP (3.25 × 1.65 mm) reached a held-out Dice of 0.853–0.864 (two
#: seeds) against 0.839–0.862 at 10 GFLOP (3.9 × 2.0 mm) and 0.82–0.83 at 5 GFLOP
#: (RESULTS.md, "A recipe for short budgets: AdamW + warm-up cosine").
FLOAT32_CPU_LOWRES_FACTOR = 4.0
#: A CPU training shorter than this gets a whole-image 3d_lowres cheaper in proportion: on 16
#: organ phantoms with 219 s of training, 20 GFLOP per iteration reached held-out Dice 0.26,
#: 10 GFLOP 0.51, 5 GFLOP 0.51 (more iterations on a coarser grid); with 15 minutes, 20
#: GFLOP reaches 0.85 (RESULTS.md, "`voxseg auto` and time budgets").
LOWRES_FULL_BUDGET_SECONDS = 600.0
#: A CPU plan with a fixed patch narrows its network to meet the budget, down to this width.
MIN_CPU_BASE_FEATURES = 4


class DeviceProfile(BaseModel):
    """Network width and patch budget of one target device."""

    base_features: int
    max_features_3d: int
    max_features_2d: int
    base_features_2d: int | None = Field(None, description="2D first-stage width; None: same")
    initial_voxels_3d: float = 256.0**3
    initial_voxels_2d: float = 2048.0**2

    def base(self, dims: int) -> int:
        """First-stage features of a ``dims``-D network."""
        return (self.base_features_2d or self.base_features) if dims == 2 else self.base_features

    def cap(self, dims: int) -> int:
        """Most features of any stage of a ``dims``-D network."""
        return self.max_features_3d if dims == 3 else self.max_features_2d

    def initial_voxels(self, dims: int) -> float:
        """Voxels of the patch the shrinking starts from."""
        return self.initial_voxels_3d if dims == 3 else self.initial_voxels_2d


PROFILES = {
    "cuda": DeviceProfile(base_features=32, max_features_3d=320, max_features_2d=512),
    # 2D on a CPU: 16 features. At the per-iteration FLOP budget the wider network gets a
    # patch of about 60 % of the slice per axis instead of the whole slice; on real MR
    # anatomy with test slices from other brain levels that generalised better (held-out
    # Dice 0.782 vs 0.692 at 8 features and the whole slice; the smaller patch alone: 0.758,
    # 16 features at the whole slice: 0.695; RESULTS.md, "What loses generalisation in 2D").
    "cpu": DeviceProfile(
        base_features=8, max_features_3d=128, max_features_2d=256, base_features_2d=16
    ),
}


@dataclass(frozen=True)
class Channels:
    """A network's input channels and outputs: with the topology and patch, its cost."""

    inputs: int
    outputs: int


@dataclass(frozen=True)
class DeviceStrategy(ABC):
    """How one device kind budgets a configuration (see the module docstring)."""

    device: ClassVar[str]
    profile: DeviceProfile

    @abstractmethod
    def cost(self, topo: Topology, patch: list[int], channels: Channels) -> float:
        """The budgeted quantity of one training iteration at batch ``MIN_BATCH``."""

    @property
    @abstractmethod
    def limit(self) -> float:
        """The most :meth:`cost` may be."""

    @abstractmethod
    def rule(self) -> str:
        """The budget in words: ``cost ≤ limit``."""

    @abstractmethod
    def batch_fit(self, topo: Topology, patch: list[int], channels: Channels) -> tuple[int, str]:
        """How many samples fit the budget, and that rule in words."""

    @abstractmethod
    def lowres(self) -> tuple[DeviceStrategy, float, str]:
        """The ``3d_lowres`` stage's strategy, the share of the median image its patch must
        cover, and what the plan's ``3d_lowres`` explanation adds ("" for nothing)."""

    def batch_size(
        self, topo: Topology, patch: list[int], channels: Channels, dataset_voxels: float
    ) -> tuple[int, str]:
        """As many samples as fit the budget, at most ``MAX_DATASET_COVERED`` of the
        dataset's voxels, at least ``MIN_BATCH``; and the rule in words."""
        fit, fit_rule = self.batch_fit(topo, patch, channels)
        cover = int(round(MAX_DATASET_COVERED * dataset_voxels / math.prod(patch)))
        return max(MIN_BATCH, min(fit, cover)), (
            f"{fit_rule}, at most {MAX_DATASET_COVERED:.0%} of the dataset's voxels per batch "
            f"({cover}), at least {MIN_BATCH}"
        )

    def narrow(
        self, topo: Topology, patch: list[int], channels: Channels, cap: int
    ) -> tuple[Topology, str]:
        """For a patch the user fixed: the network, narrowed to the budget where the device
        does that, and why ("" when unchanged)."""
        return topo, ""

    def describe(self) -> str:
        """The device's part of the plan's explanations."""
        p = self.profile
        return (
            f"planned for {self.device}: features {p.base(3)}·2^i capped at "
            f"{p.max_features_3d} (3D) / {p.base(2)}·2^i capped at {p.max_features_2d} (2D)"
        )


@dataclass(frozen=True)
class GpuStrategy(DeviceStrategy):
    """nnU-Net's rules: the estimated training memory fits the GPU."""

    device: ClassVar[str] = "cuda"
    gpu_memory_gb: float = 8.0

    def cost(self, topo: Topology, patch: list[int], channels: Channels) -> float:
        return memory.gpu_training_bytes(topo, patch, channels.inputs, channels.outputs).at(
            MIN_BATCH
        )

    @property
    def limit(self) -> float:
        return self.gpu_memory_gb * 1024**3

    def rule(self) -> str:
        return f"estimated GPU memory at batch {MIN_BATCH} ≤ {self.gpu_memory_gb:g} GB"

    def batch_fit(self, topo: Topology, patch: list[int], channels: Channels) -> tuple[int, str]:
        need = memory.gpu_training_bytes(topo, patch, channels.inputs, channels.outputs)
        fit = int((self.limit - need.fixed) // need.per_sample)
        return fit, f"as many as fit the memory budget ({fit})"

    def lowres(self) -> tuple[DeviceStrategy, float, str]:
        return self, LOWRES_THRESHOLD, ""


@dataclass(frozen=True)
class CpuStrategy(DeviceStrategy):
    """A training iteration's FLOPs fit a per-iteration budget (``gflops`` at batch 2)."""

    device: ClassVar[str] = "cpu"
    gflops: float = CPU_GFLOPS
    lowres_gflops: float | None = None
    training_seconds: float | None = None
    fixed_width: bool = False

    def cost(self, topo: Topology, patch: list[int], channels: Channels) -> float:
        return memory.training_flops(topo, patch, channels.inputs, channels.outputs).at(MIN_BATCH)

    @property
    def limit(self) -> float:
        return self.gflops * 1e9

    def rule(self) -> str:
        return f"training FLOPs per iteration at batch {MIN_BATCH} ≤ {self.gflops:g} GFLOP"

    def batch_fit(self, topo: Topology, patch: list[int], channels: Channels) -> tuple[int, str]:
        per_sample = memory.training_flops(
            topo, patch, channels.inputs, channels.outputs
        ).per_sample
        fit = int(self.limit // per_sample) if per_sample > 0 else MIN_BATCH
        return fit, (
            f"as many as fit the per-iteration budget of {self.gflops:g} GFLOP ({fit}; a patch "
            f"clipped to the image leaves room)"
        )

    def narrow(
        self, topo: Topology, patch: list[int], channels: Channels, cap: int
    ) -> tuple[Topology, str]:
        """Halve the width until the fixed patch meets the budget (at least
        ``MIN_CPU_BASE_FEATURES``), unless the user chose the width."""
        if self.fixed_width:
            return topo, ""
        first = base = topo.features_per_stage[0]
        n = len(topo.features_per_stage)  # same patch, same pooling: only the width changes
        while self.cost(topo, patch, channels) > self.limit and base // 2 >= MIN_CPU_BASE_FEATURES:
            base //= 2
            topo = topo.model_copy(
                update={"features_per_stage": rules.features_per_stage(n, base, cap)}
            )
        if base == first:
            return topo, ""
        return topo, (
            f"; features narrowed to {base}·2^i for the CPU budget of {self.gflops:g} GFLOP per "
            f"iteration at batch {MIN_BATCH} ({self.cost(topo, patch, channels) / 1e9:.1f} "
            f"GFLOP, at least {MIN_CPU_BASE_FEATURES}·2^i)"
        )

    def lowres(self) -> tuple[DeviceStrategy, float, str]:
        gflops, why = self.lowres_budget()
        return (
            replace(self, gflops=gflops),
            CPU_LOWRES_COVERAGE,
            "; on a CPU the low-resolution stage holds the whole median image in one patch "
            f"(the configuration to train on a CPU budget) at {why}",
        )

    def lowres_budget(self) -> tuple[float, str]:
        """GFLOPs per iteration (batch 2) of the whole-image ``3d_lowres``, and why."""
        if self.lowres_gflops is not None:
            return self.lowres_gflops, "user override (--cpu-lowres-gflops)"
        gflops, why = self._lowres_full_budget()
        seconds = self.training_seconds
        if seconds is None or seconds >= LOWRES_FULL_BUDGET_SECONDS:
            return gflops, why
        short = max(self.gflops, gflops * seconds / LOWRES_FULL_BUDGET_SECONDS)
        return short, (
            f"{why}; scaled by the training time, {seconds:.0f} s of "
            f"{LOWRES_FULL_BUDGET_SECONDS:g} s, to {short:.1f} GFLOP (at least "
            f"{self.gflops:g}): a short training needs more iterations more than a finer grid"
        )

    def _lowres_full_budget(self) -> tuple[float, str]:
        base = self.gflops
        if devices.cpu_has_fast_bf16():
            return BF16_CPU_BUDGET_FACTOR * base, (
                f"{BF16_CPU_BUDGET_FACTOR:g}× the {base:g} GFLOP budget: this CPU multiplies "
                f"bf16 in hardware (AMX), where training runs under bf16 autocast and a 4× "
                f"wider network costs about 1.3× per iteration"
            )
        return FLOAT32_CPU_LOWRES_FACTOR * base, (
            f"{FLOAT32_CPU_LOWRES_FACTOR:g}× the {base:g} GFLOP budget: no hardware bf16 on "
            f"this CPU (float32), where channels-last 3D training steps are about 1.3× faster "
            f"and the adamw recipe learns in a few thousand iterations"
        )

    def describe(self) -> str:
        return super().describe() + (
            f"; {self.gflops:g} GFLOP per training iteration at batch {MIN_BATCH}"
        )
