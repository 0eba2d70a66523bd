"""Overlay PNGs of a prediction: the slice with the most foreground along each axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxseg.io import Image


def save_overlay(path: Path, image: Image, segmentation: Image) -> Path:
    """One PNG with up to three panels (one per array axis of extent > 1), labels coloured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = image.array if image.array.ndim == 3 else image.array[0]
    seg = segmentation.array
    axes = [a for a in range(3) if img.shape[a] > 1] or [0]
    if img.shape[0] == 1:
        axes = [0]
    fig, panels = plt.subplots(1, len(axes), figsize=(4 * len(axes), 4), squeeze=False)
    lo, hi = np.percentile(img, [0.5, 99.5])
    n = max(int(seg.max()), 1)
    for ax, a in zip(panels[0], axes, strict=True):
        counts = (seg > 0).sum(axis=tuple(i for i in range(3) if i != a))
        k = int(np.argmax(counts)) if counts.any() else img.shape[a] // 2
        sl = [slice(None)] * 3
        sl[a] = k
        ax.imshow(img[tuple(sl)], cmap="gray", vmin=lo, vmax=hi, origin="lower")
        ax.imshow(
            np.ma.masked_equal(seg[tuple(sl)], 0),
            cmap="tab10",
            vmin=0,
            vmax=max(n, 9),
            alpha=0.45,
            interpolation="nearest",
            origin="lower",
        )
        ax.set_title(f"axis {a}, slice {k}")
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
    return path
