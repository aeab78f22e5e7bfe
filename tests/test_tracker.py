"""Prompts, the single (row, col) -> (x, y) flip, memory selection rules and tracker errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_sam2.engine import FrameResult, Prompt, PromptError, Track, Tracker, TrackerError, select_memories
from napari_sam2.engine.prompts import prompt_tensors, to_model_xy
from napari_sam2.engine.tracker import Recipe
from napari_sam2.model import VARIANTS, Sam2Model


def test_flip_and_scale_to_model_pixels():
    xy = to_model_xy(np.array([[10.0, 30.0], [0.0, 0.0]]), plane_hw=(50, 200), image_size=1024)
    torch.testing.assert_close(xy, torch.tensor([[30 / 200 * 1024, 10 / 50 * 1024], [0.0, 0.0]]))


def test_box_corners_come_first_with_labels_2_and_3():
    p = Prompt(points=[[5, 6]], labels=[0], box=(40, 30, 10, 20))  # corners given in any order
    assert p.box == (10, 20, 40, 30)
    coords, labels = prompt_tensors(p, (100, 100), 100)
    assert labels.tolist() == [[2, 3, 0]]
    torch.testing.assert_close(coords, torch.tensor([[[20.0, 10.0], [30.0, 40.0], [6.0, 5.0]]]))


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"points": [[1, 2]], "labels": [1, 0]}, "1 points but 2 labels"),
        ({"points": [[1, 2]], "labels": [5]}, "must be 1 .positive. or 0"),
        ({"points": [[np.nan, 2]], "labels": [1]}, "finite"),
        ({"box": (1, 2, 3)}, "a box is"),
        ({}, "at least one point or a box"),
    ],
)
def test_bad_prompts(kwargs, pattern):
    with pytest.raises(PromptError, match=pattern):
        Prompt(**kwargs)


def test_prompt_outside_plane():
    with pytest.raises(PromptError, match=r"\(row=70, col=3\) lies outside the 64 x 80 plane"):
        Prompt(points=[[70, 3]], labels=[1]).check_inside((64, 80))
    Prompt(points=[[63, 79]], labels=[1]).check_inside((64, 80))


def _result(tag: float) -> FrameResult:
    return FrameResult(
        torch.full((1, 1, 4, 4), tag), torch.full((1, 8), tag), torch.ones(1, 1), torch.zeros(1, 2, 1, 1)
    )


def test_memory_selection_forward():
    track = Track(1, cond={2: _result(2), 9: _result(9)})
    track.tracked_only = {t: _result(t) for t in range(3, 9)}
    spatial, pointers = select_memories(track, 8, reverse=False, num_frames=12)
    # every conditioning frame in slot 0 (also the future one), then frames 3..7 in slots 2..6
    # (frame 2 would be slot 1, but it is a conditioning frame, already in)
    assert [(int(r.obj_ptr[0, 0]), s) for r, s in spatial] == [
        (2, 0),
        (9, 0),
        (3, 2),
        (4, 3),
        (5, 4),
        (6, 5),
        (7, 6),
    ]
    # pointers: past conditioning frames only, then previous tracked frames up to min(12, 16) - 1 back
    assert [(d, int(r.obj_ptr[0, 0])) for d, r in pointers] == [
        (6, 2),
        (1, 7),
        (2, 6),
        (3, 5),
        (4, 4),
        (5, 3),
    ]


def test_released_frames_stay_memories_only_with_a_recipe():
    track = Track(1, cond={0: _result(0)}, tracked_only={1: _result(1), 2: _result(2)})
    track.tracked_only[1].recipe = Recipe(1, 0, (), ())  # recomputable: still a memory (slot 5)
    track.tracked_only[1].release()
    spatial, pointers = select_memories(track, 3, reverse=False, num_frames=5)
    assert [s for _, s in spatial] == [0, 5, 6] and track.tracked_only[1].released
    track.tracked_only[1].recipe = None  # nothing to recompute it from (a stopped frame): no memory
    spatial, pointers = select_memories(track, 3, reverse=False, num_frames=5)
    assert [s for _, s in spatial] == [0, 6]
    assert [d for d, _ in pointers] == [3, 1, 2]  # but its pointer still counts


def test_memory_selection_reverse_and_short_sequences():
    track = Track(1, cond={5: _result(5)})
    track.tracked_only = {4: _result(4), 3: _result(3), 1: _result(1)}
    spatial, pointers = select_memories(track, 2, reverse=True, num_frames=6)
    assert [(int(r.obj_ptr[0, 0]), s) for r, s in spatial] == [(5, 0), (4, 5), (3, 6)]
    assert [(d, int(r.obj_ptr[0, 0])) for d, r in pointers] == [(3, 5), (1, 3), (2, 4)]
    # previous-frame pointers reach at most min(num_frames, max_ptrs) - 1 frames away
    spatial, pointers = select_memories(track, 2, reverse=True, num_frames=6, max_ptrs=2)
    assert [d for d, _ in pointers] == [3, 1]
    # and stop at the end of the sequence
    spatial, pointers = select_memories(track, 4, reverse=True, num_frames=5)
    assert [d for d, _ in pointers] == [1]


@pytest.fixture(scope="module")
def small_tracker_model():
    torch.manual_seed(0)
    return Sam2Model(replace(VARIANTS["sam2.1_hiera_tiny"], name="t128", image_size=128)).eval()


def test_tracker_errors(small_tracker_model):
    frames = torch.zeros(3, 3, 128, 128)
    tracker = Tracker(small_tracker_model, lambda i: frames[i], 3, (40, 50))
    with pytest.raises(TrackerError, match="no object has a prompt"):
        next(tracker.propagate())
    with pytest.raises(IndexError, match="frame 3 is outside the sequence of 3 frames"):
        tracker.add_prompt(3, 1, Prompt(points=[[1, 1]], labels=[1]))
    with pytest.raises(PromptError, match="outside"):
        tracker.add_prompt(0, 1, Prompt(points=[[45, 1]], labels=[1]))
    with pytest.raises(PromptError, match="clear=True"):
        tracker.add_prompt(0, 1, Prompt(box=(1, 1, 5, 5)), clear=False)
    with pytest.raises(ValueError, match="2D"):
        tracker.add_mask(0, 1, np.zeros((2, 40, 50)))
    with pytest.raises(TrackerError, match="at least one frame"):
        Tracker(small_tracker_model, lambda i: frames[i], 0, (40, 50))


def test_tracker_visits_every_frame_once_per_pass(small_tracker_model):
    frames = torch.randn(5, 3, 128, 128)
    encoded = []

    def source(i):
        encoded.append(i)
        return frames[i]

    tracker = Tracker(small_tracker_model, source, 5, (40, 50))
    out = tracker.add_mask(2, 7, np.pad(np.ones((10, 10), bool), ((10, 20), (10, 30))))
    assert set(out) == {7} and out[7].shape == (40, 50)
    assert (out[7][15, 15] > 0) and (out[7][2, 45] < 0)  # a mask prompt is its own answer
    fwd = [t for t, _ in tracker.propagate()]
    back = [t for t, _ in tracker.propagate(reverse=True)]
    assert fwd == [2, 3, 4] and back == [2, 1, 0]
    assert sorted(tracker.tracks[7].tracked_only) == [0, 1, 3, 4] and list(tracker.tracks[7].cond) == [2]
    assert encoded.count(3) == 1 and encoded.count(0) == 1


def _stored(tracker):
    return sum(
        (r.memory is not None) + (r.low_res is not None)
        for t in tracker.tracks.values()
        for r in t.tracked_only.values()
    )


def test_memory_is_bounded_and_a_forward_pass_is_unchanged(small_tracker_model):
    """Only the frames SAM2's memory can still read keep their memory and logits, so stored
    tensors do not grow with the number of frames; a single pass gives the same masks."""
    torch.manual_seed(1)
    frames = torch.randn(24, 3, 128, 128)
    results = {}
    for retain in (None, "auto"):
        tracker = Tracker(small_tracker_model, lambda i: frames[i], 24, (40, 50), retain=retain)
        tracker.add_prompt(0, 1, Prompt(points=[[20, 25]], labels=[1]))
        tracker.add_prompt(0, 2, Prompt(box=(5, 5, 30, 30)))
        results[retain] = {t: {k: v.clone() for k, v in m.items()} for t, m in tracker.propagate()}
        if retain is None:
            assert _stored(tracker) == 2 * 2 * 23  # two objects, every tracked frame
        else:
            assert _stored(tracker) == 2 * 2 * 7  # per object: the last frame and the 6 before it
            assert all(r.obj_ptr is not None for r in tracker.tracks[1].tracked_only.values())
    for t in range(24):
        for k in (1, 2):
            assert torch.equal(results[None][t][k], results["auto"][t][k])
