"""Memory attention: conditions the current frame's features on memories of other frames.

Attention uses 2D rotary position embeddings (RoPE). Rotations are done in real arithmetic
(cos/sin tables) rather than complex tensors, which keeps the module usable on MPS.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import merge_heads, split_heads


def rope_angles(height: int, width: int, head_dim: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """Rotation angles (height * width, head_dim // 2) for axial 2D RoPE.

    Token n (row-major) sits at column ``n % width`` and row ``n // width``. The first half of the
    channel pairs rotate with the column, the second half with the row, at frequencies
    ``theta ** (-4k / head_dim)``.
    """
    k = torch.arange(0, head_dim, 4, device=device)[: head_dim // 4].float()
    freqs = 1.0 / (theta ** (k / head_dim))  # (hd/4,)
    n = torch.arange(height * width, dtype=torch.float32, device=device)
    cols = n % width
    rows = torch.div(n, width, rounding_mode="floor")
    return torch.cat((torch.outer(cols, freqs), torch.outer(rows, freqs)), dim=-1)


class Rotation:
    """A RoPE rotation table for one grid, applied to (..., N, hd) tensors.

    Channel pairs (2j, 2j+1) are rotated as complex numbers. MPS has no complex kernels, so there
    the same rotation is done with cos/sin in real arithmetic.
    """

    def __init__(self, angles: torch.Tensor) -> None:
        self.complex = angles.device.type != "mps"
        if self.complex:
            self.cis = torch.polar(torch.ones_like(angles), angles)  # (N, hd/2)
        else:
            self.cos, self.sin = angles.cos(), angles.sin()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate x (..., N, hd), where N equals the table's length."""
        pairs = x.float().unflatten(-1, (-1, 2))
        if self.complex:
            return torch.view_as_real(torch.view_as_complex(pairs) * self.cis).flatten(-2).type_as(x)
        even, odd = pairs[..., 0], pairs[..., 1]
        out = torch.stack((even * self.cos - odd * self.sin, even * self.sin + odd * self.cos), dim=-1)
        return out.flatten(-2).type_as(x)


class RoPEAttention(nn.Module):
    """Attention whose queries and (the first ``N - num_k_exclude`` of the) keys are rotated.

    Args:
        dim: channels of queries and output. num_heads: heads.
        kv_dim: channels of keys and values (memories are narrower than frame features).
        repeat_k: keys are several grids of the query's size; rotate each the same way.
        pooling: EfficientTAM's efficient cross-attention (see ``Sam2Config.memory_pooling``):
            with more than one memory grid, each grid's rotated keys and its values are averaged
            over 2 x 2 blocks of tokens before attending.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        kv_dim: int | None = None,
        repeat_k: bool = False,
        pooling: str | None = None,
    ) -> None:
        super().__init__()
        kv_dim = dim if kv_dim is None else kv_dim
        self.num_heads = num_heads
        self.repeat_k = repeat_k
        self.pooling = pooling
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_dim, dim)
        self.v_proj = nn.Linear(kv_dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self._tables: dict[tuple, Rotation] = {}

    def _rotation(self, grid: tuple[int, int], head_dim: int, device: torch.device) -> Rotation:
        key = (grid, head_dim, device)
        if key not in self._tables:
            self._tables[key] = Rotation(rope_angles(grid[0], grid[1], head_dim, device=device))
        return self._tables[key]

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        grid: tuple[int, int],
        num_k_exclude: int = 0,
        k_layout: tuple[int, tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """q (B, Nq, C) on a ``grid`` = (h, w) of the current frame; k, v (B, Nk, kv_dim).

        By default every memory is a grid like the query's. ``k_layout = (lead, (kh, kw))``
        describes compressed memories instead (EdgeTAM): each is ``lead`` unrotated tokens
        followed by a kh x kw grid, rotated with that grid's own table.
        """
        q = split_heads(self.q_proj(q), self.num_heads)  # (B, nh, Nq, hd)
        k = split_heads(self.k_proj(k), self.num_heads)  # (B, nh, Nk, hd)
        v = split_heads(self.v_proj(v), self.num_heads)
        rotate = self._rotation(grid, q.shape[-1], q.device)
        q = rotate(q)
        n_rot = k.shape[-2] - num_k_exclude
        if n_rot > 0:
            lead, k_grid = (0, grid) if k_layout is None else k_layout
            per_memory = lead + k_grid[0] * k_grid[1]
            reps = n_rot // per_memory
            if reps * per_memory != n_rot or (reps > 1 and not self.repeat_k):
                raise ValueError(
                    f"{n_rot} rotated keys are not a whole number of {per_memory}-token memories"
                )
            # every memory has the same layout: rotate the grid part of each with one table
            mems = k[:, :, :n_rot].unflatten(2, (reps, per_memory))  # (B, nh, reps, per_memory, hd)
            rotate_k = rotate if k_layout is None else self._rotation(k_grid, k.shape[-1], k.device)
            k_rot = rotate_k(mems[..., lead:, :])
            if lead:
                k_rot = torch.cat((mems[..., :lead, :], k_rot), dim=-2)
            if self.pooling is not None and reps > 1 and k_layout is None:
                return self._pooled(q, k_rot, v, grid, n_rot, k[:, :, n_rot:])
            k_rot = k_rot.flatten(2, 3)  # (B, nh, n_rot, hd)
            k = torch.cat((k_rot, k[:, :, n_rot:]), dim=2) if num_k_exclude else k_rot
        return self.out_proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))

    def _pooled(
        self,
        q: torch.Tensor,
        k_mems: torch.Tensor,
        v: torch.Tensor,
        grid: tuple[int, int],
        n_rot: int,
        k_rest: torch.Tensor,
    ) -> torch.Tensor:
        """Attention to memory grids averaged over 2 x 2 token blocks, then the unpooled rest
        (object pointers). ``k_mems`` (B, nh, reps, h * w, hd) are the rotated keys of the grids."""
        b, nh, reps, n, hd = k_mems.shape
        h, w = grid

        def pool(t: torch.Tensor) -> torch.Tensor:  # (B, nh, reps, h * w, hd) -> (B, nh, reps * hw / 4, hd)
            maps = t.reshape(b * nh * reps, h, w, hd).permute(0, 3, 1, 2)
            pooled = F.avg_pool2d(maps, kernel_size=2, stride=2)  # (., hd, h/2, w/2)
            return pooled.flatten(2).transpose(1, 2).reshape(b, nh, -1, hd)

        k_pool = pool(k_mems)
        v_pool = pool(v[:, :, :n_rot].unflatten(2, (reps, n)))
        log4 = 2 * math.log(2)  # each pooled token stands for four
        values = torch.cat((v_pool, v[:, :, n_rot:]), dim=2)
        if self.pooling == "key_offset":  # the offset goes into every channel of the pooled keys
            keys = torch.cat((k_pool + log4, k_rest), dim=2)
            return self.out_proj(merge_heads(F.scaled_dot_product_attention(q, keys, values)))
        keys = torch.cat((k_pool, k_rest), dim=2)
        bias = q.new_zeros(1, keys.shape[2])
        bias[:, : k_pool.shape[2]] = log4  # added to the logits of the pooled keys
        return self.out_proj(merge_heads(F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm: self-attention, cross-attention to memories (keys get their PE), FFN."""

    def __init__(self, dim: int, mem_dim: int, ffn_dim: int, pooling: str | None = None) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(dim)
        self.cross_attn_image = RoPEAttention(dim, kv_dim=mem_dim, repeat_k=True, pooling=pooling)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        grid: tuple[int, int],
        num_ptr_tokens: int,
        k_layout: tuple[int, tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        t = self.norm1(x)
        x = x + self.self_attn(t, t, t, grid)
        t = self.norm2(x)
        x = x + self.cross_attn_image(t, memory + memory_pos, memory, grid, num_ptr_tokens, k_layout)
        t = self.norm3(x)
        return x + self.linear2(F.relu(self.linear1(t)))


class MemoryAttention(nn.Module):
    """Stack of :class:`MemoryAttentionLayer` with a final LayerNorm."""

    def __init__(
        self, dim: int, mem_dim: int, num_layers: int, ffn_dim: int, pooling: str | None = None
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(dim, mem_dim, ffn_dim, pooling) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        features: torch.Tensor,
        features_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_ptr_tokens: int,
        k_layout: tuple[int, tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """features, features_pos (B, C, h, w); memory, memory_pos (B, M, mem_dim) -> (B, C, h, w).

        The last ``num_ptr_tokens`` memory tokens are object pointers: they are not rotated.
        ``k_layout`` describes compressed memories (see :meth:`RoPEAttention.forward`).
        """
        b, c, h, w = features.shape
        x = features.flatten(2).transpose(1, 2)  # (B, hw, C)
        x = x + 0.1 * features_pos.flatten(2).transpose(1, 2)
        for layer in self.layers:
            x = layer(x, memory, memory_pos, (h, w), num_ptr_tokens, k_layout)
        return self.norm(x).transpose(1, 2).reshape(b, c, h, w)
