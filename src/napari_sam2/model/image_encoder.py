"""Image encoder: a trunk (Hiera, or RepViT for EdgeTAM) + feature pyramid neck, with the lowest level
dropped ("scalp")."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .config import HieraConfig, Sam2Config
from .hiera import Hiera
from .position_encoding import SineEncoding2d
from .repvit import RepViT


class FpnNeck(nn.Module):
    """Projects each trunk level to ``d_model`` channels and adds a top-down path.

    ``convs[0]`` takes the lowest-resolution trunk map. Only the two coarsest levels take part in
    the top-down pass (nearest-neighbour upsampling, summed), so in practice the stride-16 level
    receives the upsampled stride-32 level and the finer levels are plain projections.
    """

    top_down_levels = (2, 3)

    def __init__(self, trunk_channels: tuple[int, ...], d_model: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(c, d_model, kernel_size=1)))
            for c in reversed(trunk_channels)
        )
        self.position_encoding = SineEncoding2d(d_model)

    def forward(self, levels: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Trunk maps (finest first) -> (features, position encodings), finest first."""
        n = len(levels) - 1
        feats: list[torch.Tensor] = [torch.empty(0)] * len(levels)
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](levels[i])
            if i in self.top_down_levels and prev is not None:
                up = F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
                prev = lateral + up.to(lateral.dtype)
            else:
                prev = lateral
            feats[i] = prev
        return feats, [self.position_encoding(f) for f in feats]


class ImageEncoder(nn.Module):
    """(B, 3, S, S) normalised image -> three feature levels at strides 4, 8 and 16."""

    scalp = 1

    def __init__(self, cfg: Sam2Config) -> None:
        super().__init__()
        self.trunk = Hiera(cfg.trunk) if isinstance(cfg.trunk, HieraConfig) else RepViT(cfg.trunk)
        self.neck = FpnNeck(cfg.trunk.channels, cfg.d_model)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats, pos = self.neck(self.trunk(images))
        return feats[: -self.scalp], pos[: -self.scalp]
