"""Frame sequences: slices or time points of a lazy image become the tracker's frames, one window for all."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch
import zarr

from counting_store import CountingStore
from napari_sam2.engine import Prompt, Tracker
from napari_sam2.engine.frames import FrameError, FrameSequence
from napari_sam2.engine.intensity import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    IntensityWindow,
    apply_window,
    robust_window,
    to_model_input,
)
from napari_sam2.engine.sources import SourceError, open_image
from napari_sam2.model import VARIANTS, Sam2Model

RNG = np.random.default_rng(0)
# (z, y, x): slice i has a different mean, so frames differ
VOLUME = (RNG.integers(0, 2000, (6, 40, 48)) + 1000 * np.arange(6)[:, None, None]).astype(np.uint16)
# (t, z, y, x): every plane is distinct (its value offset encodes t and z)
TZYX = (RNG.integers(0, 100, (3, 4, 24, 20)) + 1000 * np.arange(12).reshape(3, 4, 1, 1)).astype(np.uint16)


def _manual_input(plane: np.ndarray, window: IntensityWindow) -> torch.Tensor:
    """Window + ImageNet normalisation by hand, for a plane already at the model's size."""
    x01 = np.clip(
        (plane.astype(np.float32) - np.float32(window.low)) / np.float32(window.high - window.low), 0, 1
    )
    t = torch.from_numpy(x01)[None].expand(3, *plane.shape)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (t - mean) / std


def test_frame_is_the_windowed_normalised_slice():
    vol = VOLUME[:, :40, :40]  # square: S = 40 needs no resize, so the whole path can be written by hand
    seq = FrameSequence(vol, image_size=40)
    assert seq.axis == "z" and len(seq) == seq.num_frames == 6 and seq.frame_hw == (40, 40)
    assert seq.window == robust_window(vol)  # the sample of a small volume is all of it
    for i in range(6):
        assert seq.source_index(i) == (i,)
        np.testing.assert_array_equal(seq.plane(i), vol[i])
        out = seq(i)
        assert out.shape == (3, 40, 40) and out.dtype == torch.float32
        assert torch.equal(out, _manual_input(vol[i], seq.window))
    assert not torch.equal(seq(0), seq(1))
    # with a resize: exactly the documented composition
    seq = FrameSequence(VOLUME, window=(500, 6000), image_size=32)
    assert seq.window == IntensityWindow(500, 6000)
    assert torch.equal(seq(3), to_model_input(apply_window(VOLUME[3], IntensityWindow(500, 6000)), 32))


def test_one_window_for_every_frame():
    vol = np.full((5, 16, 16), 100, np.uint16)
    vol[:, 4:8, 4:8] = 400
    vol[2, 10:14, 10:14] = 60000  # a bright object on one slice only
    seq = FrameSequence(vol, image_size=16)
    before = seq.window
    bright = seq(2)
    assert seq.window == before  # reading the bright slice does not re-window
    assert torch.equal(seq(0), seq(4))  # equal raw slices, equal inputs
    # where slice 2 equals slice 0 its input is equal too: no per-frame min-max
    same = torch.ones(16, 16, dtype=torch.bool)
    same[10:14, 10:14] = False
    assert torch.equal(bright[:, same], seq(0)[:, same])
    assert not torch.equal(bright, seq(0))


def test_tzyx_along_z_at_a_fixed_time_point():
    seq = FrameSequence(TZYX, axis="z", fixed={"t": 1}, image_size=32)
    assert len(seq) == 4 and seq.frame_hw == (24, 20)
    for i in range(4):
        assert seq.source_index(i) == (1, i)
        np.testing.assert_array_equal(seq.plane(i), TZYX[1, i])
        assert torch.equal(seq(i), to_model_input(apply_window(TZYX[1, i], seq.window), 32))


def test_tzyx_along_t_at_a_fixed_slice():
    seq = FrameSequence(TZYX, axis="t", fixed={"z": 2}, image_size=32)
    assert seq.axis == "t" and len(seq) == 3
    for i in range(3):
        assert seq.source_index(i) == (i, 2)
        np.testing.assert_array_equal(seq.plane(i), TZYX[i, 2])


def test_default_axis_is_z_else_t():
    assert FrameSequence(VOLUME, image_size=32).axis == "z"
    tyx = open_image(VOLUME, axes="tyx")
    seq = FrameSequence(tyx, image_size=32)
    assert seq.axis == "t" and seq.source is tyx and len(seq) == 6


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({}, r"missing: t \(pass fixed=\{'t': 0..2\}\)"),
        ({"axis": "t"}, r"missing: z \(pass fixed=\{'z': 0..3\}\)"),
        ({"axis": "x"}, "axis must be 'z' or 't', got 'x'"),
        ({"fixed": {"t": 3}}, r"fixed\['t'\]=3 is out of range; valid: 0..2"),
        ({"fixed": {"t": -1}}, r"fixed\['t'\]=-1 is out of range"),
        ({"fixed": {"t": 1.5}}, r"fixed\['t'\] must be an integer"),
        ({"fixed": {"t": 0, "z": 1}}, "names the frame axis 'z' itself"),
        ({"fixed": {"t": 0, "c": 1}}, r"names \['c'\]"),
        ({"fixed": {"t": 0}, "image_size": 0}, "image_size must be an int >= 1"),
        ({"fixed": {"t": 0}, "cache_size": -1}, "cache_size must be an int >= 0"),
    ],
)
def test_user_errors_say_what_to_pass(kwargs, pattern):
    kwargs = {"image_size": 32, **kwargs}
    with pytest.raises(FrameError, match=pattern):
        FrameSequence(TZYX, **kwargs)


