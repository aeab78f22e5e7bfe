"""Geometry and mask arithmetic of the automatic mask generator, as pure functions.

Conventions: planes are (H, W) arrays indexed (row, col). Two box layouts appear, each named:

* ``xyxy``: (x0, y0, x1, y1) with *inclusive* right/bottom pixel, SAM2's layout for the boxes it
  runs non-maximum suppression on (an empty mask has the box (0, 0, 0, 0));
* ``bbox``: (row0, col0, row1, col1) with *exclusive* ends, how the engine describes regions.

Crop boxes follow SAM2: (x0, y0, x1, y1) with exclusive ends.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import torch
from scipy import ndimage

EDGE_ATOL = 20.0
"""A mask box within this many pixels of a crop (or tile) edge that lies inside the image counts as
cut by that edge (SAM2's value)."""

EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity, as SAM2's connected-components kernel


def crop_boxes(
    plane_hw: tuple[int, int], n_layers: int, overlap_ratio: float
) -> list[tuple[int, tuple[int, ...]]]:
    """SAM2's crops: [(layer, (x0, y0, x1, y1))], layer 0 the whole plane, layer i >= 1 a
    2^i x 2^i grid of overlapping crops (x varies slowest, as in SAM2)."""
    h, w = plane_hw
    out = [(0, (0, 0, w, h))]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * min(h, w) * 2 / n)
        side_w = math.ceil((overlap * (n - 1) + w) / n)
        side_h = math.ceil((overlap * (n - 1) + h) / n)
        xs = [int((side_w - overlap) * i) for i in range(n)]
        ys = [int((side_h - overlap) * i) for i in range(n)]
        out += [(layer, (x0, y0, min(x0 + side_w, w), min(y0 + side_h, h))) for x0, y0 in product(xs, ys)]
    return out


def unit_grid(n: int) -> np.ndarray:
    """(n*n, 2) points (row, col) at the centres of an n x n grid of the unit square, col fastest.

    ``linspace`` rather than ``(k + 0.5) / n`` so the float64 values equal SAM2's to the bit."""
    centres = np.linspace(0.5 / n, 1 - 0.5 / n, n)
    rows, cols = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1)


