"""Phantom generators: complete, seeded raw datasets in nnU-Net v2 format.

``generate("organs", "raw/Dataset001_Organs", num_train=8, seed=1)`` writes
``imagesTr/``, ``labelsTr/``, ``imagesTs/``, ``labelsTs/`` and ``dataset.json`` (plus
``centerlines/`` and ``seeds/`` for ``vessels``). The same options and seed give the same
arrays. Kinds: ``organs`` (CT abdomen), ``vessels`` (branching tubes with centerlines),
``cord`` (T2w spinal cord with lesions), ``spine`` (CT vertebrae in a large field of view),
``rgb2d`` (2D RGB images of thin curvilinear structures).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from voxseg.errors import VoxsegError
from voxseg.synth import cord, organs, rgb2d, spine, vessels  # noqa: F401  (registers kinds)
from voxseg.synth._common import SYNTH, Phantom, SynthCase, case_rng


def phantom(kind: str, **options: Any) -> Phantom:
    """The validated options of one kind (unknown options name the valid ones)."""
    cls = SYNTH.get(kind)
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise VoxsegError(
            f"synth {kind}: unknown option(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(valid))}"
        )
    for name, value in options.items():
        if isinstance(value, list):
            options[name] = tuple(value)
    return cls(**options)


def generate(kind: str, out: str | os.PathLike[str], workers: int = 1, **options: Any) -> Path:
    """Write a synthetic raw dataset of ``kind`` into ``out``; returns the dataset root.

    ``workers`` processes generate cases in parallel; the arrays do not depend on it.
    """
    return phantom(kind, **options).write(out, workers=workers)


def kinds() -> list[str]:
    """Names of the registered phantom kinds."""
    return SYNTH.names()


__all__ = ["SYNTH", "Phantom", "SynthCase", "case_rng", "generate", "kinds", "phantom"]
