"""Position encodings: 2D sine (neck, memory), random Fourier (prompts), 1D sine (pointers)."""

from __future__ import annotations

import math

import torch
from torch import nn


def _frequencies(num_feats: int, temperature: float, device: torch.device | None) -> torch.Tensor:
    """Denominators ``temperature ** (2 * (k // 2) / num_feats)`` for k in [0, num_feats)."""
    k = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / num_feats)


def sine_encoding_2d(
    height: int,
    width: int,
    channels: int,
    temperature: float = 10000.0,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Normalised 2D sine encoding of a grid, (1, channels, height, width), float32.

    The first half of the channels encodes the row, the second half the column. A position
    p in 1..n becomes ``2 * pi * p / n``; channels alternate sin and cos of it divided by
    :func:`_frequencies`.
    """
    half = channels // 2
    eps = 1e-6
    rows = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    cols = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    rows = rows / (height + eps) * (2 * math.pi)
    cols = cols / (width + eps) * (2 * math.pi)
    freqs = _frequencies(half, temperature, device)

    def encode(pos: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, half), sin/cos interleaved
        angles = pos[:, None] / freqs
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    enc_r = encode(rows)[:, None, :].expand(height, width, half)
    enc_c = encode(cols)[None, :, :].expand(height, width, half)
    return torch.cat((enc_r, enc_c), dim=2).permute(2, 0, 1).unsqueeze(0)


class SineEncoding2d(nn.Module):
    """Module wrapper of :func:`sine_encoding_2d` with a small per-shape cache (no state dict)."""

    def __init__(self, channels: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"sine encoding needs channels divisible by 4, got {channels}")
        self.channels = channels
        self.temperature = temperature
        self._cache: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encoding for the grid of an NCHW tensor, (B, channels, H, W) in ``x.dtype``."""
        b, _, h, w = x.shape
        key = (h, w, x.device)
        if key not in self._cache:
            self._cache[key] = sine_encoding_2d(h, w, self.channels, self.temperature, x.device)
        return self._cache[key].to(x.dtype).expand(b, -1, -1, -1)


def sine_encoding_1d(pos: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1D sine encoding of positions (N,) -> (N, dim): all sines first, then all cosines."""
    freqs = _frequencies(dim // 2, temperature, pos.device)
    angles = pos.float()[:, None] / freqs
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class RandomFourierEncoding(nn.Module):
    """Positional encoding of normalised (x, y) coordinates with a fixed Gaussian projection."""

    def __init__(self, num_feats: int) -> None:
        super().__init__()
        # Loaded from the checkpoint; its random init only matters for untrained models.
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_feats))

    def encode(self, coords: torch.Tensor) -> torch.Tensor:
        """Coordinates in [0, 1], (..., 2) as (x, y) -> (..., 2 * num_feats)."""
        g = self.positional_encoding_gaussian_matrix
        z = (2 * coords.to(g.dtype) - 1) @ g
        z = 2 * math.pi * z
        return torch.cat((z.sin(), z.cos()), dim=-1)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """Encoding of the pixel centres of a grid, (C, height, width)."""
        g = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(height, device=g.device, dtype=g.dtype) + 0.5) / height
        xs = (torch.arange(width, device=g.device, dtype=g.dtype) + 0.5) / width
        coords = torch.stack(
            (xs[None, :].expand(height, width), ys[:, None].expand(height, width)), dim=-1
        )  # (H, W, 2) as (x, y)
        return self.encode(coords).permute(2, 0, 1)
