"""Tiling geometry as pure functions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.engine.tiling import TileGrid, TilingError, blend_weights, tile_starts


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "expected"),
    [
        (1024, 1024, 256, [0]),
        (500, 1024, 256, [0]),
        (1025, 1024, 256, [0, 1]),
        (2048, 1024, 256, [0, 768, 1024]),
        (1792, 1024, 256, [0, 768]),
        (3000, 1024, 0, [0, 1024, 1976]),
    ],
)
def test_tile_starts(length, tile, overlap, expected):
    starts = tile_starts(length, tile, overlap)
    assert starts == expected
    # every pixel covered, last tile ends at the plane's edge, overlaps at least `overlap`
    assert starts[0] == 0 and (starts[-1] + tile >= length)
    if length > tile:
        assert starts[-1] + tile == length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_small_plane_is_not_tiled():
    grid = TileGrid.for_plane((600, 900), 1024)
    assert grid.untiled and len(grid.tiles) == 1
    assert grid.tiles[0].bounds() == (0, 0, 600, 900)  # (row0, col0, row1, col1)


def test_grid_covers_plane_and_pads_short_axis():
    grid = TileGrid.for_plane((500, 2500), 1024, overlap=128)
    assert not grid.untiled
    assert [t.bounds() for t in grid.tiles] == [
        (0, 0, 1024, 1024),
        (0, 896, 1024, 1920),
        (0, 1476, 1024, 2500),
    ]
    assert grid.tiles[0].clipped(grid.plane_hw) == (0, 0, 500, 1024)  # rows 500..1023 are padding
    cover = np.zeros(grid.plane_hw, int)
    for t in grid.tiles:
        r0, c0, r1, c1 = t.clipped(grid.plane_hw)
        cover[r0:r1, c0:c1] += 1
    assert cover.min() == 1


def test_point_routing_prefers_the_most_central_tile():
    grid = TileGrid.for_plane((2048, 2048), 1024, overlap=256)
    assert grid.best_tile(np.array([900.0]), np.array([100.0])).bounds() == (768, 0, 1792, 1024)
    assert (
        grid.best_tile(np.array([10.0, 2040.0]), np.array([10.0, 10.0])) is None
    )  # no single tile holds both
    assert {t.index for t in grid.tiles_overlapping(1000, 1000, 1100, 1100)} == {
        (i, j) for i in (0, 1, 2) for j in (0, 1, 2)
    }


def test_blend_weights_fall_to_zero_at_inner_edges_only():
    grid = TileGrid.for_plane((2048, 1024 + 512), 1024, overlap=256)
    top_left = grid.tiles[0]
    w = blend_weights(grid, top_left)
    assert w.shape == (1024, 1024)
    assert w[0, 0] == 1 and w[512, 512] == 1  # plane border and centre: full weight
    assert w[-1, 512] < 0.01 and w[512, -1] < 0.01  # inner edges: nearly none
    assert (np.diff(w[512, 800:]) <= 0).all()


@pytest.mark.parametrize(
    ("hw", "tile", "overlap"), [((0, 10), 64, 0), ((64, 64), 16, 0), ((100, 100), 64, 40)]
)
def test_bad_parameters(hw, tile, overlap):
    with pytest.raises(TilingError):
        TileGrid.for_plane(hw, tile, overlap)


def test_view_around_keeps_a_roomy_grid_tile_and_centres_on_points_elsewhere():
    grid = TileGrid.for_plane((640, 600), 256, overlap=64)  # starts 0, 192, 384 and 0, 192, 344
    t = grid.view_around(np.array([320.0]), np.array([330.0]))  # 128 / 138 px from tile (1, 1)'s edges
    assert t.index == (1, 1) and t in grid.tiles
    corner = grid.view_around(np.array([224.0]), np.array([224.0]))  # where four tiles meet
    assert corner.bounds() == (96, 96, 352, 352) and corner.index == (-97, -97) and corner not in grid.tiles
    assert grid.tile_at(corner.index) == corner and grid.tile_at((2, 1)) == grid.tiles[7]
    edge = grid.view_around(np.array([5.0]), np.array([590.0]))  # a corner of the plane: shifted inside
    assert edge.bounds() == (0, 344, 256, 600) and edge.index == (0, 2)  # ... which is a grid tile there
    assert grid.view_around(np.array([224.0]), np.array([224.0]), margin=0).index == (0, 0)  # first nearest
    assert grid.view_around(np.array([0.0, 600.0]), np.array([0.0, 0.0])) is None  # no view holds both
