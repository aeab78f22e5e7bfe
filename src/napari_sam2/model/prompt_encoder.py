"""Prompt encoder: clicks and box corners -> sparse tokens; a mask prompt -> a dense map."""

from __future__ import annotations

import torch
from torch import nn

from ._layers import LayerNorm2d
from .position_encoding import RandomFourierEncoding

# Point labels understood by the prompt encoder.
PAD, NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3


class PromptEncoder(nn.Module):
    """Embeds prompts for the mask decoder.

    Args:
        embed_dim: token channels (``d_model``).
        embed_size: side of the image embedding grid (64 for a 1024 input).
        image_size: side of the model input in pixels; point coordinates are in these pixels.
        mask_in_chans: hidden channels of the mask downscaler.
    """

    def __init__(self, embed_dim: int, embed_size: int, image_size: int, mask_in_chans: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.embed_size = embed_size
        self.image_size = image_size
        self.mask_input_size = 4 * embed_size
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        # one learned vector per label 0..3, and one for padding (-1)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid, (1, C, h, w)."""
        return self.pe_layer.grid(self.embed_size, self.embed_size).unsqueeze(0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Points (B, N, 2) as (x, y) in model pixels, labels (B, N) -> tokens (B, N + 1, C).

        One padding point is appended, as the official model always does.
        """
        b = coords.shape[0]
        coords = torch.cat((coords, coords.new_zeros(b, 1, 2)), dim=1)
        labels = torch.cat((labels, labels.new_full((b, 1), PAD)), dim=1)
        pe = self.pe_layer.encode((coords + 0.5) / self.image_size)  # (B, N+1, C)
        table = torch.cat([e.weight for e in self.point_embeddings], dim=0)  # (4, C)
        learned = table[labels.clamp(min=0).long()]  # (B, N+1, C)
        is_pad = (labels == PAD).unsqueeze(-1)
        return torch.where(is_pad, self.not_a_point_embed.weight.expand_as(pe), pe + learned)

    def embed_mask(self, mask_logits: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Mask prompt logits (B, 1, 4h, 4w), or None -> dense embedding (B, C, h, w)."""
        if mask_logits is not None:
            return self.mask_downscaling(mask_logits)
        s = self.embed_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, s, s)

    def forward(
        self, coords: torch.Tensor, labels: torch.Tensor, mask_logits: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (sparse tokens (B, N+1, C), dense embedding (B, C, h, w))."""
        return self.embed_points(coords, labels), self.embed_mask(mask_logits, coords.shape[0])
