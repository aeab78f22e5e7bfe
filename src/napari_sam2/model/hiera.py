"""Hiera: the hierarchical vision transformer that SAM2 uses as its image trunk.

Tokens live in NHWC layout (B, H, W, C) throughout. Most blocks attend inside non-overlapping
windows; a few "global" blocks attend over the whole map. The first block of stages 2-4 halves
the resolution by max-pooling the attention queries (and the shortcut) with stride 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import MLP, merge_heads
from .config import HieraConfig


def _pool2x2(x: torch.Tensor) -> torch.Tensor:
    """Max-pool an NHWC map by 2 in each spatial axis."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=2, stride=2).permute(0, 2, 3, 1)


def to_windows(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad an NHWC map to a multiple of ``window`` and cut it into windows.

    Returns the windows (B * nW, window, window, C) and the padded size (Hp, Wp). Padded tokens
    are not masked: they take part in attention, as in the official model.
    """
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def from_windows(
    windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`to_windows`: reassemble (B * nW, w, w, C) and crop to ``size``."""
    hp, wp = padded
    nh, nw = hp // window, wp // window
    b = windows.shape[0] // (nh * nw)
    x = windows.view(b, nh, nw, window, window, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    h, w = size
    return x[:, :h, :w].contiguous() if (hp, wp) != (h, w) else x


class PatchEmbed(nn.Module):
    """7x7 convolution with stride 4: image (B, 3, S, S) -> tokens (B, S/4, S/4, C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention whose queries may be max-pooled (resolution change)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, pool_q: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pool_q = pool_q
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).view(b, h * w, 3, self.num_heads, -1)  # (B, HW, 3, nh, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, HW, hd)
        if self.pool_q:
            # pool over all heads' channels together, in the spatial layout
            q = merge_heads(q).view(b, h, w, -1)
            q = _pool2x2(q)
            h, w = q.shape[1:3]
            q = q.view(b, h * w, self.num_heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nh, hw, hd)
        return self.proj(merge_heads(out).view(b, h, w, -1))


class HieraBlock(nn.Module):
    """Pre-norm transformer block with optional windowing and query pooling."""

    def __init__(
        self, dim: int, dim_out: int, num_heads: int, window: int, pool: bool, mlp_ratio: float
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window = window
        self.pool = pool
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, pool_q=pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)  # the shortcut of a widening block starts from the normed input
            if self.pool:
                shortcut = _pool2x2(shortcut)
        window = self.window
        if window > 0:
            h, w = x.shape[1:3]
            x, _ = to_windows(x, window)
        x = self.attn(x)
        if window > 0:
            if self.pool:
                window //= 2
            h, w = shortcut.shape[1:3]
            padded = (h + (-h) % window, w + (-w) % window)
            x = from_windows(x, window, padded, (h, w))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """The trunk: image (B, 3, S, S) -> four NCHW maps at strides 4, 8, 16, 32."""

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, *cfg.pos_embed_size))
        w0 = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, dim, w0, w0))

        stage_ends = cfg.stage_ends
        pool_blocks = {end + 1 for end in stage_ends[:-1][: cfg.q_pool]}
        heads, stage = cfg.num_heads, 0
        blocks = []
        for i in range(cfg.depth):
            dim_out = dim
            # the first block of a stage still uses the previous stage's window size
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            if i - 1 in stage_ends:
                dim_out = int(dim * cfg.dim_mul)
                heads = int(heads * cfg.head_mul)
                stage += 1
            blocks.append(HieraBlock(dim, dim_out, heads, window, i in pool_blocks, cfg.mlp_ratio))
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)
        self._stage_ends = set(stage_ends)

    def _position_embedding(self, h: int, w: int) -> torch.Tensor:
        """(1, h, w, C): the background embedding resized to the grid plus the tiled window one."""
        bg = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        reps = (h // win.shape[2], w // win.shape[3])
        return (bg + win.tile(1, 1, *reps)).permute(0, 2, 3, 1)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(images)  # (B, S/4, S/4, C)
        x = x + self._position_embedding(*x.shape[1:3])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
