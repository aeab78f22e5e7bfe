"""Overlapping candidate masks -> one instance label image (each pixel one object).

SAM2's generator returns wholes, parts and groups side by side (a click inside a nucleus can give
the nucleus, half of it, and the cluster it belongs to). Instance labels need one answer per pixel,
decided here by containment, smallest masks first:

* a mask that holds exactly one smaller accepted mask (at least :data:`INSIDE` of that mask's
  pixels) is the whole of that part: it replaces the part;
* a mask that holds two or more accepted masks covering at least half of it is a group of objects:
  it is dropped and its members stay;
* otherwise it is a new object.

Remaining overlaps are painted smaller-on-top; an object left with fewer than ``min_area`` visible
pixels, or less than half of its own mask visible, is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .grid import overlap_area

INSIDE = 0.8
"""A mask counts as inside another when at least this fraction of its pixels lies in it."""

MIN_VISIBLE = 0.5
"""An object keeps its label only if at least this fraction of its mask stays visible."""


def resolve_nesting(masks: Sequence) -> list[int]:
    """Indices of ``masks`` (objects with ``mask``, ``bbox`` and ``area``) kept as instances."""
    order = sorted(range(len(masks)), key=lambda i: (masks[i].area, i))
    accepted: list[int] = []
    for i in order:
        m = masks[i]
        inside = [
            j
            for j in accepted
            if overlap_area(masks[j].mask, masks[j].bbox, m.mask, m.bbox) >= INSIDE * masks[j].area
        ]
        if len(inside) == 1:
            accepted.remove(inside[0])
            accepted.append(i)
        elif len(inside) >= 2 and sum(masks[j].area for j in inside) >= 0.5 * m.area:
            continue
        else:
            accepted.append(i)
    return accepted


def paint(
    masks: Sequence, plane_hw: tuple[int, int], min_area: int = 0, dtype: np.dtype | str = "uint32"
) -> tuple[np.ndarray, list[int]]:
    """Label image (H, W) of ``masks`` painted largest first (smaller on top), ids 1..n in the order
    of the returned indices (by top-left corner of each object), 0 = background."""
    dtype = np.dtype(dtype)
    order = sorted(range(len(masks)), key=lambda i: (-masks[i].area, i))
    canvas = np.full(plane_hw, -1, dtype=np.int64)
    for i in order:
        r0, c0, r1, c1 = masks[i].bbox
        canvas[r0:r1, c0:c1][masks[i].mask] = i
    visible = np.bincount(canvas.ravel() + 1, minlength=len(masks) + 1)[1:]
    keep = [
        i
        for i in range(len(masks))
        if visible[i] >= max(min_area, 1) and visible[i] >= MIN_VISIBLE * masks[i].area
    ]
    keep.sort(key=lambda i: (masks[i].bbox[0], masks[i].bbox[1], i))
    if len(keep) > np.iinfo(dtype).max:
        raise ValueError(f"{len(keep)} objects do not fit labels of dtype {dtype}; use uint32")
    lut = np.zeros(len(masks) + 1, dtype=dtype)
    lut[np.asarray(keep, dtype=np.int64) + 1] = np.arange(1, len(keep) + 1)
    return lut[canvas + 1], keep
