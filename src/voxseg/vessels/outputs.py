"""Writing a trace: segmentation, probabilities, surface and centerline meshes, step log,
overview picture."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from voxseg.config import write_json
from voxseg.io import Image, mask_to_surface, write_image, write_stl, write_vtp

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
    """Write a :class:`~voxseg.vessels.tracing.TraceResult` into the folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_image(result.segmentation, out / f"segmentation{file_ending}")
    write_image(result.probabilities, out / f"probabilities{file_ending}")
    surface = mask_to_surface(_traced_part(result))
    write_vtp(surface, out / "surface.vtp")
    if surface.polys is not None and len(surface.polys):
        write_stl(surface, out / "surface.stl")
    if result.centerline is not None and result.centerline.branches:
        result.centerline.write(out / "centerline.vtp")
    write_json(out / "steps.json", result.steps_json())
    overview_png(result, out / "overview.png", image)
    return out


def _traced_part(result) -> Image:
    """The segmentation on the traced region grown by a voxel (so the surface closes there),
    or the whole segmentation when the result has no region."""
    from voxseg.vessels.subvolume import Box, crop

    seg = result.segmentation
    region = getattr(result, "region", None)
    if region is None:
        return seg
    lo = tuple(max(v - 1, 0) for v in region.lo)
    hi = tuple(min(v + 1, n) for v, n in zip(region.hi, region.shape, strict=True))
    return crop(seg, Box(lo, hi, region.shape))


def overview_png(result, path: str | os.PathLike[str], image: Image | None = None) -> Path:
    """Maximum intensity projection along array axis z of ``image`` (else of the
    probabilities) with the segmentation outline and the trace points (coloured by branch,
    stops marked ×)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    geometry = result.probabilities.geometry
    prob = result.probabilities.array
    seg = result.segmentation.array > 0
    values = prob if image is None else (image.array[0] if image.array.ndim == 4 else image.array)
    mip = values.max(axis=0).astype(np.float32)
    lo, hi = np.percentile(mip, [1, 99.5])
    aspect = geometry.spacing[1] / geometry.spacing[2]
    fig, ax = plt.subplots(figsize=(6, 6 * mip.shape[0] / max(mip.shape[1], 1) * aspect))
    ax.imshow(mip, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), aspect=aspect, origin="upper")
    if seg.any():
        ax.contour(seg.max(axis=0).astype(float), levels=[0.5], colors="yellow", linewidths=0.6)
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
