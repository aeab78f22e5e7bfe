"""Image encoder: a trunk (Hiera, or RepViT for EdgeTAM) + feature pyramid neck, with the lowest level
dropped ("scalp"); or, for EfficientTAM, a plain ViT + a single-level neck."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import LayerNorm2d
from .config import HieraConfig, RepViTConfig, Sam2Config
from .hiera import Hiera
from .position_encoding import SineEncoding2d
from .repvit import RepViT
from .vit import ViT


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


class SingleLevelNeck(nn.Module):
    """EfficientTAM's neck: the ViT's one map -> 1x1 conv, layer norm, 3x3 conv, layer norm (no
    biases), plus its sine position encoding. State-dict names ``convs.0.conv_1x1``, ``norm_0``,
    ``conv_3x3``, ``norm_1``, as in the checkpoints."""

    def __init__(self, trunk_channels: tuple[int, ...], d_model: int) -> None:
        super().__init__()
        (channels,) = trunk_channels
        self.convs = nn.ModuleList(
            [
                nn.Sequential(
                    OrderedDict(
                        conv_1x1=nn.Conv2d(channels, d_model, kernel_size=1, bias=False),
                        norm_0=LayerNorm2d(d_model),
                        conv_3x3=nn.Conv2d(d_model, d_model, kernel_size=3, padding=1, bias=False),
                        norm_1=LayerNorm2d(d_model),
                    )
                )
            ]
        )
        self.position_encoding = SineEncoding2d(d_model)

    def forward(self, levels: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self.convs[0](levels[0])
        return [feats], [self.position_encoding(feats)]


class ImageEncoder(nn.Module):
    """(B, 3, S, S) normalised image -> feature levels, finest first, the last at stride 16: three
    (strides 4, 8, 16) for Hiera and RepViT trunks, one for a ViT trunk."""

    def __init__(self, cfg: Sam2Config) -> None:
        super().__init__()
        if isinstance(cfg.trunk, HieraConfig):
            self.trunk = Hiera(cfg.trunk)
        elif isinstance(cfg.trunk, RepViTConfig):
            self.trunk = RepViT(cfg.trunk)
        else:
            self.trunk = ViT(cfg.trunk)
        single = len(cfg.trunk.channels) == 1
        self.neck = (SingleLevelNeck if single else FpnNeck)(cfg.trunk.channels, cfg.d_model)
        self.scalp = 0 if single else 1

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats, pos = self.neck(self.trunk(images))
        if self.scalp:
            feats, pos = feats[: -self.scalp], pos[: -self.scalp]
        return feats, pos
