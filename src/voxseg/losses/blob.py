"""Blob loss: soft Dice per connected object, so a 20-voxel lesion weighs as much as a
2 000-voxel one (Kofler et al., "blob loss: instance imbalance aware loss functions for
semantic segmentation", IPMI 2023).

A voxel-wise loss (cross-entropy, or Dice over a patch or batch) is dominated by the large
objects: missing a small lesion costs a few voxels' worth. ``blob_dice`` finds the objects
of every foreground class in the target (26-connected components, 8 in 2D; ``cc3d`` on the
CPU), and for each object computes the soft Dice of that class's probability against the
object alone, over the object plus every voxel that is not of that class (the other objects
of the class are masked out, as in the paper), and returns ``1 − mean`` over all objects of
the batch. A batch without objects gives 0. Use it as a term beside a global loss::

    loss={"name": "combo", "terms": [{"name": "dice_ce", "weight": 2}, {"name": "blob_dice"}]}

(the paper's weights: 2 for the global term, 1 for the blob term).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from voxseg.errors import VoxsegError
from voxseg.losses._registry import register_loss
from voxseg.losses._targets import check_shapes, split_ignore


@register_loss("blob_dice")
class BlobDiceLoss(nn.Module):
    """``1 −`` mean soft Dice over the target's connected objects (every foreground class)."""

    def __init__(
        self,
        *,
        num_classes: int,
        region_based: bool = False,
        ignore_label: int | None = None,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        if region_based:
            raise VoxsegError("loss 'blob_dice' needs integer labels, not region-based targets")
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import cc3d

        target, keep = split_ignore(target, False, self.ignore_label)
        check_shapes(logits, target, False)
        probs = torch.softmax(logits, 1)
        labels = target[:, 0].detach().cpu().numpy().astype(np.uint16, copy=False)
        dices = []
        for b in range(labels.shape[0]):
            objects = cc3d.connected_components(
                labels[b], connectivity=26 if labels.ndim == 4 else 8
            )
            if not objects.max():
                continue
            objects_t = torch.from_numpy(objects.astype(np.int64)).to(logits.device)
            of_class = labels[b]
            for c in range(1, self.num_classes):
                ids = np.unique(objects[of_class == c])
                if not ids.size:
                    continue
                p = probs[b, c] if keep is None else probs[b, c] * keep[b, 0]
                cls = torch.from_numpy(of_class == c).to(logits.device)
                for k in ids.tolist():
                    obj = objects_t == k
                    region = obj | ~cls  # the object and everything not of its class
                    tp = (p * obj).sum()
                    sum_p = (p * region).sum()
                    dices.append((2 * tp + self.smooth) / (sum_p + obj.sum() + self.smooth))
        if not dices:
            return logits.sum() * 0.0
        return 1 - torch.stack(dices).mean()
