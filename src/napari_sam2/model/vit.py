"""A plain ViT trunk: EfficientTAM's image encoder in place of Hiera.

The image is cut into 16 x 16 patches, each projected to one token; all blocks keep the token map
at stride 16 and the same width, and the last block's map is the trunk's single output level.
Most blocks attend within 14 x 14 windows of tokens: the (layer-normed) map is padded with zero
tokens on the bottom and right to a whole number of windows, so edge windows also attend to those
zero tokens, which is what the checkpoints were trained with. The other blocks
(:attr:`ViTConfig.global_blocks`) attend over the whole map.

State-dict names follow the EfficientTAM checkpoints: ``patch_embed.proj``, ``pos_embed`` (1,
1 + 14 * 14, C: a class-token slot that is never used, then a 14 x 14 grid resized bicubically to
the token map), ``blocks.{i}.norm1|attn.qkv|attn.proj|norm2|mlp.layers.{0,1}``.

Why not timm: timm's ``VisionTransformer`` names its MLP ``mlp.fc1``/``mlp.fc2`` and has a class
token and a final norm that these checkpoints lack, and it has no windowed attention; timm's SAM
ViT (``vision_transformer_sam``) has windows but relative position tables and a neck that these
checkpoints do not have. Either would need a key-renaming layer and patched attention, for less
code than this module. Plain torch also keeps the model package free of timm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import MLP
from .config import ViTConfig


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: (B, 3, S, S) -> (B, S/p, S/p, C), channels last."""

    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the tokens of each map of a (N, h, w, C) batch."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        qkv = self.qkv(x).view(n, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (N, heads, hw, hd)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, h, w, c))


def to_windows(x: torch.Tensor, side: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, h, w, C) -> (B * windows, side, side, C), zero-padded at the bottom and right; also the
    padded (h, w)."""
    b, h, w, c = x.shape
    ph, pw = -h % side, -w % side
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // side, side, wp // side, side, c).transpose(2, 3)
    return x.reshape(-1, side, side, c), (hp, wp)


def from_windows(x: torch.Tensor, side: int, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_windows`, dropping the padding."""
    hp, wp = padded
    c = x.shape[-1]
    x = x.view(-1, hp // side, wp // side, side, side, c).transpose(2, 3).reshape(-1, hp, wp, c)
    return x[:, : size[0], : size[1]]


class Block(nn.Module):
    """Pre-norm attention (windowed when ``window`` > 0) and MLP, each residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window: int) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dim, num_layers=2, activation=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.norm1(x)
        if self.window:
            size = t.shape[1:3]
            t, padded = to_windows(t, self.window)
            t = from_windows(self.attn(t), self.window, padded, size)
        else:
            t = self.attn(t)
        x = x + t
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """The trunk: image (B, 3, S, S) -> [one NCHW map (B, C, S/16, S/16)] (a list, as :class:`Hiera`)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_embed_grid**2, cfg.embed_dim))
        self.pos_grid = cfg.pos_embed_grid
        self.blocks = nn.ModuleList(
            Block(
                cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, 0 if i in cfg.global_blocks else cfg.window_size
            )
            for i in range(cfg.depth)
        )

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """The stored grid (without its class-token slot) resized to h x w: (1, h, w, C)."""
        g = self.pos_grid
        grid = self.pos_embed[:, 1:].reshape(1, g, g, -1)
        if (h, w) == (g, g):
            return grid
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(images)
        x = x + self.position_embedding(x.shape[1], x.shape[2])
        for block in self.blocks:
            x = block(x)
        return [x.permute(0, 3, 1, 2)]