def stability(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """(N,) IoU of the masks ``logits > threshold + offset`` and ``> threshold - offset`` over the
    last two axes of (N, h, w) logits. NaN for a mask empty at both (SAM2 divides 0 by 0, so such a
    mask never passes a stability threshold)."""
    inner = (logits > threshold + offset).sum(dim=(-2, -1))
    outer = (logits > threshold - offset).sum(dim=(-2, -1))
    return inner / outer


def boxes_xyxy(masks: torch.Tensor) -> torch.Tensor:
    """(N, 4) int64 inclusive boxes of (N, h, w) bool masks; (0, 0, 0, 0) for an empty mask."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.int64)
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (N, h), (N, w)
    out = torch.zeros(n, 4, dtype=torch.int64)
    has = rows.any(dim=1)
    ri, ci = torch.arange(h), torch.arange(w)
    out[:, 0] = torch.where(cols, ci, w).min(dim=1).values
    out[:, 1] = torch.where(rows, ri, h).min(dim=1).values
    out[:, 2] = torch.where(cols, ci, -1).max(dim=1).values
    out[:, 3] = torch.where(rows, ri, -1).max(dim=1).values
    out[~has] = 0
    return out


def near_inner_edge(boxes: torch.Tensor, crop: tuple[int, ...], plane_hw: tuple[int, int]) -> torch.Tensor:
    """(N,) bool: the plane-coordinate ``xyxy`` box lies within :data:`EDGE_ATOL` of an edge of
    ``crop`` (x0, y0, x1, y1) that is not also an edge of the plane (SAM2's comparison, which
    sets the inclusive box end against the exclusive crop end)."""
    crop_t = torch.tensor(crop, dtype=torch.float32)
    plane_t = torch.tensor([0, 0, plane_hw[1], plane_hw[0]], dtype=torch.float32)
    b = boxes.float()
    at_crop = torch.isclose(b, crop_t[None], atol=EDGE_ATOL, rtol=0)
    at_plane = torch.isclose(b, plane_t[None], atol=EDGE_ATOL, rtol=0)
    return (at_crop & ~at_plane).any(dim=1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the ``xyxy`` boxes that greedy non-maximum suppression keeps, best score first.

    The same result as torchvision's ``batched_nms`` with one category (SAM2's call), written here
    because importing torchvision loads ``torch._dynamo`` and ``triton``, whose LLVM crashes a napari
    that already runs on Mesa's OpenGL: boxes in order of descending score (stable for ties) are
    kept unless their IoU with a kept box exceeds ``iou_threshold``, in float32 arithmetic as
    torchvision's CPU kernel. O(N * kept) numpy work, milliseconds for a few thousand boxes.

    Args:
        boxes: (N, 4) boxes (x0, y0, x1, y1). scores: (N,). iou_threshold: in [0, 1].

    Returns:
        (K,) int64 indices into ``boxes``.
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64)
    b = boxes.detach().cpu().float().numpy()
    order = torch.sort(scores.detach().cpu().float(), stable=True, descending=True).indices.numpy()
    x0, y0, x1, y1 = (np.ascontiguousarray(b[:, k]) for k in range(4))
    areas = (x1 - x0) * (y1 - y0)
    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 for empty boxes: NaN, never above
        for pos, i in enumerate(order):
            if suppressed[i]:
                continue
            keep.append(i)
            rest = order[pos + 1 :]
            w = np.maximum(np.float32(0), np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
            h = np.maximum(np.float32(0), np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
            inter = w * h
            iou = inter / (areas[i] + areas[rest] - inter)
            suppressed[rest[iou.astype(np.float64) > iou_threshold]] = True
    return torch.as_tensor(np.asarray(keep, dtype=np.int64))


def clean_low_res(logits: torch.Tensor, max_area: int, threshold: float) -> torch.Tensor:
    """Fill holes and remove specks of at most ``max_area`` pixels in (N, K, h, w) low-res logits,
    on the CPU, as SAM2 does with its CUDA kernel before upsampling: 8-connected background pieces
    (including those on the border) become ``threshold + 10``, then 8-connected foreground pieces
    of the result become ``threshold - 10``, both judged on the original logits."""
    if max_area <= 0:
        return logits
    flat = logits.reshape(-1, *logits.shape[-2:]).float()
    out = flat.clone()
    fg = (flat > threshold).numpy()
    for i in range(len(flat)):
        holes = _small_pieces(~fg[i], max_area)
        specks = _small_pieces(fg[i], max_area)
        if holes.any():
            out[i][torch.from_numpy(holes)] = threshold + 10.0
        if specks.any():
            out[i][torch.from_numpy(specks)] = threshold - 10.0
    return out.reshape(logits.shape)


def _small_pieces(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Pixels of the 8-connected pieces of ``mask`` with at most ``max_area`` pixels."""
    lab, n = ndimage.label(mask, structure=EIGHT)
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(lab.ravel())
    small = sizes <= max_area
    small[0] = False
    return small[lab]


def bbox_of(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, col0, row1, col1), ends exclusive, of a bool mask; None if empty."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if not len(rows):
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def overlap_area(a_mask: np.ndarray, a_box, b_mask: np.ndarray, b_box) -> int:
    """Pixels shared by two bbox-cropped masks placed at their ``bbox`` (row0, col0, row1, col1)."""
    r0, c0 = max(a_box[0], b_box[0]), max(a_box[1], b_box[1])
    r1, c1 = min(a_box[2], b_box[2]), min(a_box[3], b_box[3])
    if r0 >= r1 or c0 >= c1:
        return 0
    a = a_mask[r0 - a_box[0] : r1 - a_box[0], c0 - a_box[1] : c1 - a_box[1]]
    b = b_mask[r0 - b_box[0] : r1 - b_box[0], c0 - b_box[1] : c1 - b_box[1]]
    return int(np.count_nonzero(a & b))
