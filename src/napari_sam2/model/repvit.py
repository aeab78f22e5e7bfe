"""RepViT: the mobile CNN that EdgeTAM uses as its image trunk instead of Hiera.

RepViT (Wang et al., CVPR 2024) is a MobileNetV3-like network re-designed with ViT habits: each
block separates token mixing (a depthwise 3x3 convolution plus a depthwise 1x1 convolution plus
identity, "structural re-parameterisation") from channel mixing (a 1x1 inverted bottleneck).
Every convolution is followed by a batch norm (``ConvNorm``); in eval mode the norm and the
three token-mixing branches are folded into one convolution on the fly (:meth:`ConvNorm.fused`),
which gives the same result (within float rounding) at a fraction of the memory traffic.

State-dict names follow the EdgeTAM checkpoints, whose trunk is timm's ``repvit_m1`` feature
extractor (``features_only=True``) under ``body``: ``body.stem.conv1.c.weight``,
``body.stages_2.blocks.5.token_mixer.conv.bn.running_var``, ... We build the same layout with
plain torch so that the model package needs no timm (see ``docs/models.md``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import RepViTConfig


class ConvNorm(nn.Module):
    """Bias-free convolution ``c`` followed by batch norm ``bn``."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the single convolution equal to conv + batch norm (eval statistics)."""
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
        return self.c.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.bn(self.c(x))
        w, b = self.fused()
        return F.conv2d(x, w, b, self.c.stride, self.c.padding, groups=self.c.groups)


class TokenMixer(nn.Module):
    """Depthwise 3x3 conv-norm + depthwise 1x1 conv-norm + identity, summed."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = ConvNorm(dim, dim, kernel=3, groups=dim)
        self.conv1 = ConvNorm(dim, dim, kernel=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.conv(x) + self.conv1(x) + x
        # one depthwise 3x3 convolution: the 1x1 branch and the identity add to the kernel's centre
        w3, b3 = self.conv.fused()  # (C, 1, 3, 3)
        w1, b1 = self.conv1.fused()  # (C, 1, 1, 1)
        w = w3.clone()
        w[:, :, 1:2, 1:2] += w1 + 1.0
        return F.conv2d(x, w, b3 + b1, padding=1, groups=x.shape[1])


class SqueezeExcite(nn.Module):
    """Channel gate: global mean -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid, times the input."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = max(8, int(dim * ratio + 4) // 8 * 8)  # rounded to a multiple of 8
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class ChannelMixer(nn.Module):
    """1x1 conv-norm to ``ratio`` times the channels, GELU, 1x1 conv-norm back."""

    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(dim, dim * ratio)
        self.conv2 = ConvNorm(dim * ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.gelu(self.conv1(x)))


class RepViTBlock(nn.Module):
    """Token mixer, optional squeeze-excitation, then a residual channel mixer."""

    def __init__(self, dim: int, mlp_ratio: int, se_ratio: float | None) -> None:
        super().__init__()
        self.token_mixer = TokenMixer(dim)
        self.se = SqueezeExcite(dim, se_ratio) if se_ratio else nn.Identity()
        self.channel_mixer = ChannelMixer(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return x + self.channel_mixer(x)


class Downsample(nn.Module):
    """Halves the resolution: a block, a depthwise stride-2 conv, a 1x1 conv to the new width and
    a residual channel mixer."""

    def __init__(self, dim: int, out_dim: int, mlp_ratio: int) -> None:
        super().__init__()
        self.pre_block = RepViTBlock(dim, mlp_ratio, se_ratio=None)
        self.spatial_downsample = ConvNorm(dim, dim, kernel=3, stride=2, groups=dim)
        self.channel_downsample = ConvNorm(dim, out_dim)
        self.ffn = ChannelMixer(out_dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_downsample(self.spatial_downsample(self.pre_block(x)))
        return x + self.ffn(x)


class Stage(nn.Module):
    """Optional downsampling, then blocks that alternate with and without squeeze-excitation."""

    def __init__(self, dim: int, out_dim: int, depth: int, cfg: RepViTConfig, downsample: bool) -> None:
        super().__init__()
        self.downsample = Downsample(dim, out_dim, cfg.mlp_ratio) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *(RepViTBlock(out_dim, cfg.mlp_ratio, cfg.se_ratio if i % 2 == 0 else None) for i in range(depth))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Stem(nn.Module):
    """Two stride-2 3x3 conv-norms with a GELU between: (B, 3, S, S) -> (B, C, S/4, S/4)."""

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(3, out_dim // 2, kernel=3, stride=2)
        self.conv2 = ConvNorm(out_dim // 2, out_dim, kernel=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.gelu(self.conv1(x)))


class RepViTBody(nn.Module):
    """Stem and stages, registered as ``stem``, ``stages_0``, ``stages_1``, ... (the checkpoints'
    names, from timm's flattened feature extractor)."""

    def __init__(self, cfg: RepViTConfig) -> None:
        super().__init__()
        self.stem = Stem(cfg.widths[0])
        dim = cfg.widths[0]
        for i, (width, depth) in enumerate(zip(cfg.widths, cfg.depths)):
            self.add_module(f"stages_{i}", Stage(dim, width, depth, cfg, downsample=i > 0))
            dim = width
        self.num_stages = len(cfg.widths)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(images)
        outputs = []
        for i in range(self.num_stages):
            x = getattr(self, f"stages_{i}")(x)
            outputs.append(x)
        return outputs


class RepViT(nn.Module):
    """The trunk: image (B, 3, S, S) -> four NCHW maps at strides 4, 8, 16, 32 (as :class:`Hiera`)."""

    def __init__(self, cfg: RepViTConfig) -> None:
        super().__init__()
        self.body = RepViTBody(cfg)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.body(images)
