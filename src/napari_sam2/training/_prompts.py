"""Simulated user prompts for training, as in SAM / SAM2 training.

All masks are (H, W) bool numpy arrays at model-input resolution and every point is (row, col)
in those pixels; :func:`..prompts.prompt_tensors` turns them into model (x, y) later, so the
axis flip stays in one place.

* a first click: a random pixel of the object, or (with ``center_prob``) its most interior
  pixel, which is where people tend to click;
* a box: the object's bounding box with Gaussian jitter of ``jitter`` times each side
  (at most ``max_jitter`` pixels), as in SAM;
* a correction click: a pixel of the error region of the current prediction, positive where
  the object was missed, negative where the prediction spills over. Either uniform over all
  errors (SAM2's training sampler) or the most interior pixel of the largest error (how its
  evaluation simulates a user).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["first_click", "jittered_box", "correction_click"]


def _interior(region: np.ndarray) -> tuple[int, int]:
    """Pixel of ``region`` farthest from its border (ties: the first in C order)."""
    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(r), int(c)


def _uniform(region: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    rows, cols = np.nonzero(region)
    i = int(rng.integers(len(rows)))
    return int(rows[i]), int(cols[i])


def first_click(mask: np.ndarray, rng: np.random.Generator, center_prob: float = 0.3) -> tuple[int, int]:
    """A positive click (row, col) on a non-empty ``mask``."""
    if rng.random() < center_prob:
        return _interior(mask)
    return _uniform(mask, rng)


def jittered_box(
    mask: np.ndarray, rng: np.random.Generator, jitter: float = 0.1, max_jitter: float = 20.0
) -> tuple[float, float, float, float]:
    """(row0, col0, row1, col1) of ``mask``'s bounding box, each corner moved by
    N(0, jitter * side) capped at ``max_jitter`` pixels, clipped to the plane."""
    rows, cols = np.nonzero(mask)
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    h, w = mask.shape
    sr = min(jitter * (r1 - r0 + 1), max_jitter)
    sc = min(jitter * (c1 - c0 + 1), max_jitter)
    dr0, dr1 = rng.normal(0.0, sr, 2) if sr > 0 else (0.0, 0.0)
    dc0, dc1 = rng.normal(0.0, sc, 2) if sc > 0 else (0.0, 0.0)
    box = (
        float(np.clip(r0 + dr0, 0, h - 1)),
        float(np.clip(c0 + dc0, 0, w - 1)),
        float(np.clip(r1 + dr1, 0, h - 1)),
        float(np.clip(c1 + dc1, 0, w - 1)),
    )
    return box


def correction_click(
    gt: np.ndarray, pred: np.ndarray, rng: np.random.Generator, center_prob: float = 0.5
) -> tuple[int, int, int]:
    """(row, col, label) of a click that corrects ``pred`` towards ``gt``.

    label 1 where the object was missed, 0 where the prediction covers background. Without any
    error a positive click inside the object is returned (it then only confirms the mask).
    """
    error = gt != pred
    if not error.any():
        r, c = _uniform(gt, rng) if gt.any() else (gt.shape[0] // 2, gt.shape[1] // 2)
        return r, c, int(gt[r, c])
    if rng.random() < center_prob:
        missed, extra = gt & ~pred, pred & ~gt
        # the larger of the two errors, then its largest connected piece
        region = missed if missed.sum() >= extra.sum() else extra
        lab, n = ndimage.label(region)
        if n > 1:
            sizes = ndimage.sum(region, lab, range(1, n + 1))
            region = lab == int(np.argmax(sizes)) + 1
        r, c = _interior(region)
    else:
        r, c = _uniform(error, rng)
    return r, c, int(gt[r, c])
