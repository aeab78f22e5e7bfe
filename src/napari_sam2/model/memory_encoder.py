"""Memory encoder: fuses a frame's features with its predicted mask into a compact memory."""

from __future__ import annotations

import torch
from torch import nn

from ._layers import LayerNorm2d
from .position_encoding import SineEncoding2d


class MaskDownsampler(nn.Module):
    """Mask (B, 1, S, S) -> (B, C, S/16, S/16) by four stride-2 convolutions and a 1x1 projection."""

    def __init__(self, dim: int, num_stages: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for _ in range(num_stages):
            c_out = c_in * 4
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1),
                LayerNorm2d(c_out),
                nn.GELU(),
            ]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(mask)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, channel LayerNorm, inverted-bottleneck MLP, scaled residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # (B, H, W, C)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ConvNeXtBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """(frame features (B, C, h, w), mask logits (B, 1, S, S)) -> memory (B, mem_dim, h, w) + its PE."""

    def __init__(self, dim: int, mem_dim: int, fuser_layers: int) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownsampler(dim)
        self.pix_feat_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.fuser = Fuser(dim, fuser_layers)
        self.position_encoding = SineEncoding2d(mem_dim)
        self.out_proj = nn.Conv2d(dim, mem_dim, kernel_size=1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mask`` is already scaled to the range the encoder expects (see Sam2Model.encode_memory)."""
        x = self.pix_feat_proj(features) + self.mask_downsampler(mask)
        x = self.out_proj(self.fuser(x))
        return x, self.position_encoding(x)
