"""Writing a trace: segmentation, probabilities, surface and centerline meshes, step log,
overview picture."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from voxseg.config import write_json
from voxseg.io import (
    Image,
    mask_to_surface,
    max_projection,
    write_image_region,
    write_stl,
    write_vtp,
)

#: File names inside a trace output folder (``{ending}`` is the image file ending).
OUTPUT_FILES = {
    "segmentation": "segmentation{ending}",
    "probabilities": "probabilities{ending}",
    "surface": "surface.vtp",
    "surface_stl": "surface.stl",
    "centerline": "centerline.vtp",
    "steps": "steps.json",
    "overview": "overview.png",
}


def write_trace(
    result, out: str | os.PathLike[str], file_ending: str = ".nii.gz", image: Image | None = None
) -> Path:
    """Write a :class:`~voxseg.vessels.tracing.TraceResult` into the folder ``out``. The
    segmentation and probabilities cover the image's grid; only the traced region holds
    values, and a NIfTI is written slab by slab from it (a trace in a clinical-size field
    never holds the whole grid)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = {k: v.format(ending=file_ending) for k, v in OUTPUT_FILES.items()}
    write_label_map(result, out / name["segmentation"], value=None)
    write_image_region(
        out / name["probabilities"], result.geometry, result.region_probabilities, result.region_lo
    )
    surface = mask_to_surface(_traced_part(result))
    write_vtp(surface, out / name["surface"])
    if surface.polys is not None and len(surface.polys):
        write_stl(surface, out / name["surface_stl"])
    if result.centerline is not None and result.centerline.branches:
        result.centerline.write(out / name["centerline"])
    write_json(out / name["steps"], result.steps_json())
    overview_png(result, out / name["overview"], image)
    return out


def write_label_map(result, path: str | os.PathLike[str], value: int | None = 1) -> Path:
    """The trace's segmentation on the image's grid as a label map at ``path``: the vessel as
    ``value`` (``None``: the segmentation's own values), written from the traced region."""
    block = result.region_segmentation
    if value is not None:
        block = (block > 0).astype(np.uint8) * np.uint8(value)
    return write_image_region(path, result.geometry, block, result.region_lo)


def _traced_part(result) -> Image:
    """The segmentation on the traced region grown by a voxel (so the surface closes there;
    the whole grid of zeros when nothing was traced)."""
    from voxseg.vessels.subvolume import Box, sub_geometry

    region = result.region
    if region is None:
        return result.segmentation
    lo = np.maximum(np.asarray(region.lo) - 1, 0)
    hi = np.minimum(np.asarray(region.hi) + 1, region.shape)
    grown = np.zeros(tuple(hi - lo), np.uint8)
    inner = tuple(
        slice(a - b, a - b + n) for a, b, n in zip(region.lo, lo, region.size, strict=True)
    )
    grown[inner] = result.region_segmentation
    box = Box(tuple(int(v) for v in lo), tuple(int(v) for v in hi), region.shape)
    return Image.from_geometry(grown, sub_geometry(result.geometry, box))


def overview_png(result, path: str | os.PathLike[str], image: Image | None = None) -> Path:
    """Maximum intensity projection along array axis z of ``image`` (else of the
    probabilities) with the segmentation outline and the trace points (coloured by branch,
    stops marked ×)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    geometry = result.geometry
    values = result.probabilities.array if image is None else image.array
    mip = max_projection(values[0] if values.ndim == 4 else values).astype(np.float32)
    block, lo = result.region_segmentation, result.region_lo
    seg_mip = np.zeros(geometry.shape[1:], bool)
    if block.size:
        seg_mip[lo[1] : lo[1] + block.shape[1], lo[2] : lo[2] + block.shape[2]] = block.max(0) > 0
    lo, hi = np.percentile(mip, [1, 99.5])
    aspect = geometry.spacing[1] / geometry.spacing[2]
    fig, ax = plt.subplots(figsize=(6, 6 * mip.shape[0] / max(mip.shape[1], 1) * aspect))
    ax.imshow(mip, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), aspect=aspect, origin="upper")
    if seg_mip.any():
        ax.contour(seg_mip.astype(float), levels=[0.5], colors="yellow", linewidths=0.6)
    if result.steps:
        pts = geometry.physical_to_index(np.array([s.point for s in result.steps]))
        branch = np.array([s.branch for s in result.steps])
        ax.scatter(pts[:, 2], pts[:, 1], c=branch, cmap="tab10", s=8)
        stops = [i for i, s in enumerate(result.steps) if s.status == "stopped"]
        ax.scatter(pts[stops, 2], pts[stops, 1], marker="x", c="red", s=18)
    ax.set_title(
        f"{len(result.steps)} steps, {result.num_branches} branches, {result.seconds:.1f} s"
    )
    ax.set_axis_off()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path
