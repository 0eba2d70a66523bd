"""Overlay PNGs of a prediction: the slice with the most foreground along each axis, the
prediction filled, the reference (when given) outlined, the case name and a legend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from voxseg.data.colors import label_color
from voxseg.io import Image


def _rgba(seg: np.ndarray, values: Sequence[int], alpha: float) -> np.ndarray:
    from matplotlib.colors import to_rgb

    out = np.zeros((*seg.shape, 4), np.float32)
    for v in values:
        out[seg == v] = (*to_rgb(label_color(v)), alpha)
    return out


def save_overlay(
    path: Path,
    image: Image,
    segmentation: Image,
    reference: Image | None = None,
    labels: Mapping[str, int] | None = None,
    title: str | None = None,
) -> Path:
    """One PNG with up to three panels (one per array axis of extent > 1): the prediction
    filled in its label colours, the ``reference`` (if any) as outlines in the same colours,
    the case name (``title``, default the file's stem) and a legend naming the labels
    (``labels``: name → value; default the values found)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    img = image.array if image.array.ndim == 3 else image.array[0]
    seg = segmentation.array
    ref = reference.array if reference is not None else None
    axes = [a for a in range(3) if img.shape[a] > 1] or [0]
    if img.shape[0] == 1:
        axes = [0]
    found = {int(v) for v in np.unique(seg)} | (
        {int(v) for v in np.unique(ref)} if ref is not None else set()
    )
    found.discard(0)
    names = {int(v): k for k, v in (labels or {}).items() if isinstance(v, int) and v > 0}
    values = sorted(found | set(names))
    fig, panels = plt.subplots(1, len(axes), figsize=(4 * len(axes), 4.6), squeeze=False)
    lo, hi = np.percentile(img, [0.5, 99.5])
    for ax, a in zip(panels[0], axes, strict=True):
        fg = (seg > 0) if ref is None else (seg > 0) | (ref > 0)
        counts = fg.sum(axis=tuple(i for i in range(3) if i != a))
        k = int(np.argmax(counts)) if counts.any() else img.shape[a] // 2
        sl = [slice(None)] * 3
        sl[a] = k
        rows, cols = (i for i in range(3) if i != a)
        aspect = image.spacing[rows] / image.spacing[cols]  # millimetres square on screen
        ax.imshow(img[tuple(sl)], cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect)
        ax.imshow(
            _rgba(seg[tuple(sl)], values, 0.45),
            interpolation="nearest",
            origin="lower",
            aspect=aspect,
        )
        if ref is not None:
            ref_slice = ref[tuple(sl)]
            for v in values:
                mask = ref_slice == v
                if mask.any() and not mask.all():
                    ax.contour(
                        mask.astype(np.float32),
                        levels=[0.5],
                        colors=[label_color(v)],
                        linewidths=1.3,
                        origin="lower",
                    )
        ax.set_title(f"axis {a}, slice {k}", fontsize=9)
        ax.axis("off")
    handles = [Patch(color=label_color(v), label=f"{v} {names.get(v, '')}".strip()) for v in values]
    handles.append(Patch(facecolor="0.6", alpha=0.6, label="prediction: fill"))
    if ref is not None:
        handles.append(Line2D([], [], color="0.2", lw=1.3, label="reference: outline"))
    fig.legend(
        handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False
    )
    fig.suptitle(title if title is not None else Path(path).stem, fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
    return path
