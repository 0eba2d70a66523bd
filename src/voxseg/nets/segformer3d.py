"""SegFormer3D (Perera et al., "SegFormer3D: an Efficient Transformer for 3D Medical Image
Segmentation", CVPR Workshops 2024), written for 2D and 3D with the same code.

Encoder: four stages, each an overlapping patch embedding (strided convolution, kernel 7
stride 4 then kernel 3 stride 2), transformer blocks with efficient self-attention (keys and
values from a sequence shortened by a strided convolution of ratio ``sr_ratios[i]``) and a
Mix-FFN (linear → depthwise 3×3(×3) convolution → GELU → linear), then a layer norm.
Decoder: all-MLP — each stage projected to ``decoder_dim`` channels, upsampled to the first
stage's resolution, concatenated, fused by a 1×1 convolution, classified, and upsampled to
the input size. The defaults are the paper's (4.5 M parameters).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from voxseg.nets._registry import NetworkInfo, NetworkRequest, register_family


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv3d if dims == 3 else nn.Conv2d


def _tokens(x: torch.Tensor) -> torch.Tensor:
    """[b, c, *spatial] → [b, n, c]."""
    return x.flatten(2).transpose(1, 2)


def _grid(x: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """[b, n, c] → [b, c, *spatial]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *spatial)


class PatchEmbedding(nn.Module):
    """Overlapping patch embedding: a strided convolution, then layer norm over channels."""

    def __init__(self, dims: int, in_ch: int, dim: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = _conv(dims)(in_ch, dim, kernel, stride, kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        x = self.proj(x)
        return self.norm(_tokens(x)), list(x.shape[2:])


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from a ``sr_ratio``-times coarser grid."""

    def __init__(self, dims: int, dim: int, heads: int, sr_ratio: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.sr = _conv(dims)(dim, dim, sr_ratio, sr_ratio) if sr_ratio > 1 else None
        self.sr_norm = nn.LayerNorm(dim) if sr_ratio > 1 else None

    def forward(self, x: torch.Tensor, spatial: list[int]) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        if self.sr is not None:
            x = self.sr_norm(_tokens(self.sr(_grid(x, spatial))))
        k, v = self.kv(x).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MixFFN(nn.Module):
    """Linear → depthwise convolution (positional information) → GELU → linear."""

    def __init__(self, dims: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = _conv(dims)(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, spatial: list[int]) -> torch.Tensor:
        x = _tokens(self.dwconv(_grid(self.fc1(x), spatial)))
        return self.fc2(F.gelu(x))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + Mix-FFN(norm(x))."""

    def __init__(
        self, dims: int, dim: int, heads: int, sr_ratio: int, mlp_ratio: int, dropout: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dims, dim, heads, sr_ratio, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = MixFFN(dims, dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, spatial: list[int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), spatial)
        return x + self.ffn(self.norm2(x), spatial)


class EncoderStage(nn.Module):
    """Patch embedding, ``depth`` transformer blocks, layer norm; returns a feature grid."""

    def __init__(
        self,
        dims: int,
        in_ch: int,
        dim: int,
        kernel: int,
        stride: int,
        depth: int,
        heads: int,
        sr_ratio: int,
        mlp_ratio: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.embed = PatchEmbedding(dims, in_ch, dim, kernel, stride)
        self.blocks = nn.ModuleList(
            TransformerBlock(dims, dim, heads, sr_ratio, mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, spatial = self.embed(x)
        for block in self.blocks:
            x = block(x, spatial)
        return _grid(self.norm(x), spatial)


class SegFormer3D(nn.Module):
    """Hierarchical transformer encoder + all-MLP decoder; 2D when ``spatial_dims == 2``."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_dims: int = 3,
        embed_dims: Sequence[int] = (32, 64, 160, 256),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        depths: Sequence[int] = (2, 2, 2, 2),
        sr_ratios: Sequence[int] = (4, 2, 1, 1),
        mlp_ratio: int = 4,
        decoder_dim: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        kernels, strides = (7, 3, 3, 3), (4, 2, 2, 2)
        chans = [in_channels, *embed_dims]
        self.stages = nn.ModuleList(
            EncoderStage(
                spatial_dims,
                chans[i],
                chans[i + 1],
                kernels[i],
                strides[i],
                depths[i],
                num_heads[i],
                sr_ratios[i],
                mlp_ratio,
                dropout,
            )
            for i in range(4)
        )
        self.project = nn.ModuleList(nn.Linear(d, decoder_dim) for d in embed_dims)
        conv = _conv(spatial_dims)
        norm = nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d
        self.fuse = nn.Sequential(
            conv(4 * decoder_dim, decoder_dim, 1, bias=False),
            norm(decoder_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.head = conv(decoder_dim, num_classes, 1)
        self.mode = "trilinear" if spatial_dims == 3 else "bilinear"
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        top = features[0].shape[2:]
        up = [
            F.interpolate(
                _grid(proj(_tokens(f)), f.shape[2:]), size=top, mode=self.mode, align_corners=False
            )
            for proj, f in zip(self.project, features, strict=True)
        ]
        logits = self.head(self.fuse(torch.cat(up[::-1], dim=1)))
        return F.interpolate(logits, size=size, mode=self.mode, align_corners=False)


def _init_weights(m: nn.Module) -> None:
    """Truncated-normal linear weights (std 0.02), He-normal convolutions, unit norms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d | nn.Conv3d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm | nn.BatchNorm2d | nn.BatchNorm3d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


@register_family(
    "segformer3d", NetworkInfo(needs_patch_divisible_by=32), forwards_kwargs_to=(SegFormer3D,)
)
def segformer3d(net: NetworkRequest, /, **kwargs: Any) -> nn.Module:
    """SegFormer3D; the topology gives only the spatial dimensions (2 or 3)."""
    return SegFormer3D(
        net.in_channels, net.num_classes, spatial_dims=net.topology.spatial_dims, **kwargs
    )
