"""(t, z) data: z-propagation inside a time point, objects carried from one time point to the next."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import make_model
from napari_sam2.engine import LabelWriter, Prompt, TrackerError, track_through_time


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, size=(4, 5, 48, 56)).astype(np.uint8)


def test_objects_are_carried_forward_then_backward_in_time(volume):
    model = make_model(score_bias=20.0)  # always present: every time point must get the object
    labels = np.zeros(volume.shape, np.uint16)
    calls = []
    report = track_through_time(
        model,
        volume,
        {(1, 2, 7): Prompt(points=[[20, 25]], labels=[1])},
        LabelWriter(labels),
        progress=lambda d, n: calls.append((d, n)),
    )
    assert list(report.objects) == [1, 2, 3, 0]  # forward from the prompted time point, then back
    assert all(ids == [7] for ids in report.objects.values())
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(labels[t].any() for t in range(4)) and set(np.unique(labels)) == {0, 7}


def test_lost_objects_are_not_carried(volume):
    model = make_model(score_bias=-20.0)  # the model says "absent" everywhere, the keyframe included
    labels = np.ones(volume.shape, np.uint16) * 3  # stale labels of object 3 are cleared where it is absent
    labels[..., :4] = 9  # another object's voxels are kept
    report = track_through_time(model, volume, {(0, 2, 3): Prompt(box=(10, 10, 20, 20))}, LabelWriter(labels))
    assert report.objects == {0: [], 1: [], 2: [], 3: []}
    assert (labels[0, 2, :, 4:] == 3).all()  # the keyframe keeps its labels: the click found nothing there
    assert not (np.delete(labels[0], 2, axis=0) == 3).any()  # cleared on every other slice of that time point
    assert (labels[1:, ..., 4:] == 3).all()  # nothing carried: later time points are not touched
    assert (labels[..., :4] == 9).all()


def test_cancel_between_time_points_keeps_finished_ones(volume):
    model = make_model(score_bias=20.0)
    labels = np.zeros(volume.shape, np.uint16)
    done = []
    report = track_through_time(
        model,
        volume,
        {(0, 2, 1): Prompt(points=[[20, 25]], labels=[1])},
        LabelWriter(labels),
        progress=lambda d, n: done.append(d),
        cancel=lambda: len(done) >= 2,
    )
    assert report.cancelled and list(report.objects) == [0, 1]
    assert labels[0].any() and labels[1].any() and not labels[2:].any()


def test_bad_input(volume):
    model = make_model()
    labels = np.zeros(volume.shape, np.uint16)
    prompt = Prompt(points=[[1, 1]], labels=[1])
    with pytest.raises(TrackerError, match="outside the image"):
        track_through_time(model, volume, {(9, 0, 1): prompt}, LabelWriter(labels))
    with pytest.raises(TrackerError, match="do not match the image"):
        track_through_time(model, volume, {(0, 0, 1): prompt}, LabelWriter(labels[:, :3]))
    with pytest.raises(TrackerError, match=r"need a \(t, z, y, x\) image"):
        track_through_time(model, volume[0], {(0, 0, 1): prompt}, LabelWriter(labels[0]))
    with pytest.raises(TrackerError, match="no prompts"):
        track_through_time(model, volume, {}, LabelWriter(labels))
