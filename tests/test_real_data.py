"""The PlantSeg crops as training data: loading, and augmentation that keeps labels on the image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from helpers import shared_file
from napari_sam2.training.real_data import (
    RealDataError,
    augment,
    augmented_stacks,
    load_plantseg,
)


@pytest.fixture
def plantseg_crops():
    """The crops' folder; skips the test without it, and fails it in CI, where it must be."""
    return shared_file("plantseg-nuclei", "1135_mini_raw.tif").parent


needs_data = pytest.mark.usefixtures("plantseg_crops")


@needs_data
def test_both_crops_load_with_their_nuclei():
    crops = load_plantseg()
    assert [name for name, _, _ in crops] == ["1135_mini", "1136_mini"]
    for (_, raw, labels), n in zip(crops, (54, 32)):
        assert raw.shape == labels.shape == (100, 100, 100) and raw.dtype == np.uint8
        assert len(np.unique(labels)) - 1 == n


def test_a_missing_folder_says_where_to_put_the_crops(tmp_path):
    with pytest.raises(
        RealDataError,
        match=r"1135_mini_raw\.tif or 1135_mini_labels\.tif is missing in .*NAPARI_SAM2_PLANTSEG",
    ):
        load_plantseg(tmp_path)


def _blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (30, 60, 60) volume whose image is bright exactly on its labelled, asymmetric objects."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((30, 60, 60), np.uint16)
    for i in range(1, 7):
        z, y, x = rng.integers(4, 26), rng.integers(8, 52), rng.integers(8, 52)
        zz, yy, xx = np.ogrid[:30, :60, :60]
        labels[((zz - z) / 3) ** 2 + ((yy - y) / 6) ** 2 + ((xx - x) / 4) ** 2 < 1] = i
    labels[:, 2:6, 2:20] = 7  # an L shape: any turn or flip of the image alone would show
    labels[:, 2:20, 2:6] = 7
    image = np.where(labels > 0, 200, 20).astype(np.uint8)
    return image, labels


@pytest.mark.parametrize("seed", range(4))
def test_augmentation_keeps_labels_on_the_objects(seed):
    image, labels = _blobs()
    st = augment(image, labels, np.random.default_rng(seed), plane=96, slices=(10, 20))
    assert st.image.shape == st.labels.shape and st.image.shape[1:] == (96, 96) and st.axes == "zyx"
    fg = st.labels > 0
    lo, hi = float(st.image.min()), float(st.image.max())
    bright = st.image > (lo + hi) / 2

    def overlap(shift: int, axis: int) -> float:
        moved = np.roll(fg, shift, axis=axis)
        return (bright & moved).sum() / (bright | moved).sum()

    # image and labels turned, flipped and zoomed together: they overlap (up to the zoom's soft
    # edges) and better than after any one-voxel shift of the labels
    assert overlap(0, 0) > 0.85
    assert all(overlap(0, 0) > overlap(d, ax) for d in (-1, 1) for ax in range(3))
    assert st.image[fg].mean() > st.image[~fg].mean() + 0.5 * (hi - lo)


def test_augmentation_ids_are_renumbered_and_tiles_are_separate_objects():
    image, labels = _blobs()
    st = augment(image, labels, np.random.default_rng(1), plane=200, slices=(10, 10), zoom_yx=(1.0, 1.0))
    ids = np.unique(st.labels)[1:]
    assert list(ids) == list(range(1, len(ids) + 1))
    assert len(ids) > 7  # the mosaic of 60-pixel tiles repeats the 7 objects under new ids
    for i in ids:
        assert ndimage.label(st.labels == i)[1] == 1


def test_augmentation_jitters_scale_intensity_and_bit_depth():
    image, labels = _blobs()
    out = [augment(image, labels, np.random.default_rng(s), plane=64, slices=(12, 12)) for s in range(30)]
    assert {o.image.dtype for o in out} == {np.dtype(np.uint8), np.dtype(np.uint16)}
    assert max(int(o.image.max()) for o in out) > 4095  # 16-bit
    depths = {o.image.shape[0] for o in out}
    assert min(depths) < 12 * 2.0 and max(depths) > 12 * 3.5  # z zoom 1.5-4
    sizes = [np.bincount(o.labels.ravel())[1:].max() for o in out if o.labels.any()]  # largest object
    assert max(sizes) > 2 * min(sizes)  # y/x zoom changes object sizes
    highs = [
        float(np.percentile(o.image, 99)) / ((1 << (8 if o.image.dtype == np.uint8 else 16)) - 1) for o in out
    ]
    assert max(highs) > 2 * min(highs)  # gain jitter


def test_same_seed_same_stacks():
    image, labels = _blobs()
    a = augment(image, labels, np.random.default_rng(3), plane=64)
    b = augment(image, labels, np.random.default_rng(3), plane=64)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels) and a.scale == b.scale


@needs_data
def test_augmented_plantseg_stacks_alternate_crops_and_hold_nuclei():
    stacks = augmented_stacks(4, seed=7000, plane=128, slices=(8, 8))
    for st in stacks:
        assert st.image.shape[1:] == (128, 128) and st.n_objects >= 1  # a stack without nuclei is drawn again
        assert st.image.shape[0] >= 8 * 1.5 - 1 and st.scale[0] > 0
        assert 0.02 < (st.labels > 0).mean() < 0.6  # nuclei cover about 20 % of the crops
    assert len({st.image.tobytes() for st in stacks}) == 4


@needs_data
def test_a_fold_draws_from_the_kept_crop_only():
    """``crops=("1136_mini",)`` holds 1135_mini out: every stack is one that 1136_mini gives for its
    seed, and stack 1 (1136_mini's turn when both alternate) is the same stack as with both crops."""
    small = {"plane": 96, "slices": (6, 6)}
    both = augmented_stacks(2, seed=7000, **small)
    fold = augmented_stacks(2, seed=7000, crops=("1136_mini",), **small)
    ((_, raw, labels),) = load_plantseg(crops=("1136_mini",))
    rng = np.random.default_rng(7000)
    own = augment(raw, labels, rng, **small)
    while not own.n_objects:  # drawn again, as augmented_stacks does
        own = augment(raw, labels, rng, **small)
    assert np.array_equal(fold[0].image, own.image) and np.array_equal(fold[0].labels, own.labels)
    assert not np.array_equal(fold[0].image, both[0].image)  # both crops: stack 0 came from 1135_mini
    assert np.array_equal(fold[1].image, both[1].image) and np.array_equal(fold[1].labels, both[1].labels)


def test_an_unknown_or_empty_crop_list_is_refused(tmp_path):
    for crops in (("1137_mini",), ()):
        with pytest.raises(RealDataError, match=r"give one or more of 1135_mini, 1136_mini"):
            load_plantseg(tmp_path, crops)
