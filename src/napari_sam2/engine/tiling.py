"""Tiling geometry for planes larger than the model input, as pure functions.

Vocabulary (used the same way everywhere): a plane of ``plane_hw`` pixels is covered by square
tiles of ``tile_size`` pixels (the model input size, so tiles are encoded at native resolution)
that overlap their neighbours by at least ``overlap`` pixels. The last tile of a row or column is
shifted inward so that every tile lies inside the plane; along an axis shorter than a tile the
tile extends past the plane and the missing part is padded. A plane no larger than one tile in
both axes is not tiled: it is resized to the model input as a whole (SAM2's usual behaviour).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Tile", "TileGrid", "TilingError", "tile_starts", "blend_weights"]


class TilingError(ValueError):
    """Impossible tiling parameters."""


@dataclass(frozen=True)
class Tile:
    """One tile: rows ``row0:row0+height`` and cols ``col0:col0+width`` of the plane.

    ``height``/``width`` are the tile's nominal size; the part beyond the plane (only along an axis
    shorter than a tile) is padding. ``index`` is (tile row, tile column) in the grid.
    """

    row0: int
    col0: int
    height: int
    width: int
    index: tuple[int, int]

    @property
    def row1(self) -> int:
        return self.row0 + self.height

    @property
    def col1(self) -> int:
        return self.col0 + self.width

    def bounds(self) -> tuple[int, int, int, int]:
        """(row0, col0, row1, col1) of the nominal tile (ends exclusive)."""
        return self.row0, self.col0, self.row1, self.col1

    def clipped(self, plane_hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """(row0, col0, row1, col1) of the part inside the plane (ends exclusive)."""
        return self.row0, self.col0, min(self.row1, plane_hw[0]), min(self.col1, plane_hw[1])

    def contains(self, row: float, col: float) -> bool:
        return self.row0 - 0.5 <= row < self.row1 - 0.5 and self.col0 - 0.5 <= col < self.col1 - 0.5


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``overlap``.

    The last tile ends exactly at ``length`` (shifted inward); one tile at 0 if ``length <= tile``.
    """
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    return sorted({min(i * stride, length - tile) for i in range(n)})


