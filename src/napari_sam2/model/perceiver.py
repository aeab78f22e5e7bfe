"""EdgeTAM's spatial perceiver: each frame's memory map becomes a short list of latent tokens.

SAM2 keeps every memory as a full (mem_dim, h, w) map, so memory attention for a 1024 input
reads 4096 tokens per remembered frame. EdgeTAM compresses each map into

* ``num_latents`` global latents that attend to the whole map (their keys and values carry the
  map's sine position encoding; the latents themselves get a zero position), and
* ``num_latents_2d`` local latents on a g x g grid, latent (i, j) attending only to the
  (h/g) x (w/g) window of the map at (i, j); they keep the window's place through a 2D sine
  encoding of the latent grid.

Memory attention then reads ``num_latents + num_latents_2d`` tokens per frame (512 instead of
4096), global latents first. All attention here has a single head as wide as ``mem_dim``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import merge_heads, split_heads
from .config import PerceiverConfig
from .position_encoding import SineEncoding2d


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """Pre-norm MLP without biases; state-dict indices 0 (norm), 1 and 3 (linears)."""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class LatentCrossAttention(nn.Module):
    """Latents (queries) attend to map tokens; an optional position is added to keys and values."""

    def __init__(self, dim: int, num_heads: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm_x = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(
        self, latents: torch.Tensor, x: torch.Tensor, pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        """latents (B, L, C), x (B, N, C), pos (B, N, C) or None -> (B, L, C)."""
        q = split_heads(self.to_q(self.norm_latents(latents)), self.num_heads)  # (B, nh, L, hd)
        k, v = self.to_kv(self.norm_x(x)).chunk(2, dim=-1)
        k, v = split_heads(k, self.num_heads), split_heads(v, self.num_heads)  # (B, nh, N, hd)
        if pos is not None:
            p = split_heads(pos, self.num_heads)
            k, v = k + p, v + p
        return self.to_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))


class LatentSelfAttention(nn.Module):
    """Pre-norm self-attention among the latents."""

    def __init__(self, dim: int, num_heads: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        q = split_heads(self.to_q(x), self.num_heads)
        k, v = (split_heads(t, self.num_heads) for t in self.to_kv(x).chunk(2, dim=-1))
        return self.to_out(merge_heads(F.scaled_dot_product_attention(q, k, v)))


class PerceiverLayer(nn.Module):
    """Cross-attention to the map and a feed-forward, then self-attention and a feed-forward,
    each residual."""

    def __init__(self, dim: int, ff_mult: int) -> None:
        super().__init__()
        self.attn = LatentCrossAttention(dim)
        self.ff = feed_forward(dim, ff_mult)
        self.self_attn = LatentSelfAttention(dim)
        self.self_ff = feed_forward(dim, ff_mult)

    def forward(
        self, latents: torch.Tensor, x: torch.Tensor, pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        latents = latents + self.attn(latents, x, pos)
        latents = latents + self.ff(latents)
        latents = latents + self.self_attn(latents)
        return latents + self.self_ff(latents)


class SpatialPerceiver(nn.Module):
    """(memory (B, C, h, w), its position encoding) -> (latents (B, L, C), positions (B, L, C))."""

    def __init__(self, dim: int, cfg: PerceiverConfig) -> None:
        super().__init__()
        self.grid = cfg.grid
        self.latents = nn.Parameter(torch.randn(cfg.num_latents, dim))
        self.latents_2d = nn.Parameter(torch.randn(cfg.num_latents_2d, dim))
        self.layers = nn.ModuleList(PerceiverLayer(dim, cfg.ff_mult) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim)
        self.position_encoding = SineEncoding2d(dim)

    def forward(self, memory: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = memory.shape
        tokens = memory.flatten(2).transpose(1, 2)  # (B, hw, C)

        glob = self.latents.unsqueeze(0).expand(b, -1, -1)
        map_pos = pos.flatten(2).transpose(1, 2).expand(b, -1, -1)
        for layer in self.layers:
            glob = layer(glob, tokens, map_pos)

        g = self.grid
        wh, ww = h // g, w // g
        if wh * g != h or ww * g != w:
            raise ValueError(f"a {h} x {w} memory map cannot be cut into {g} x {g} windows")
        windows = memory.permute(0, 2, 3, 1).reshape(b, g, wh, g, ww, c)
        windows = windows.permute(0, 1, 3, 2, 4, 5).reshape(b * g * g, wh * ww, c)  # (B g g, window, C)
        local = self.latents_2d.unsqueeze(0).expand(b, -1, -1).reshape(b * g * g, 1, c)
        for layer in self.layers:
            local = layer(local, windows)
        local = local.reshape(b, g * g, c)  # row-major over the latent grid
        local_pos = self.position_encoding(local.new_empty(b, c, g, g)).flatten(2).transpose(1, 2)

        latents = self.norm(torch.cat((glob, local), dim=1))  # (B, L, C)
        positions = torch.cat((torch.zeros_like(glob), local_pos), dim=1)
        return latents, positions
