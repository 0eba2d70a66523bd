"""Peak memory of one case, estimated from the file headers and the plan before any volume
is read, so that ``preprocess`` and ``predict`` refuse a case that cannot fit instead of
being killed by the system half-way.

``V``: voxels as read, ``R``: voxels at the plan's spacing, ``C`` channels, ``K`` network
outputs, ``read``: the bytes of the files' pixel data. The estimates

* preprocess: ``read + 10·V·C + 14·R·C``, with a label map ``+ 4·V + 20·R``;
* predict: ``read + 10·V·C + 14·R·C + 4·R·(K + 1) + 2·V``, with probabilities
  ``+ 4·K·(V + R)``

were fitted to the peak RSS measured around ``preprocess_case`` (a 64×256×256 float32
image with a label map, target spacings giving R from V/4 to 4V: the estimate is 1.1 to
2.5 times the measured growth) and around ``Predictor.predict`` (see
``tests/preprocessing/test_memory_guard.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from voxseg.io import file_ending
from voxseg.io.formats import VOLUME_ENDINGS
from voxseg.io.header import (
    ImageHeader,
    check_claimed_size,
    memory_check_enabled,
    read_header,
    require_memory,
)

HEADER_ENDINGS = (*VOLUME_ENDINGS, ".tif", ".tiff")


def resampled_voxels(header: ImageHeader, target_spacing: Sequence[float]) -> int:
    """Voxels of ``header``'s image at ``target_spacing`` (2D plans: ``(y, x)``, z kept)."""
    target = list(target_spacing)
    if len(target) == 2:
        target = [header.spacing[0], *target]
    return math.prod(
        max(1, round(n * s / t))
        for n, s, t in zip(header.shape, header.spacing, target, strict=True)
    )


def preprocess_peak_bytes(
    images: Sequence[ImageHeader], label: ImageHeader | None, target_spacing: Sequence[float]
) -> int:
    first = images[0]
    v, r = first.voxels, resampled_voxels(first, target_spacing)
    c = sum(h.channels for h in images)
    need = sum(h.nbytes for h in images) + 10 * v * c + 14 * r * c
    if label is not None:
        need += 4 * v + 20 * r
    return need


def predict_peak_bytes(
    images: Sequence[ImageHeader],
    target_spacing: Sequence[float],
    num_outputs: int,
    probabilities: bool = False,
) -> int:
    first = images[0]
    v, r = first.voxels, resampled_voxels(first, target_spacing)
    c = sum(h.channels for h in images)
    need = sum(h.nbytes for h in images) + 10 * v * c + 14 * r * c + 4 * r * (num_outputs + 1)
    need += 2 * v
    if probabilities:
        need += 4 * num_outputs * (v + r)
    return need


def headers(paths: Sequence[Path]) -> list[ImageHeader] | None:
    """The headers of volume files (``None`` for DICOM folders and 2D natural images, whose
    size is checked when read)."""
    if not all(p.is_file() and file_ending(p) in HEADER_ENDINGS for p in paths):
        return None
    out = []
    for p in paths:
        header = read_header(p)
        check_claimed_size(header)
        out.append(header)
    return out


def check_preprocess(
    case_id: str, images: Sequence[Path], label: Path | None, plan_spacing, num_processes: int = 1
) -> None:
    """Refuse a training case whose preprocessing cannot fit in the available memory."""
    found = headers([*images, *([label] if label else [])])
    if found is None or not memory_check_enabled():
        return
    image_headers = found[: len(images)]
    label_header = found[len(images)] if label else None
    need = preprocess_peak_bytes(image_headers, label_header, plan_spacing) * num_processes
    hint = (
        "preprocess with fewer processes (-p 1)"
        if num_processes > 1
        else ("preprocess on a machine with more memory")
    )
    require_memory(need, f"preprocessing {case_id} ({images[0]})", hint)


def check_predict(
    case_id: str, paths: Sequence[Path], plan_spacing, num_outputs: int, probabilities: bool
) -> None:
    """Refuse a case whose prediction cannot fit in the available memory."""
    found = headers(paths)
    if found is None or not memory_check_enabled():
        return
    need = predict_peak_bytes(found, plan_spacing, num_outputs, probabilities)
    hint = (
        "predict without --save-probabilities"
        if probabilities
        else ("predict on a machine with more memory")
    )
    require_memory(need, f"predicting {case_id} ({paths[0]})", hint)