@dataclass(frozen=True)
class TileGrid:
    """All tiles of a plane.

    Attributes:
        plane_hw: (H, W) of the plane in pixels.
        tile_size: side of a tile in pixels (normally the model's input size).
        overlap: minimum overlap between neighbouring tiles in pixels.
        tiles: the tiles, row-major; a single tile covering the plane when ``untiled``.
        untiled: the plane fits one tile and is resized to the model input as a whole.
    """

    plane_hw: tuple[int, int]
    tile_size: int
    overlap: int
    tiles: tuple[Tile, ...]
    untiled: bool

    @classmethod
    def for_plane(cls, plane_hw: tuple[int, int], tile_size: int, overlap: int = 256) -> TileGrid:
        h, w = (int(v) for v in plane_hw)
        if h < 1 or w < 1:
            raise TilingError(f"a plane needs at least one pixel, got {h} x {w}")
        if tile_size < 32:
            raise TilingError(f"tile_size must be at least 32 pixels, got {tile_size}")
        if not 0 <= overlap <= tile_size // 2:
            raise TilingError(
                f"overlap must be between 0 and tile_size / 2 = {tile_size // 2}, got {overlap}"
            )
        if h <= tile_size and w <= tile_size:
            return cls((h, w), tile_size, overlap, (Tile(0, 0, h, w, (0, 0)),), True)
        rows, cols = tile_starts(h, tile_size, overlap), tile_starts(w, tile_size, overlap)
        tiles = tuple(
            Tile(r, c, tile_size, tile_size, (i, j)) for i, r in enumerate(rows) for j, c in enumerate(cols)
        )
        return cls((h, w), tile_size, overlap, tiles, False)

    def tiles_containing(self, row: float, col: float) -> list[Tile]:
        return [t for t in self.tiles if t.contains(row, col)]

    def best_tile(self, rows: np.ndarray, cols: np.ndarray) -> Tile | None:
        """The tile that contains all the given points and whose centre is nearest to theirs."""
        # a tile holds every point iff it holds their bounding box (Tile.contains, inlined: one
        # pass over a big plane's hundreds of tiles per click)
        lo_r, hi_r, lo_c, hi_c = (
            float(np.min(rows)),
            float(np.max(rows)),
            float(np.min(cols)),
            float(np.max(cols)),
        )
        candidates = [
            t
            for t in self.tiles
            if t.row0 - 0.5 <= lo_r
            and hi_r < t.row0 + t.height - 0.5
            and t.col0 - 0.5 <= lo_c
            and hi_c < t.col0 + t.width - 0.5
        ]
        if not candidates:
            return None
        cr, cc = float(np.mean(rows)), float(np.mean(cols))

        def dist(t: Tile) -> float:
            r0, c0, r1, c1 = t.clipped(self.plane_hw)
            return ((r0 + r1) / 2 - cr) ** 2 + ((c0 + c1) / 2 - cc) ** 2

        return min(candidates, key=dist)

    def view_around(self, rows: np.ndarray, cols: np.ndarray, margin: int | None = None) -> Tile | None:
        """A tile-sized view in which the given points have room around them.

        The grid tile chosen by :meth:`best_tile` if the points' bounding box lies at least
        ``margin`` pixels (default a quarter tile) from each of its edges inside the plane (its
        embeddings may be cached already); otherwise a view centred on the points, shifted
        inward to lie inside the plane like the grid's last tiles. Such a view is not one of
        ``tiles``; its ``index`` is ``(-1 - row0, -1 - col0)``: negative, and the same for the
        same position, so it can key per-tile results like a grid index. An object no wider than
        about twice ``margin`` around the points is then whole in one view, where the grid may
        place it on a seam or where four tiles meet. None if no tile-sized view holds all points.
        """
        if self.untiled:
            return self.tiles[0]
        margin = self.tile_size // 4 if margin is None else int(margin)
        rows, cols = np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64)
        lo_r, hi_r, lo_c, hi_c = rows.min(), rows.max(), cols.min(), cols.max()
        best = self.best_tile(rows, cols)
        if best is not None:
            edges = self.interior_edges(best)
            room = [
                lo_r - best.row0 if edges["top"] else np.inf,
                best.row1 - 1 - hi_r if edges["bottom"] else np.inf,
                lo_c - best.col0 if edges["left"] else np.inf,
                best.col1 - 1 - hi_c if edges["right"] else np.inf,
            ]
            if min(room) >= margin:
                return best
        s = self.tile_size
        if hi_r - lo_r >= s or hi_c - lo_c >= s:
            return best

        def start(lo: float, hi: float, length: int) -> int:
            if length <= s:
                return 0
            return int(min(max(round((lo + hi + 1 - s) / 2), 0), length - s))

        r0, c0 = start(lo_r, hi_r, self.plane_hw[0]), start(lo_c, hi_c, self.plane_hw[1])
        aligned = [t for t in self.tiles if (t.row0, t.col0) == (r0, c0)]
        return aligned[0] if aligned else Tile(r0, c0, s, s, (-1 - r0, -1 - c0))

    def tile_at(self, index: tuple[int, int]) -> Tile:
        """The grid tile with this index, or the view that :meth:`view_around` gave this index."""
        if index[0] >= 0:
            return next(t for t in self.tiles if t.index == tuple(index))
        return Tile(-1 - index[0], -1 - index[1], self.tile_size, self.tile_size, tuple(index))

    def tiles_overlapping(self, row0: float, col0: float, row1: float, col1: float) -> list[Tile]:
        """Tiles whose area intersects the rectangle [row0, row1] x [col0, col1] (plane pixels, ends
        inclusive)."""
        return [
            t for t in self.tiles if t.row0 <= row1 and row0 < t.row1 and t.col0 <= col1 and col0 < t.col1
        ]

    def interior_edges(self, tile: Tile) -> dict[str, bool]:
        """Which edges of ``tile`` lie inside the plane (and so may cut an object)."""
        h, w = self.plane_hw
        return {"top": tile.row0 > 0, "bottom": tile.row1 < h, "left": tile.col0 > 0, "right": tile.col1 < w}


def blend_weights(grid: TileGrid, tile: Tile, ramp: int | None = None) -> np.ndarray:
    """Per-pixel weight (h, w) of ``tile``'s prediction where tiles overlap (float32, > 0).

    The weight rises linearly from ~0 at an edge that lies inside the plane to 1 at ``ramp``
    pixels from it (default: half the overlap), and is 1 along edges on the plane's border, so the
    blended result has no seam and every pixel trusts the tile that sees most context around it.
    """
    r0, c0, r1, c1 = tile.clipped(grid.plane_hw)
    h, w = r1 - r0, c1 - c0
    ramp = max(1, grid.overlap // 2 if ramp is None else ramp)
    edges = grid.interior_edges(tile)

    def axis(n: int, low_inner: bool, high_inner: bool) -> np.ndarray:
        pos = np.arange(n, dtype=np.float32)
        wgt = np.ones(n, dtype=np.float32)
        if low_inner:
            wgt = np.minimum(wgt, (pos + 1) / (ramp + 1))
        if high_inner:
            wgt = np.minimum(wgt, (n - pos) / (ramp + 1))
        return wgt

    return np.outer(axis(h, edges["top"], edges["bottom"]), axis(w, edges["left"], edges["right"]))
