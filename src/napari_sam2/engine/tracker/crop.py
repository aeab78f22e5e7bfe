"""Crop geometry: the square part of a large frame that the model sees for one object, centred
on it, re-centred every frame and grown when the object reaches its edge."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Crop", "crop_around", "grown", "touches_border", "cut"]


@dataclass(frozen=True)
class Crop:
    """The part of a frame the model sees for one object: plane pixels [row0, row0 + height) x
    [col0, col0 + width). It may reach past the plane (the outside is padded with the crop's
    low value, i.e. black)."""

    row0: int
    col0: int
    height: int
    width: int

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width

    def inside(self, plane_hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """The part of the crop within a plane of ``plane_hw`` pixels: (row0, col0, row1, col1),
        ends exclusive (row1 <= row0 or col1 <= col0 when they do not overlap)."""
        return (
            max(self.row0, 0),
            max(self.col0, 0),
            min(self.row0 + self.height, plane_hw[0]),
            min(self.col0 + self.width, plane_hw[1]),
        )

    def padded(self, part: np.ndarray, plane_hw: tuple[int, int]) -> np.ndarray:
        """A crop-sized array of zeros with ``part`` (the plane's pixels at :meth:`inside`, with
        any trailing channel axis) in its place."""
        r0, c0, r1, c1 = self.inside(plane_hw)
        out = np.zeros((self.height, self.width, *part.shape[2:]), part.dtype)
        out[r0 - self.row0 : r1 - self.row0, c0 - self.col0 : c1 - self.col0] = part
        return out

    def contains(self, rc: np.ndarray) -> bool:
        """True if every (row, col) of ``rc`` (N, 2) lies inside the crop."""
        rc = np.asarray(rc, dtype=np.float64).reshape(-1, 2)
        rows_ok = (rc[:, 0] >= self.row0) & (rc[:, 0] <= self.row0 + self.height - 1)
        cols_ok = (rc[:, 1] >= self.col0) & (rc[:, 1] <= self.col0 + self.width - 1)
        return bool((rows_ok & cols_ok).all())


def crop_around(
    box: tuple[float, float, float, float] | None,
    frame_hw: tuple[int, int],
    side: int,
    max_side: int | None = None,
    base: Crop | None = None,
) -> Crop:
    """A square crop centred on ``box`` (row0, col0, row1, col1), at least ``side`` wide and twice
    the box's extent (at most ``max_side``); ``base`` (or the plane's centre) when there is no box."""
    if box is None:
        if base is not None:
            return base
        h, w = frame_hw
        box = (h / 2, w / 2, h / 2, w / 2)
    r0, c0, r1, c1 = box
    size = max(side, math.ceil(2 * max(r1 - r0, c1 - c0)))
    if max_side is not None:
        size = min(size, max_side)
    return Crop(
        _place((r0 + r1) / 2, size, frame_hw[0]), _place((c0 + c1) / 2, size, frame_hw[1]), size, size
    )


def grown(crop: Crop, frame_hw: tuple[int, int], max_side: int | None = None) -> Crop | None:
    """The crop twice as large around the same centre, or None if it already covers the plane
    or would exceed ``max_side``."""
    if (
        crop.row0 <= 0
        and crop.col0 <= 0
        and crop.row0 + crop.height >= frame_hw[0]
        and (crop.col0 + crop.width >= frame_hw[1])
    ):
        return None
    cr, cc = crop.row0 + crop.height / 2, crop.col0 + crop.width / 2
    side = 2 * crop.height
    if max_side is not None and side > max_side:
        return None
    return Crop(_place(cr, side, frame_hw[0]), _place(cc, side, frame_hw[1]), side, side)


def touches_border(
    crop: Crop | None,
    bbox: tuple[float, float, float, float] | None,
    frame_hw: tuple[int, int],
    low_res_size: int,
) -> bool:
    """True if a mask with bounding box ``bbox`` (row0, col0, row1, col1) reaches an edge of its
    crop that lies inside the plane (within one cell of the ``low_res_size`` mask grid)."""
    if crop is None or bbox is None:
        return False
    w, (r0, c0, r1, c1) = crop, bbox
    cell = w.height / low_res_size
    return (
        (r0 <= w.row0 + cell and w.row0 > 0)
        or (c0 <= w.col0 + cell and w.col0 > 0)
        or (r1 >= w.row0 + w.height - cell and w.row0 + w.height < frame_hw[0])
        or (c1 >= w.col0 + w.width - cell and w.col0 + w.width < frame_hw[1])
    )


def _place(centre: float, side: int, n: int) -> int:
    """Start of a crop of ``side`` pixels centred on ``centre``, kept inside 0..n when it fits."""
    if side >= n:
        return (n - side) // 2
    return int(min(max(round(centre - side / 2), 0), n - side))


def cut(mask: np.ndarray, crop: Crop) -> np.ndarray:
    """The crop's part of a plane-sized array, zero-padded where the crop leaves the plane."""
    r0, c0, r1, c1 = crop.inside(mask.shape)
    return crop.padded(mask[r0:r1, c0:c1], mask.shape)
