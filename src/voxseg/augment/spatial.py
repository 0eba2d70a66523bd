"""Spatial augmentation: rotation, scaling, elastic deformation, mirroring and the crop to
the patch centre, composed into one sampling grid and one ``grid_sample`` per batch.

Coordinates are voxel indices in array-axis order. An output voxel ``o`` of the patch reads
the input at ``s = M (o - c_out + u(o)) + c_in`` where ``M = R S F`` (rotation, scaling,
flips), ``u`` the elastic displacement, ``c_out = (P - 1) / 2`` the patch centre and
``c_in = (P - 1) / 2 + floor((I - P) / 2)`` the centre of the patch-sized region in the
middle of the input. Images are sampled linearly with zeros outside; labels by nearest
neighbour (values are never invented) with ``seg_pad_value`` outside. Samples that are only
mirrored are cropped and flipped without interpolation.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from voxseg.augment import _random as rnd
from voxseg.augment.config import AugmentationConfig


@dataclass
class SpatialParams:
    """Per-sample spatial parameters of one batch."""

    matrix: Tensor  # [b, d, d] = R S F, maps centred output to centred input coordinates
    resample: Tensor  # [b] bool: needs interpolation (rotated, scaled or deformed)
    flips: Tensor  # [b, d] bool
    elastic: Tensor  # [b] bool
    control: Tensor | None  # [b, d, *control_points] N(0, 1) displacement control values
    magnitude: Tensor  # [b] largest displacement in voxels


def rotation_matrices(angles: Tensor, planes: list[tuple[int, int]], dims: int) -> Tensor:
    """``[b, d, d]`` product ``R_last @ ... @ R_first``; ``angles[:, k]`` turns ``planes[k]``."""
    b = angles.shape[0]
    out = torch.eye(dims, dtype=angles.dtype, device=angles.device).repeat(b, 1, 1)
    for k, (i, j) in enumerate(planes):
        cos, sin = torch.cos(angles[:, k]), torch.sin(angles[:, k])
        rot = torch.eye(dims, dtype=angles.dtype, device=angles.device).repeat(b, 1, 1)
        rot[:, i, i], rot[:, i, j], rot[:, j, i], rot[:, j, j] = cos, -sin, sin, cos
        out = rot @ out
    return out


def _rotation_planes(dims: int, in_plane: bool) -> list[tuple[int, int]]:
    if dims == 2:
        return [(0, 1)]
    if in_plane:
        return [(1, 2)]
    return [(1, 2), (0, 2), (0, 1)]


class SpatialTransform:
    """Draws and applies the composed spatial transform of a batch."""

    def __init__(
        self,
        config: AugmentationConfig,
        *,
        spatial_dims: int,
        patch_size: tuple[int, ...],
        dummy_2d: bool = False,
    ) -> None:
        if spatial_dims not in (2, 3) or len(patch_size) != spatial_dims:
            raise ValueError(f"patch_size {patch_size} does not have {spatial_dims} axes")
        self.config = config
        self.dims = spatial_dims
        self.patch_size = tuple(int(p) for p in patch_size)
        self.in_plane = spatial_dims == 3 and (dummy_2d or config.in_plane_only)
        self.planes = _rotation_planes(spatial_dims, self.in_plane)
        rotation = config.rotation
        self.degrees = rotation.degrees_in_plane if len(self.planes) == 1 else rotation.degrees
        axes = config.mirror.axes
        self.mirror_axes = tuple(range(spatial_dims)) if axes is None else tuple(axes)
        if any(not 0 <= a < spatial_dims for a in self.mirror_axes):
            raise ValueError(f"mirror axes {self.mirror_axes} outside 0..{spatial_dims - 1}")
        self._base: dict[tuple[str, int | None], Tensor] = {}

    def sample(self, batch: int, generator: torch.Generator, device: torch.device) -> SpatialParams:
        """Draw the parameters of ``batch`` samples (fixed number of draws)."""
        cfg, d, b = self.config, self.dims, batch
        do_rot = rnd.bernoulli((b,), cfg.rotation.p, generator, device)
        lo, hi = (math.radians(v) for v in self.degrees)
        angles = rnd.uniform((b, len(self.planes)), lo, hi, generator, device)
        angles = angles * do_rot[:, None]
        do_scale = rnd.bernoulli((b,), cfg.scaling.p, generator, device)
        scales = rnd.uniform((b, d), *cfg.scaling.range, generator, device)
        if cfg.scaling.isotropic:
            scales = scales[:, :1].expand(b, d)
        scales = torch.where(do_scale[:, None], scales, torch.ones_like(scales))
        if self.in_plane:
            scales = torch.cat([torch.ones_like(scales[:, :1]), scales[:, 1:]], dim=1)
        do_elastic = rnd.bernoulli((b,), cfg.elastic.p, generator, device)
        magnitude = rnd.uniform((b,), *cfg.elastic.magnitude, generator, device)
        control = None
        if cfg.elastic.p > 0:
            control = rnd.randn((b, d) + (cfg.elastic.control_points,) * d, generator, device)
        flips = rnd.bernoulli((b, d), cfg.mirror.p_per_axis, generator, device)
        allowed = torch.zeros(d, dtype=torch.bool, device=device)
        allowed[list(self.mirror_axes)] = True
        flips = flips & allowed
        signs = torch.where(flips, -1.0, 1.0)
        matrix = rotation_matrices(angles, self.planes, d) @ torch.diag_embed(scales * signs)
        return SpatialParams(
            matrix=matrix,
            resample=do_rot | do_scale | do_elastic,
            flips=flips,
            elastic=do_elastic,
            control=control,
            magnitude=magnitude * do_elastic,
        )

    def centres(self, input_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """``(c_out, c_in)``: patch centre and the input point it maps to without a transform."""
        p = np.asarray(self.patch_size, dtype=np.float64)
        i = np.asarray(input_shape, dtype=np.float64)
        c_out = (p - 1) / 2
        return c_out, c_out + np.floor((i - p) / 2)

    def displacement(self, params: SpatialParams, index: Tensor) -> Tensor | None:
        """``[n, *patch, d]`` elastic displacement (voxels) of the samples ``index``."""
        if params.control is None or not bool(params.elastic[index].any()):
            return None
        control = params.control[index]
        mode = {2: "bilinear", 3: "trilinear"}[self.dims]
        field = F.interpolate(control, size=self.patch_size, mode=mode, align_corners=True)
        peak = field.abs().flatten(1).amax(dim=1).clamp_min(1e-8)
        field = field * (params.magnitude[index] / peak).view(-1, *([1] * (self.dims + 1)))
        if self.in_plane:
            field[:, 0] = 0
        return field.movedim(1, -1)

    def source_coordinates(
        self, params: SpatialParams, index: Tensor, input_shape: tuple[int, ...]
    ) -> Tensor:
        """``[n, *patch, d]`` input voxel coordinates read by each output voxel."""
        device = params.matrix.device
        base = self._base_grid(device)
        _, c_in = self.centres(input_shape)
        pts = base.view(1, -1, self.dims)
        disp = self.displacement(params, index)
        if disp is not None:
            pts = pts + disp.reshape(disp.shape[0], -1, self.dims)
        c_in_t = torch.as_tensor(c_in, dtype=torch.float32, device=device)
        src = torch.matmul(pts, params.matrix[index].transpose(1, 2)) + c_in_t
        return src.view(len(index), *self.patch_size, self.dims)

    def _base_grid(self, device: torch.device) -> Tensor:
        key = (device.type, device.index)
        if key not in self._base:
            axes = [torch.arange(p, dtype=torch.float32, device=device) for p in self.patch_size]
            grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
            c_out = torch.tensor([(p - 1) / 2 for p in self.patch_size], device=device)
            self._base[key] = (grid - c_out).reshape(-1, self.dims).contiguous()
        return self._base[key]

    def _sampling_grid(
        self, params: SpatialParams, index: Tensor, input_shape: tuple[int, ...]
    ) -> Tensor:
        """The ``grid_sample`` grid (normalised, x-first) of the samples ``index``."""
        device = params.matrix.device
        size = torch.tensor(input_shape, dtype=torch.float32, device=device)
        _, c_in = self.centres(input_shape)
        c_in_t = torch.as_tensor(c_in, dtype=torch.float32, device=device)
        # fold the normalisation g = (2 s + 1) / I - 1 (align_corners=False) into the affine map
        matrix = params.matrix[index] * (2 / size)[None, :, None]
        offset = (2 * c_in_t + 1) / size - 1
        matrix, offset = matrix.flip(1), offset.flip(0)
        disp = self.displacement(params, index)
        if disp is None:
            # affine in the output index: a broadcast sum of one term per axis, one pass
            grid = offset.view(1, *([1] * self.dims), self.dims)
            for axis, size in enumerate(self.patch_size):
                coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
                term = coords[None, :, None] * matrix[:, None, :, axis]
                view = [len(index)] + [1] * self.dims + [self.dims]
                view[1 + axis] = size
                grid = grid + term.view(view)
            return grid
        pts = self._base_grid(device).view(1, -1, self.dims)
        pts = pts + disp.reshape(disp.shape[0], -1, self.dims)
        grid = torch.matmul(pts, matrix.transpose(1, 2)) + offset
        return grid.view(len(index), *self.patch_size, self.dims)

    def apply(
        self, image: Tensor, seg: Tensor | None, params: SpatialParams
    ) -> tuple[Tensor, Tensor | None]:
        """Resample ``image`` ``[b, c, *in]`` and ``seg`` ``[b, 1, *in]`` to the patch."""
        image, seg = self._pad_to_patch(image, seg)
        crop = (~params.resample).nonzero().flatten()
        resample = params.resample.nonzero().flatten()
        parts = []
        if crop.numel():
            parts.append((crop, *self._crop_and_flip(image, seg, params, crop)))
        if resample.numel():
            parts.append((resample, *self._resample(image, seg, params, resample)))
        if len(parts) == 1:
            return parts[0][1], parts[0][2]
        b = image.shape[0]
        out = image.new_empty((b, image.shape[1], *self.patch_size))
        out_seg = None if seg is None else seg.new_empty((b, seg.shape[1], *self.patch_size))
        for index, part, part_seg in parts:
            out[index] = part
            if out_seg is not None and part_seg is not None:
                out_seg[index] = part_seg
        return out, out_seg

    def _resample(
        self, image: Tensor, seg: Tensor | None, params: SpatialParams, index: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """One ``grid_sample`` for the images and one (nearest) for the labels of ``index``."""
        whole = index.numel() == image.shape[0]
        grid = self._sampling_grid(params, index, tuple(image.shape[2:]))
        src = image if whole else image[index]
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if seg is None:
            return out, None
        pad = float(self.config.seg_pad_value)
        labels = (seg if whole else seg[index]).float()
        if pad:
            labels -= pad  # grid_sample pads with zeros: shift so that zero means pad_value
        sampled = F.grid_sample(
            labels, grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        if pad:
            sampled += pad
        return out, sampled.to(seg.dtype)

    def _crop_and_flip(
        self, image: Tensor, seg: Tensor | None, params: SpatialParams, index: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """The centre crop of the samples ``index``, flipped where drawn; no interpolation."""
        whole = index.numel() == image.shape[0]
        starts = [(i - p) // 2 for i, p in zip(image.shape[2:], self.patch_size, strict=True)]
        window = (slice(None), slice(None)) + tuple(
            slice(s, s + p) for s, p in zip(starts, self.patch_size, strict=True)
        )
        tensors = [
            t[window].clone() if whole else t[window][index] for t in (image, seg) if t is not None
        ]
        flips = params.flips[index]
        for axis in range(self.dims):
            rows = flips[:, axis].nonzero().flatten()
            if rows.numel():
                for t in tensors:
                    t[rows] = t[rows].flip(2 + axis)
        return tensors[0], (tensors[1] if seg is not None else None)

    def _pad_to_patch(self, image: Tensor, seg: Tensor | None) -> tuple[Tensor, Tensor | None]:
        short = [max(p - i, 0) for i, p in zip(image.shape[2:], self.patch_size, strict=True)]
        if not any(short):
            return image, seg
        pads: list[int] = []
        for s in reversed(short):
            pads += [s // 2, s - s // 2]
        image = F.pad(image, pads)
        if seg is not None:
            seg = F.pad(seg, pads, value=self.config.seg_pad_value)
        return image, seg


def required_input_size(
    patch_size: tuple[int, ...],
    config: AugmentationConfig,
    *,
    dummy_2d: bool = False,
    zoom_coverage: float | None = None,
) -> tuple[int, ...]:
    """The input crop a loader should read so the transformed patch stays inside it.

    The worst case over the rotation range (a grid of angles per axis), the largest zoom
    (or ``zoom_coverage``, to read less and accept zero padding at the largest zooms, as
    nnU-Net does with 1 / 0.85) and the largest elastic displacement, plus one voxel for
    linear interpolation; the margin ``I - P`` is even so the untransformed patch is an
    exact crop of the centre. Regions outside the input read as zeros (labels:
    ``seg_pad_value``).
    """
    dims = len(patch_size)
    if config.rotation.p == 0 and config.scaling.p == 0 and config.elastic.p == 0:
        return tuple(int(p) for p in patch_size)  # crops and flips only
    in_plane = dims == 3 and (dummy_2d or config.in_plane_only)
    planes = _rotation_planes(dims, in_plane)
    half = np.asarray(patch_size, dtype=np.float64) / 2
    corners = np.array(list(itertools.product(*[(-h, h) for h in half])))
    if config.rotation.p > 0:
        degrees = config.rotation.degrees_in_plane if len(planes) == 1 else config.rotation.degrees
        steps = 361 if len(planes) == 1 else 19
        grid = np.radians(np.linspace(degrees[0], degrees[1], steps))
        combos = np.array(list(itertools.product(grid, repeat=len(planes))))
    else:
        combos = np.zeros((1, len(planes)))
    rot = rotation_matrices(torch.as_tensor(combos), planes, dims).numpy()
    extent = np.abs(np.einsum("kij,cj->kci", rot, corners)).max(axis=(0, 1))
    if config.scaling.p > 0:
        zoom = config.scaling.range[1] if zoom_coverage is None else zoom_coverage
        extent = extent * max(zoom, 1.0)
    if config.elastic.p > 0:
        extent = extent + max(config.elastic.magnitude[1], 0.0)
    size = np.ceil(2 * extent + 1 - 1e-6).astype(int)
    if in_plane:
        size[0] = patch_size[0]
    out = []
    for s, p in zip(size, patch_size, strict=True):
        s = max(int(s), int(p))
        out.append(s + (s - p) % 2)
    return tuple(out)
