"""Two-way transformer of the mask decoder: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import MLP, merge_heads, split_heads


class Attention(nn.Module):
    """Multi-head attention with optional channel downsampling of q/k/v.

    Args:
        dim: channels of queries and of the output.
        num_heads: heads.
        downsample_rate: q/k/v use ``dim // downsample_rate`` channels.
        kv_dim: channels of keys and values (default ``dim``).
    """

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1, kv_dim: int | None = None) -> None:
        super().__init__()
        inner = dim // downsample_rate
        kv_dim = dim if kv_dim is None else kv_dim
        if inner % num_heads:
            raise ValueError(f"{num_heads} heads do not divide {inner} channels")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(kv_dim, inner)
        self.v_proj = nn.Linear(kv_dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = split_heads(self.q_proj(q), self.num_heads)  # (B, nh, Nq, hd)
        k = split_heads(self.k_proj(k), self.num_heads)  # (B, nh, Nk, hd)
        v = split_heads(self.v_proj(v), self.num_heads)
        return self.out_proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image attention, MLP, image->token attention."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.skip_first_pe = skip_first_pe
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dim, num_layers=2, activation=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate=2)

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_pe:
            tokens = self.self_attn(tokens, tokens, tokens)  # no residual on the first layer
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)

        q, k = tokens + token_pe, image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(q, k, image))
        tokens = self.norm3(tokens + self.mlp(tokens))

        q, k = tokens + token_pe, image + image_pe
        image = self.norm4(image + self.cross_attn_image_to_token(k, q, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final token->image attention."""

    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, num_heads, mlp_dim, skip_first_pe=(i == 0)) for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(dim, num_heads, downsample_rate=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pe (B, C, h, w); tokens (B, N, C) -> (tokens (B, N, C), image (B, hw, C))."""
        image = image.flatten(2).transpose(1, 2)  # (B, hw, C)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        token_pe = tokens
        for layer in self.layers:
            tokens, image = layer(tokens, image, token_pe, image_pe)
        q, k = tokens + token_pe, image + image_pe
        tokens = self.norm_final_attn(tokens + self.final_attn_token_to_image(q, k, image))
        return tokens, image
