"""Synthetic microscopy data: reproducible, well-formed labels, visible objects, documented examples."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_sam2.training.synthetic import (
    MicroscopyLook,
    SyntheticError,
    SyntheticStack,
    _camera,
    microscopy_2d,
    microscopy_3d,
    moving_blobs,
    nuclei_2d,
    nuclei_3d,
    random_look,
    sample_nuclei_3d,
)

DOCS = Path(__file__).parents[1] / "docs" / "synthetic-data.md"

# small, fast variants of each generator
SMALL = {
    "2d": lambda **kw: nuclei_2d((128, 128), 6, **kw),
    "cells": lambda **kw: nuclei_2d((160, 160), 6, radius=(12, 20), kind="cells", **kw),
    "3d": lambda **kw: nuclei_3d((24, 128, 128), 5, radius=(7, 12), **kw),
    "3d-cells": lambda **kw: nuclei_3d((24, 128, 128), 5, radius=(8, 13), kind="cells", **kw),
    "t": lambda **kw: moving_blobs((10, 128, 128), 5, radius=(7, 11), **kw),
}


@pytest.fixture(scope="module")
def stacks() -> dict[str, SyntheticStack]:
    return {name: make(seed=3) for name, make in SMALL.items()}


@pytest.mark.parametrize("name", list(SMALL))
def test_same_seed_same_data_other_seed_other_data(name, stacks):
    again = SMALL[name](seed=3)
    assert np.array_equal(again.image, stacks[name].image)
    assert np.array_equal(again.labels, stacks[name].labels)
    other = SMALL[name](seed=4)
    assert not np.array_equal(other.labels, stacks[name].labels)
    assert not np.array_equal(other.image, stacks[name].image)


@pytest.mark.parametrize(
    ("name", "shape", "axes"),
    [
        ("2d", (128, 128), "yx"),
        ("cells", (160, 160), "yx"),
        ("3d", (24, 128, 128), "zyx"),
        ("3d-cells", (24, 128, 128), "zyx"),
        ("t", (10, 128, 128), "tyx"),
    ],
)
def test_shapes_dtypes_axes_and_ids(name, shape, axes, stacks):
    s = stacks[name]
    assert s.image.shape == s.labels.shape == shape
    assert s.axes == axes and len(s.scale) == len(shape)
    assert s.image.dtype == np.uint16 and s.labels.dtype == np.uint16
    assert set(np.unique(s.labels)) == set(range(0, s.n_objects + 1))
    assert s.n_objects == (6 if name in ("2d", "cells") else 5)


@pytest.mark.parametrize("name", ["2d", "cells", "3d", "3d-cells"])
def test_each_label_is_one_connected_piece(name, stacks):
    labels = stacks[name].labels
    for obj_id, box in enumerate(ndimage.find_objects(labels), start=1):
        _, count = ndimage.label(labels[box] == obj_id)
        assert count == 1, f"object {obj_id} is in {count} pieces"


def _contrast(image: np.ndarray, labels: np.ndarray, obj_id: int) -> tuple[float, float, float]:
    """(mean inside, mean of a background ring 3..8 px outside, ring std) on one plane."""
    inside = labels == obj_id
    near = ndimage.binary_dilation(inside, iterations=8)
    ring = near & ~ndimage.binary_dilation(labels > 0, iterations=3)
    values = image.astype(np.float64)
    return values[inside].mean(), values[ring].mean(), values[ring].std()


@pytest.mark.parametrize("name", list(SMALL))
def test_objects_stand_out_from_their_surroundings(name, stacks):
    s = stacks[name]
    planes = s.labels if s.labels.ndim == 3 else s.labels[None]
    images = s.image if s.image.ndim == 3 else s.image[None]
    for obj_id in range(1, s.n_objects + 1):
        areas = (planes == obj_id).sum(axis=(1, 2))
        z = int(np.argmax(areas))  # where the object is largest
        inside, ring, std = _contrast(images[z], planes[z], obj_id)
        assert inside - ring > 3 * std, f"object {obj_id}: inside {inside:.0f}, ring {ring:.0f} +- {std:.0f}"


def _adjacent_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)
        lo, hi = a[:-1].ravel(), a[1:].ravel()
        touch = (lo != hi) & (lo > 0) & (hi > 0)
        pairs |= {(int(min(p, q)), int(max(p, q))) for p, q in zip(lo[touch], hi[touch])}
    return pairs


@pytest.mark.parametrize("make", [nuclei_2d, nuclei_3d])
def test_touching_objects_share_a_border_and_others_keep_a_gap(make):
    shape = (128, 128) if make is nuclei_2d else (24, 128, 128)
    together = make(shape, 6, seed=1, radius=(7, 12), touching=1.0)
    assert len(_adjacent_pairs(together.labels)) >= 3
    apart = make(shape, 6, seed=1, radius=(7, 12), touching=0.0)
    assert not _adjacent_pairs(apart.labels)
    grown = ndimage.grey_dilation(apart.labels, size=(3,) * apart.labels.ndim)
    assert np.all((grown == apart.labels) | (apart.labels == 0))  # a gap of at least one pixel


@pytest.mark.parametrize("name", ["3d", "3d-cells"])
def test_3d_objects_span_contiguous_slices_largest_near_their_centre(name, stacks):
    labels = stacks[name].labels
    for obj_id in range(1, stacks[name].n_objects + 1):
        areas = (labels == obj_id).sum(axis=(1, 2))
        present = np.nonzero(areas)[0]
        assert present[-1] - present[0] + 1 == len(present), f"object {obj_id} has a gap in z"
        assert len(present) >= 5, f"object {obj_id} spans only {len(present)} slices"
        centre = (areas * np.arange(len(areas))).sum() / areas.sum()
        # cross-sections of an ellipsoid peak at its centre; the outline's wiggles and the
        # neighbours' share move the peak a little along a broad top
        assert abs(int(np.argmax(areas)) - centre) <= max(1.5, 0.2 * len(present))


def test_moving_blobs_move_smoothly_appear_and_vanish():
    s = moving_blobs((12, 128, 128), 6, radius=(7, 11), speed=(1.0, 3.0), seed=5)
    labels = s.labels
    ids = range(1, s.n_objects + 1)
    first = set(np.unique(labels[0])) - {0}
    last = set(np.unique(labels[-1])) - {0}
    assert first != set(ids) and last != set(ids)  # some appear later, some vanish earlier
    assert first and last
    for obj_id in ids:
        masks = labels == obj_id
        areas = masks.sum(axis=(1, 2))
        present = np.nonzero(areas)[0]
        assert present[-1] - present[0] + 1 == len(present)
        for t in present[:-1]:
            if abs(int(areas[t + 1]) - int(areas[t])) > 0.15 * areas[t]:
                continue  # partly hidden behind a higher id: its visible centroid jumps
            step = np.subtract(ndimage.center_of_mass(masks[t + 1]), ndimage.center_of_mass(masks[t]))
            assert np.hypot(*step) <= 3.0 + 1.5, f"object {obj_id} jumped {np.hypot(*step):.1f} px at t={t}"


def test_moving_blobs_without_appear_vanish_keeps_everyone():
    s = moving_blobs((6, 128, 128), 4, radius=(7, 10), appear_vanish=False, seed=2)
    assert set(np.unique(s.labels[0])) == {0, 1, 2, 3, 4}  # objects start apart


def test_dtype_ranges():
    big = nuclei_2d((128, 128), 6, radius=(7, 12), seed=0, dtype="uint16")
    assert int(big.image.max()) - int(big.image.min()) > 4096 * 4
    small = nuclei_2d((128, 128), 6, radius=(7, 12), seed=0, dtype=np.uint8)
    assert small.image.dtype == np.uint8
    assert int(small.image.max()) - int(small.image.min()) > 150
    assert np.array_equal(small.labels, big.labels)


def test_no_objects_and_the_sample():
    empty = nuclei_2d((64, 64), 0, seed=0)
    assert not empty.labels.any() and empty.image.std() > 0
    sample = sample_nuclei_3d()
    assert sample.image.shape == (32, 256, 256) and sample.image.dtype == np.uint16
    assert sample.axes == "zyx" and sample.n_objects == 10 and sample.scale == (2.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: nuclei_2d((64, 64, 3)), r"2 dimensions \(H, W\)"),
        (lambda: nuclei_3d((64, 64)), r"3 dimensions \(Z, H, W\)"),
        (lambda: nuclei_2d((0, 64)), "every size in shape must be >= 1"),
        (lambda: nuclei_2d(("a", 64)), "shape must be 2 integers"),
        (lambda: nuclei_2d(n_objects=-1), "n_objects must be an integer >= 0"),
        (lambda: nuclei_2d(n_objects=2.5), "n_objects must be an integer >= 0"),
        (lambda: nuclei_2d(dtype="float32"), "dtype must be 'uint8' or 'uint16'"),
        (lambda: nuclei_2d(radius=(12, 6)), "radius must satisfy > 0 and min <= max"),
        (lambda: nuclei_2d(radius=(1, 6)), "radius must be at least 2 pixels"),
        (lambda: nuclei_2d(radius=(5, 6, 7)), r"radius must be a \(min, max\) pair"),
        (lambda: nuclei_2d(touching=1.5), "touching must be >= 0 and <= 1"),
        (lambda: nuclei_2d(noise=-0.1), "noise must be >= 0"),
        (lambda: nuclei_2d(background=1.0), "background must be >= 0 and < 1"),
        (lambda: nuclei_2d(kind="bacteria"), "kind must be 'nuclei' or 'cells'"),
        (lambda: nuclei_2d(seed=-3), "seed must be an integer >= 0"),
        (lambda: nuclei_2d((40, 40), 3), r"too small for objects of radius up to 22: it needs H >= 57"),
        (lambda: nuclei_2d((64, 64), 40, radius=(8, 10)), "could place only .* of 40 objects"),
        (lambda: nuclei_3d((8, 128, 128)), "it needs Z >= 25"),
        (lambda: nuclei_3d(z_scale=0), "z_scale must be > 0"),
        (lambda: moving_blobs(speed=(3, 1)), "speed must satisfy >= 0 and min <= max"),
    ],
)
def test_bad_parameters_say_what_to_pass(call, pattern):
    with pytest.raises(SyntheticError, match=pattern):
        call()


def test_documented_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    assert blocks
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(DOCS), "exec"), namespace)


# ---------------------------------------------------------------------------------------------- widened looks


def _flat_counts(look: MicroscopyLook, level: float = 0.5, shape=(200, 200)) -> np.ndarray:
    """Counts of a uniform signal through the camera, back in signal units (no background)."""
    counts = _camera(np.random.default_rng(0), np.full(shape, level, np.float32), look, None)
    scale = look.fill * look.max_value / (1.0 + look.background)
    return (counts.astype(np.float64) - look.offset * look.max_value) / scale


def test_poisson_gaussian_noise_has_the_shot_and_read_variance():
    flat = {"background": 0.0, "gradient": 0.0, "gamma": 1.0, "bits": 16, "offset": 0.05, "fill": 0.9}
    shot = _flat_counts(MicroscopyLook(noise="poisson-gaussian", photons=20.0, read_noise=0.0, **flat))
    assert shot.mean() == pytest.approx(0.5, rel=0.01)
    assert shot.var() == pytest.approx(0.5 / 20.0, rel=0.05)  # Poisson: variance = mean / photons
    both = _flat_counts(MicroscopyLook(noise="poisson-gaussian", photons=20.0, read_noise=0.1, **flat))
    assert both.var() == pytest.approx(0.5 / 20.0 + 0.1**2, rel=0.05)


def test_speckle_noise_is_multiplicative_with_the_given_spread():
    flat = {
        "background": 0.0,
        "gradient": 0.0,
        "gamma": 1.0,
        "bits": 16,
        "offset": 0.0,
        "fill": 0.5,
        "read_noise": 0.0,
    }
    for level in (0.2, 0.8):
        got = _flat_counts(MicroscopyLook(noise="speckle", speckle=0.3, **flat), level=level)
        assert got.mean() == pytest.approx(level, rel=0.02)
        assert got.std() / got.mean() == pytest.approx(0.3, rel=0.05)  # the same relative spread


@pytest.mark.parametrize(
    ("bits", "dtype", "top"), [(8, np.uint8, 255), (12, np.uint16, 4095), (16, np.uint16, 65535)]
)
def test_bit_depths_and_dynamic_range(bits, dtype, top):
    look = MicroscopyLook(bits=bits, offset=0.02, fill=0.9, photons=1000.0, radius=(10.0, 16.0))
    st = microscopy_2d((128, 128), seed=1, look=look)
    assert st.image.dtype == dtype and st.image.max() <= top
    assert st.image.max() > 0.6 * top  # a bright object fills most of the range
    assert np.percentile(st.image, 1) >= 0.5 * look.offset * top  # the dark level is there
    dim = microscopy_2d((128, 128), seed=1, look=dataclasses.replace(look, fill=0.05))
    assert dim.image.max() < 0.12 * top  # dim data use a small part of the range


def test_random_looks_span_bit_depths_noise_models_and_sizes():
    looks = [random_look(s) for s in range(300)]
    assert {lk.bits for lk in looks} == {8, 12, 16}
    assert {lk.noise for lk in looks} == {"poisson-gaussian", "speckle"}
    assert min(lk.radius[0] for lk in looks) == 2.0 and max(lk.radius[1] for lk in looks) > 35
    assert min(lk.brightness[0] for lk in looks) < 0.15 and min(lk.fill for lk in looks) < 0.07
    assert max(lk.gradient for lk in looks) > 0.7 and max(lk.touching for lk in looks) > 0.6
    assert random_look(7) == random_look(7) and random_look(7) != random_look(8)


def test_dim_objects_among_bright_ones():
    look = MicroscopyLook(brightness=(0.1, 1.0), photons=1e6, read_noise=0.0, texture=0.0, gamma=1.0,
                          radius=(8.0, 12.0), fill_fraction=0.3, touching=0.0, blur=0.0)  # fmt: skip
    st = microscopy_2d((192, 192), seed=2, look=look)
    means = [st.image[st.labels == i].mean() for i in range(1, st.n_objects + 1)]
    bg = np.median(st.image[st.labels == 0])
    assert st.n_objects >= 8
    assert (max(means) - bg) / (min(means) - bg) > 3  # the dimmest object is far dimmer than the brightest


def test_microscopy_labels_are_well_formed_and_seeded():
    a, b = microscopy_2d((160, 160), seed=5), microscopy_2d((160, 160), seed=5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    for st in (a, microscopy_3d((24, 128, 128), seed=5)):
        ids = np.unique(st.labels)[1:]
        assert list(ids) == list(range(1, len(ids) + 1))
        for i in ids:
            assert ndimage.label(st.labels == i)[1] == 1  # one piece each


def test_z_anisotropy_and_z_blur():
    look = MicroscopyLook(z_scale=3.0, z_blur=3.0, radius=(12.0, 12.0), fill_fraction=0.05, touching=0.0,
                          photons=1e6, read_noise=0.0, texture=0.0)  # fmt: skip
    st = microscopy_3d((40, 128, 128), seed=3, look=look)
    assert st.scale == (3.0, 1.0, 1.0)
    for i in range(1, st.n_objects + 1):
        z = np.nonzero((st.labels == i).any(axis=(1, 2)))[0]
        rows = np.nonzero((st.labels == i).any(axis=(0, 2)))[0]
        # slices 3 pixels apart: an object is about a third as many slices tall as it is rows wide
        assert 0.2 < len(z) / len(rows) < 0.5
    # z blur: the signal one slice above an object's top is still well above the background
    top = np.nonzero((st.labels == 1).any(axis=(1, 2)))[0].min()
    if top > 0:
        region = (st.labels == 1).any(axis=0)
        bg = np.median(st.image[st.labels == 0])
        assert st.image[top - 1][region].mean() > bg + 0.1 * (st.image[st.labels == 1].mean() - bg)


def test_look_errors_say_what_to_pass():
    with pytest.raises(SyntheticError, match="bits must be 8, 12 or 16"):
        MicroscopyLook(bits=10)
    with pytest.raises(SyntheticError, match="noise must be one of"):
        MicroscopyLook(noise="salt")
    with pytest.raises(SyntheticError, match="offset \\+ fill <= 1"):
        MicroscopyLook(offset=0.5, fill=0.6)
