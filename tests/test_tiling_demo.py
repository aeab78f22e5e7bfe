"""Clicks on tiled planes with the shipped demo model: an object on a seam, against a tile edge,
where four tiles meet or in the shifted last tile comes out as well as in the best single
tile-sized view of it, and in one piece.

The demo model (input 256) segments a generated nucleus well up to a radius of about 20 pixels in
a view centred on it (IoU 0.97 at radius 15, 0.92-0.95 at 20, 0.65-0.68 at 25, 0.27-0.29 at 36;
four seeds each), so the objects here go up to radius 20. The planes have 3 x 3 tiles of 256
pixels with overlap 64 (starts 0, 192, 384 on 640 pixels; 0, 192, 344 on 600, where the last
tile is shifted inward): the geometry of a 3000 x 3000 plane's inner tiles.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_sam2.engine import load_model
from napari_sam2.engine.predictor import ImagePredictor
from napari_sam2.engine.prompts import Prompt
from napari_sam2.training import synthetic

TILE = 256


def places(overlap: int) -> dict[str, tuple[int, tuple[int, int]]]:
    """(plane side, object centre) per kind of place, for 3 x 3 tiles with this overlap; the
    "shifted" planes are 40 pixels shorter, so their last tiles are shifted inward."""
    stride = TILE - overlap
    side = TILE + 2 * stride
    mid = (stride + TILE) // 2  # the middle of the first overlap
    last_start = side - 40 - TILE  # the shifted last tile starts here
    last_mid = (last_start + stride + TILE) // 2  # the middle of its overlap with the tile before
    return {
        "four_tile_corner": (side, (mid, mid)),
        "seam": (side, (mid, side // 2)),
        "tile_edge_at_plane_border": (side, (30, mid)),
        "shifted_last_tile_corner": (side - 40, (last_mid, last_mid)),
        "shifted_last_tile_seam": (side - 40, ((side - 40) // 2, last_mid)),
    }


# Best single view minus the tiled result, measured over these cases (radius 12 and 20, seeds 0
# and 1, overlap 64 and 32): at most 0.062, mostly 0.01-0.04. The best of the single views is
# often one with the object off-centre, where the demo model happens to do better than in others
# (single views of one object range over 0.86-0.98 at radius 20); that spread is the model's.
MARGIN = 0.08


@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(1)
    return load_model("demo", device="cpu")


def scene(side: int, centre: tuple[int, int], radius: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A uint16 plane with one generated nucleus (the demo model's training look) and its mask."""
    rng = np.random.default_rng(seed)
    blob = synthetic._random_blob(rng, 2, (radius, radius), "nuclei")
    blob.centre = np.asarray(centre, dtype=float)
    signal = np.zeros((side, side), np.float32)
    sl, inside, _, look = synthetic._render(blob, signal.shape, np.ones(2))
    signal[sl][inside] = look[inside]
    truth = np.zeros(signal.shape, bool)
    truth[sl] = inside
    image = synthetic._finish(
        rng, signal, np.dtype("uint16"), blur=(1.0, 1.0), noise=0.05, background=0.2, falloff=None
    )
    return image, truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def single_view_ious(model, image, truth, click, window, step: int = 64) -> list[float]:
    """IoU of the click's mask in every TILE-sized view that holds the whole object, at ``step``
    offsets (plus the views that end at the object), each view segmented alone (untiled)."""
    rows, cols = np.nonzero(truth)

    def starts(lo, hi, length):
        first, last = max(0, hi + 1 - TILE), min(lo, length - TILE)
        return sorted({*range(first, last + 1, step), last})

    out = []
    for r0 in starts(rows.min(), rows.max(), image.shape[0]):
        for c0 in starts(cols.min(), cols.max(), image.shape[1]):
            pred = ImagePredictor(model)
            pred.set_image(image[r0 : r0 + TILE, c0 : c0 + TILE], window=window)
            mask = np.zeros_like(truth)
            mask[r0 : r0 + TILE, c0 : c0 + TILE] = pred.predict(
                Prompt(points=[[click[0] - r0, click[1] - c0]], labels=[1])
            ).full()
            out.append(iou(mask, truth))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [64, 32])
@pytest.mark.parametrize("radius", [12, 20])
@pytest.mark.parametrize("place", list(places(64)))
def test_tiled_click_is_as_good_as_the_best_single_view(demo, place, radius, overlap):
    side, centre = places(overlap)[place]
    for seed in (0, 1):
        image, truth = scene(side, centre, radius, seed)
        window = (float(np.percentile(image, 0.5)), float(image.max()))  # the object is < 1 % of the plane
        click = tuple(round(v) for v in ndimage.center_of_mass(truth))
        pred = ImagePredictor(demo, tile_size=TILE, overlap=overlap)
        pred.set_image(image, window=window)
        assert len(pred.grid.tiles) == 9
        mask = pred.predict(Prompt(points=[click], labels=[1])).full()
        tiled, views = iou(mask, truth), single_view_ious(demo, image, truth, click, window)
        print(
            f"{place} r={radius} seed={seed}: tiled {tiled:.3f}, single views {min(views):.3f}-{max(views):.3f}"
        )
        assert tiled >= max(views) - MARGIN, (seed, tiled, max(views))
        assert ndimage.label(mask, structure=np.ones((3, 3)))[1] == 1, seed


@pytest.mark.parametrize(
    "place", ["four_tile_corner", "seam", "tile_edge_at_plane_border", "shifted_last_tile_seam"]
)
def test_a_big_object_where_tiles_meet_comes_out_in_one_piece(demo, place):
    """Radius 36, the size of issue 24's report: beyond what the demo model segments well (IoU
    0.2-0.6 in any view), but its mask is one piece. Before, 2-4 pieces at some of these places,
    as pieces from neighbouring tiles that did not touch the click were kept."""
    side, centre = places(64)[place]
    image, truth = scene(side, centre, 36, seed=0)
    click = tuple(round(v) for v in ndimage.center_of_mass(truth))
    pred = ImagePredictor(demo, tile_size=TILE, overlap=64)
    pred.set_image(image, window=(float(np.percentile(image, 0.5)), float(image.max())))
    mask = pred.predict(Prompt(points=[click], labels=[1])).full()
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    assert n == 1 and lab[click] == 1
