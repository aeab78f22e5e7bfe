"""Automatic masks on a plane larger than the model input, over the predictor's tiled embeddings.

1. *Points.* One grid covers the whole plane with the density SAM2 uses on one model input
   (``points_per_side`` points per tile side). Each point is decoded in exactly one tile: the
   one that contains it with its centre nearest (the tile an interactive click there would use),
   so no point is decoded twice and every point sees the most context around it.
2. *Per tile.* SAM2's filters and box non-maximum suppression, as on a single image.
3. *Seams.* A mask whose box comes within 20 pixels of a tile edge that lies inside the plane may
   be cut there. It is decoded again from its click by :meth:`ImagePredictor.predict`, which
   follows the object into the neighbouring tiles and blends their logits (no seam). Cut masks are
   grown best first, and one mostly covered by an object grown before is not grown again.
4. *Merge.* Masks from all tiles go through one more box NMS (SAM2's ``box_nms_thresh``, best
   predicted IoU first), which removes the copies of an object seen whole by two tiles.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..predictor import ImagePredictor
from ..prompts import Prompt
from .decode import decode_view
from .grid import bbox_of, near_inner_edge, nms

COVERED = 0.5
"""A cut mask with at least this fraction of its pixels inside an object already grown is skipped."""


def plane_points(plane_hw: tuple[int, int], tile_size: int, points_per_side: int) -> np.ndarray:
    """(N, 2) (row, col) grid over the plane, ``points_per_side`` per ``tile_size`` pixels."""
    spacing = tile_size / points_per_side
    axes = []
    for n_px in plane_hw:
        n = max(1, round(n_px / spacing))
        axes.append((np.arange(n) + 0.5) * n_px / n)
    rows, cols = np.meshgrid(*axes, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1)


def assign_points(predictor: ImagePredictor, points: np.ndarray) -> np.ndarray:
    """(N,) index into ``grid.tiles`` of the tile that decodes each point (see module doc)."""
    grid = predictor.grid
    tiles = grid.tiles
    r0 = np.array([t.row0 for t in tiles])[None]
    c0 = np.array([t.col0 for t in tiles])[None]
    r1 = np.array([t.row1 for t in tiles])[None]
    c1 = np.array([t.col1 for t in tiles])[None]
    clipped = np.array([t.clipped(grid.plane_hw) for t in tiles], dtype=np.float64)
    cr, cc = (
        (clipped[:, 0] + clipped[:, 2]) / 2,
        (clipped[:, 1] + clipped[:, 3]) / 2,
    )  # (row0, col0, row1, col1)
    rows, cols = points[:, :1], points[:, 1:]
    inside = (r0 - 0.5 <= rows) & (rows < r1 - 0.5) & (c0 - 0.5 <= cols) & (cols < c1 - 0.5)
    dist = (cr[None] - rows) ** 2 + (cc[None] - cols) ** 2
    return np.where(inside, dist, np.inf).argmin(axis=1)


def generate_tiled(
    predictor: ImagePredictor,
    cfg,
    make_mask: Callable,
    step: Callable[[], None],
    cancel_check: Callable[[], None],
) -> list:
    """All masks of the predictor's current (tiled) plane, as ``make_mask(...)`` records."""
    grid = predictor.grid
    hw = grid.plane_hw
    points = plane_points(hw, grid.tile_size, cfg.points_per_side)
    owner = assign_points(predictor, points)
    size = predictor.backend.image_size
    whole, cut = [], []
    for ti, tile in enumerate(grid.tiles):
        pts = points[owner == ti]
        if not len(pts):
            continue
        cancel_check()
        r0, c0, r1, c1 = tile.clipped(hw)
        feats = predictor.features(tile)
        cands = decode_view(
            predictor.backend.decode,
            feats,
            (tile.height, tile.width),
            (r1 - r0, c1 - c0),
            pts - np.array([r0, c0]),
            cfg,
            size,
            step,
        )
        cands = cands.take(nms(cands.boxes, cands.iou, cfg.box_nms_thresh))
        plane_boxes = cands.boxes + torch.tensor([c0, r0, c0, r0])
        at_seam = near_inner_edge(plane_boxes, (c0, r0, c1, r1), hw)
        for i, (x0, y0, _, _) in enumerate(plane_boxes.tolist()):
            m = cands.masks[i]
            rec = make_mask(
                m,
                (y0, x0, y0 + m.shape[0], x0 + m.shape[1]),
                float(cands.iou[i]),
                float(cands.stability[i]),
                tuple(cands.points[i] + (r0, c0)),
                (r0, c0, r1, c1),
            )
            (cut if at_seam[i] else whole).append((rec, int(cands.output[i])))
    grown = _grow(predictor, cfg, cut, make_mask, cancel_check)
    found = [rec for rec, _ in whole] + grown
    if not found:
        return []
    boxes = torch.tensor([(r.bbox[1], r.bbox[0], r.bbox[3] - 1, r.bbox[2] - 1) for r in found])
    keep = nms(boxes, torch.tensor([r.score for r in found]), cfg.box_nms_thresh)
    return [found[i] for i in keep.tolist()]


def _grow(
    predictor: ImagePredictor, cfg, cut: list, make_mask: Callable, cancel_check: Callable[[], None]
) -> list:
    """Masks cut by a tile seam, re-predicted across tiles from their clicks (best first)."""
    hw = predictor.grid.plane_hw
    covered = np.zeros(hw, dtype=bool)
    out = []
    for rec, k in sorted(cut, key=lambda item: -item[0].score):
        r0, c0, r1, c1 = rec.bbox
        if np.count_nonzero(covered[r0:r1, c0:c1] & rec.mask) >= COVERED * rec.area:
            continue
        cancel_check()
        pred = predictor.predict(Prompt(points=[rec.point], labels=[1]), multimask=cfg.multimask_output)
        mask = pred.masks[min(k, len(pred.masks) - 1)]
        box = bbox_of(mask)
        if box is None:
            continue
        b0, b1 = pred.bbox[0], pred.bbox[1]  # (row0, col0) of the prediction's box
        m = mask[box[0] : box[2], box[1] : box[3]]
        bbox = (b0 + box[0], b1 + box[1], b0 + box[2], b1 + box[3])
        covered[bbox[0] : bbox[2], bbox[1] : bbox[3]] |= m
        out.append(make_mask(m, bbox, rec.score, rec.stability, rec.point, rec.crop))
    return out