def test_axis_the_image_lacks_and_fixed_without_a_second_axis():
    with pytest.raises(FrameError, match=r"no t axis .*use axis='z'"):
        FrameSequence(VOLUME, axis="t", image_size=32)
    with pytest.raises(FrameError, match=r"names \['t'\].*drop fixed"):
        FrameSequence(VOLUME, fixed={"t": 0}, image_size=32)


def test_2d_image_has_nothing_to_propagate_through():
    with pytest.raises(FrameError, match="nothing to propagate through"):
        FrameSequence(VOLUME[0], image_size=32)


def test_out_of_range_frame_is_an_index_error():
    seq = FrameSequence(VOLUME, image_size=32)
    for i in (6, -1):
        with pytest.raises(
            IndexError, match=rf"frame {i} is outside the sequence: 6 frames along z, valid: 0..5"
        ):
            seq(i)
        with pytest.raises(IndexError, match="outside the sequence"):
            seq.plane(i)


def _chunks(store: CountingStore) -> list[str]:
    return [k for k in store.keys_read if "/c/" in k]


def test_reads_are_lazy():
    store = CountingStore()
    group = zarr.open_group(store, mode="w", zarr_format=3)
    fine = group.create_array("0", shape=VOLUME.shape, chunks=(1, 40, 48), dtype=VOLUME.dtype)
    fine[:] = VOLUME
    coarse = group.create_array("1", shape=(6, 10, 12), chunks=(6, 10, 12), dtype=VOLUME.dtype)
    coarse[:] = VOLUME[:, ::4, ::4]
    source = open_image([fine, coarse])  # level 0 and a coarser level
    store.keys_read.clear()

    seq = FrameSequence(source, image_size=32, cache_size=2)
    assert _chunks(store) == ["1/c/0/0/0"]  # the window's sample comes from the coarse level only
    assert seq.window == robust_window(VOLUME[:, ::4, ::4])
    store.keys_read.clear()
    FrameSequence(source, window=(0, 1), image_size=32)
    assert _chunks(store) == []  # an explicit window reads nothing

    seq(4)
    assert _chunks(store) == ["0/c/4/0/0"]  # one frame reads only its own slice
    store.keys_read.clear()
    seq(4)
    seq(1)
    seq(4)
    assert _chunks(store) == ["0/c/1/0/0"]  # the last two inputs are cached
    store.keys_read.clear()
    seq(2)  # cache: 4, 2
    seq(4)  # a hit; 4 becomes the most recent: 2, 4
    seq(1)  # evicts 2, the least recently used: 4, 1
    seq(2)
    assert _chunks(store) == ["0/c/2/0/0", "0/c/1/0/0", "0/c/2/0/0"]


def test_no_cache_reads_every_time():
    calls = []

    class Counting:
        shape, dtype = VOLUME.shape, VOLUME.dtype

        def __getitem__(self, key):
            calls.append(key)
            return VOLUME[key]

    seq = FrameSequence(Counting(), window=(0, 5000), image_size=32, cache_size=0)
    calls.clear()
    assert torch.equal(seq(3), seq(3))
    assert calls == [(3, slice(None), slice(None))] * 2


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return Sam2Model(replace(VARIANTS["sam2.1_hiera_tiny"], name="t128", image_size=128)).eval()


def test_tracker_propagates_through_slices(small_model):
    vol = np.zeros((4, 36, 44), np.uint16)
    for i in range(4):
        vol[i, 10 + i : 22 + i, 12:26] = 3000  # a square that drifts down one row per slice
    seq = FrameSequence(vol, image_size=small_model.config.image_size)
    tracker = Tracker(small_model, frames=seq, num_frames=len(seq), frame_hw=seq.frame_hw)
    first = tracker.add_prompt(0, 1, Prompt(points=[[15, 18]], labels=[1]))
    assert set(first) == {1} and first[1].shape == (36, 44)
    seen = {}
    for frame, logits in tracker.propagate():
        assert set(logits) == {1} and logits[1].shape == seq.frame_hw
        assert torch.isfinite(logits[1]).all()
        seen[frame] = logits[1]
    assert sorted(seen) == [0, 1, 2, 3]


def test_a_path_opened_here_is_closed_here(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, VOLUME)
    seq = FrameSequence(path, image_size=32)
    np.testing.assert_array_equal(seq.plane(5), VOLUME[5])
    seq.close()
    with pytest.raises(SourceError, match="closed"):
        seq.plane(0)
    source = open_image(VOLUME)
    FrameSequence(source, image_size=32).close()
    assert source.plane(0).shape == (40, 48)  # a source given open stays open
