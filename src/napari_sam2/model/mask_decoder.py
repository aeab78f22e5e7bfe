"""Mask decoder: prompt tokens + image embedding -> mask logits, IoU scores, object score."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._layers import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


@dataclass
class DecoderOutput:
    """Raw decoder output for a batch of B prompt sets.

    Attributes:
        masks: low-resolution mask logits (B, K, 4h, 4w); K = 3 with multimask output, else 1.
        iou: predicted IoU of each mask (B, K), in [0, 1].
        tokens: mask tokens for the object pointer (B, 3 or 1, C).
        object_score: object-presence logit (B, 1); > 0 means "the object is there".
    """

    masks: torch.Tensor
    iou: torch.Tensor
    tokens: torch.Tensor
    object_score: torch.Tensor


def stability_score(logits: torch.Tensor, offset: float, threshold: float = 0.0) -> torch.Tensor:
    """IoU between the masks thresholded at ``threshold +- offset``, over the last two axes.

    1.0 where the looser mask is empty.
    """
    inner = (logits > threshold + offset).flatten(-2).sum(-1).float()
    outer = (logits > threshold - offset).flatten(-2).sum(-1).float()
    return torch.where(outer > 0, inner / outer, torch.ones_like(inner))


class MaskDecoder(nn.Module):
    """Predicts masks from image features and prompt embeddings.

    Output tokens are, in order: object score, IoU, then ``1 + num_multimask`` mask tokens. Mask
    token 0 gives the single-mask answer, tokens 1.. the multimask answers.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        num_multimask_outputs: int = 3,
        dynamic_multimask: bool = True,
        stability_delta: float = 0.05,
        stability_thresh: float = 0.98,
        high_res: bool = True,
    ) -> None:
        super().__init__()
        self.high_res = high_res
        self.num_mask_tokens = num_multimask_outputs + 1
        self.dynamic_multimask = dynamic_multimask
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh

        self.transformer = TwoWayTransformer(depth, dim, num_heads, mlp_dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        if high_res:  # projections of the stride-4 and stride-8 image features, added while upscaling
            self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, num_layers=3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(dim, 256, self.num_mask_tokens, num_layers=3, sigmoid_output=True)
        self.pred_obj_score_head = MLP(dim, dim, 1, num_layers=3)

    def forward(
        self,
        image_embed: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        multimask: bool,
        repeat_image: bool = False,
    ) -> DecoderOutput:
        """Decode B prompt sets.

        Args:
            image_embed: (1 or B, C, h, w) image embedding; with ``repeat_image`` one image is
                shared by all prompt sets.
            image_pe: (1, C, h, w) positional encoding of the embedding grid.
            sparse: (B, N, C) prompt tokens. dense: (B, C, h, w) mask-prompt embedding.
            high_res: projected stride-4 (1|B, C/8, 4h, 4w) and stride-8 (1|B, C/4, 2h, 2w) maps;
                ignored by a decoder built without them (EfficientTAM).
            multimask: return the three multimask outputs instead of one mask.
        """
        b = sparse.shape[0]
        out_tokens = torch.cat((self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight))
        tokens = torch.cat((out_tokens.unsqueeze(0).expand(b, -1, -1), sparse), dim=1)
        if repeat_image:
            image_embed = image_embed.repeat_interleave(b, dim=0)  # high_res broadcasts
        src = image_embed + dense
        pe = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pe, tokens)
        obj_token, iou_token = hs[:, 0], hs[:, 1]
        mask_tokens = hs[:, 2 : 2 + self.num_mask_tokens]  # (B, T, C)

        up1, ln1, act1, up2, act2 = self.output_upscaling
        src = src.transpose(1, 2).reshape(b, c, h, w)
        if self.high_res:
            feat_s0, feat_s1 = high_res
            x = act1(ln1(up1(src) + feat_s1))
            x = act2(up2(x) + feat_s0)  # (B, C/8, 4h, 4w)
        else:
            x = act2(up2(act1(ln1(up1(src)))))
        hyper = torch.stack(
            [mlp(mask_tokens[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (B, T, C/8)
        bx, cx, hx, wx = x.shape
        masks = (hyper @ x.view(bx, cx, hx * wx)).view(bx, -1, hx, wx)
        iou = self.iou_prediction_head(iou_token)
        object_score = self.pred_obj_score_head(obj_token)

        if multimask:
            return DecoderOutput(masks[:, 1:], iou[:, 1:], mask_tokens[:, 1:], object_score)
        if self.dynamic_multimask and not self.training:
            masks, iou = self._stable_or_best(masks, iou)
            return DecoderOutput(masks, iou, mask_tokens[:, :1], object_score)
        return DecoderOutput(masks[:, :1], iou[:, :1], mask_tokens[:, :1], object_score)

    def _stable_or_best(self, masks: torch.Tensor, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the single mask where it is stable, else the multimask output with the best IoU.

        The object pointer still uses token 0 either way (as the official model does).
        """
        best = iou[:, 1:].argmax(dim=-1) + 1  # (B,)
        rows = torch.arange(masks.shape[0], device=masks.device)
        best_masks = masks[rows, best].unsqueeze(1)
        best_iou = iou[rows, best].unsqueeze(1)
        stable = stability_score(masks[:, 0], self.stability_delta) >= self.stability_thresh  # (B,)
        masks = torch.where(stable[:, None, None, None], masks[:, :1], best_masks)
        iou = torch.where(stable[:, None], iou[:, :1], best_iou)
        return masks, iou
