"""One view (a crop, a whole plane or a tile) and its grid points -> filtered candidate masks.

Each point is its own prompt (one positive click). Points are decoded ``points_per_batch`` at a
time against the view's one embedding; the candidates then go through SAM2's filters: predicted
IoU, stability of the upsampled logits, binarisation and boxes. Masks are upsampled only for the
candidates that pass the IoU filter, a few at a time, so memory stays bounded on 1024-pixel views
(SAM2 upsamples every candidate of a batch first; the kept masks are the same).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ...model import ImageFeatures
from ...model._layers import resize_bilinear
from ..prompts import to_model_xy
from .grid import boxes_xyxy, clean_low_res, stability

UPSAMPLE_CHUNK = 16
"""How many candidate masks are upsampled to view size at once."""

LOW_RES_CLAMP = 32.0
"""Low-res logits fed back as a mask prompt are clamped to +-this (as SAM2's predictor does)."""


@dataclass
class ViewCandidates:
    """Candidates of one view that passed the filters, in decoding order.

    Attributes:
        masks: N bool arrays, each cropped to its box (rows y0..y1, cols x0..x1 of ``boxes``), so
            that thousands of candidates on a 1024-pixel view stay small.
        iou: (N,) float32 predicted IoU. stability: (N,) float32 stability score.
        points: (N, 2) float64 (row, col) view pixels of the click that made each mask.
        boxes: (N, 4) int64 ``xyxy`` boxes (inclusive ends) in view pixels.
        output: (N,) int64 which decoder output (0..K-1) each mask is.
    """

    masks: list[np.ndarray]
    iou: torch.Tensor
    stability: torch.Tensor
    points: np.ndarray
    boxes: torch.Tensor
    output: torch.Tensor

    @classmethod
    def empty(cls) -> ViewCandidates:
        return cls(
            [],
            torch.zeros(0),
            torch.zeros(0),
            np.zeros((0, 2)),
            torch.zeros(0, 4, dtype=torch.int64),
            torch.zeros(0, dtype=torch.int64),
        )

    def take(self, keep: torch.Tensor) -> ViewCandidates:
        idx = torch.as_tensor(keep)
        if idx.dtype == torch.bool:
            idx = torch.nonzero(idx).flatten()
        return ViewCandidates(
            [self.masks[i] for i in idx.tolist()],
            self.iou[idx],
            self.stability[idx],
            self.points[idx.numpy()],
            self.boxes[idx],
            self.output[idx],
        )

    @staticmethod
    def cat(parts: list[ViewCandidates]) -> ViewCandidates:
        if not parts:
            return ViewCandidates.empty()
        return ViewCandidates(
            [m for p in parts for m in p.masks],
            torch.cat([p.iou for p in parts]),
            torch.cat([p.stability for p in parts]),
            np.concatenate([p.points for p in parts]),
            torch.cat([p.boxes for p in parts]),
            torch.cat([p.output for p in parts]),
        )


Decode = Callable[
    [ImageFeatures, torch.Tensor, torch.Tensor, torch.Tensor | None, bool], tuple[torch.Tensor, torch.Tensor]
]


def decode_view(
    decode: Decode,
    feats: ImageFeatures,
    view_hw: tuple[int, int],
    region_hw: tuple[int, int],
    points: np.ndarray,
    cfg,
    image_size: int,
    step: Callable[[], None] | None = None,
) -> ViewCandidates:
    """Decode every point of ``points`` ((N, 2) (row, col) view pixels) on one view.

    Args:
        decode: ``decode(feats, coords (B, 1, 2), labels (B, 1), mask_logits, multimask)`` ->
            (low-res logits (B, K, s, s), iou (B, K)) on the CPU (a predictor backend's decode).
        view_hw: the (h, w) that the model input stands for (a tile's nominal size, a crop's size).
        region_hw: the part of the view inside the plane (top-left aligned), where masks are kept.
        cfg: an :class:`~napari_sam2.engine.automask.AutoMaskConfig`.
        step: called after each batch (progress and cancel).
    """
    parts = []
    for start in range(0, len(points), cfg.points_per_batch):
        batch = points[start : start + cfg.points_per_batch]
        coords = to_model_xy(batch, view_hw, image_size)[:, None, :]  # (B, 1, 2) model (x, y)
        labels = torch.ones(len(batch), 1, dtype=torch.int32)
        low, iou = decode(feats, coords, labels, None, cfg.multimask_output)  # (B, K, s, s), (B, K)
        k = low.shape[1]
        low, iou = low.flatten(0, 1), iou.flatten(0, 1)  # (B*K, s, s), (B*K,)
        pts = np.repeat(batch, k, axis=0)
        output = torch.arange(k).repeat(len(batch))
        if cfg.use_m2m:
            low, iou = _refine(decode, feats, coords.repeat_interleave(k, dim=0), low, cfg)
        parts.append(_filter(low, iou, pts, output, view_hw, region_hw, cfg))
        if step is not None:
            step()
    return ViewCandidates.cat(parts)


def _refine(
    decode: Decode, feats, coords: torch.Tensor, low: torch.Tensor, cfg
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM2's mask-to-mask step: decode each click again with its own low-res logits as the mask
    prompt, asking for one mask."""
    outs, ious = [], []
    prompt = low.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)[:, None]  # (M, 1, s, s)
    for start in range(0, len(coords), cfg.points_per_batch):
        sl = slice(start, start + cfg.points_per_batch)
        labels = torch.ones(len(coords[sl]), 1, dtype=torch.int32)
        m, i = decode(feats, coords[sl], labels, prompt[sl], False)
        outs.append(m[:, 0])
        ious.append(i[:, 0])
    return torch.cat(outs), torch.cat(ious)


def _filter(
    low: torch.Tensor,
    iou: torch.Tensor,
    points: np.ndarray,
    output: torch.Tensor,
    view_hw: tuple[int, int],
    region_hw: tuple[int, int],
    cfg,
) -> ViewCandidates:
    """IoU filter, hole filling, upsampling, stability filter, binarisation, boxes."""
    keep = iou > cfg.pred_iou_thresh if cfg.pred_iou_thresh > 0 else torch.ones(len(iou), dtype=torch.bool)
    idx = torch.nonzero(keep).flatten()
    low, iou, output, points = low[idx], iou[idx], output[idx], points[idx.numpy()]
    low = clean_low_res(low, cfg.min_mask_region_area, cfg.mask_threshold)
    rh, rw = region_hw
    parts = []
    for start in range(0, len(low), UPSAMPLE_CHUNK):
        sl = slice(start, start + UPSAMPLE_CHUNK)
        up = resize_bilinear(low[sl, None].float(), view_hw)[:, 0, :rh, :rw]  # (n, rh, rw) logits
        stab = stability(up, cfg.mask_threshold, cfg.stability_score_offset).float()
        keep = (
            stab >= cfg.stability_score_thresh
            if cfg.stability_score_thresh > 0
            else torch.ones(len(stab), dtype=torch.bool)
        )
        idx = torch.nonzero(keep).flatten()
        kept = up[idx] > cfg.mask_threshold
        boxes = boxes_xyxy(kept)
        crops = [m[y0 : y1 + 1, x0 : x1 + 1].numpy() for m, (x0, y0, x1, y1) in zip(kept, boxes.tolist())]
        pick = idx + start
        parts.append(
            ViewCandidates(crops, iou[pick].float(), stab[idx], points[pick.numpy()], boxes, output[pick])
        )
    return ViewCandidates.cat(parts)
