"""Keyframe runs of the tracker: both directions, the nearer-keyframe rule, corrections that
re-run only their frames, streaming to labels with cancel, seeding from labels, absent objects,
review statistics, native-resolution crops and bad input. Random weights: these tests check
the bookkeeping exactly (results equal to single-keyframe runs, frames computed, labels
written); segmentation quality is checked with the trained demo model elsewhere. The model and
clip run on ``NAPARI_SAM2_TEST_DEVICE`` (default CPU; see conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TEST_DEVICE
from helpers import H, W, make_model, square
from napari_sam2.engine import (
    Crop,
    FrameSequence,
    LabelWriter,
    Prompt,
    Tracker,
    TrackerError,
    apply_window,
    segment_bounds,
    to_model_input,
)


@pytest.fixture(scope="module")
def model():
    return make_model().to(TEST_DEVICE)


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(3)
    return torch.randn(12, 3, 64, 64).to(TEST_DEVICE)


class Counting:
    """A frames callable that records which frames were read."""

    def __init__(self, frames):
        self.frames, self.calls = frames, []

    def __call__(self, i):
        self.calls.append(i)
        return self.frames[i]


def run_patches(tracker, **kwargs):
    """{frame: {obj: (H, W) logits}} from a keyframe run."""
    return {f: {o: p.full(tracker.frame_hw) for o, p in ps.items()} for f, ps in tracker.track(**kwargs)}


def test_segment_bounds_nearer_keyframe_wins_ties_go_to_the_earlier():
    assert segment_bounds([2, 9], 2, 12) == (0, 5)  # 5.5 is the middle: 5 is nearer to 2
    assert segment_bounds([2, 9], 9, 12) == (6, 11)
    assert segment_bounds([2, 8], 2, 12) == (0, 5)  # 5 is exactly between: the earlier keyframe
    assert segment_bounds([2, 8], 8, 12) == (6, 11)
    assert segment_bounds([4], 4, 7) == (0, 6)


def test_single_keyframe_forward_run_equals_sam2_single_pass(model, clip):
    prompt = Prompt(points=[[20, 25]], labels=[1])
    a = Tracker(model, lambda i: clip[i], 12, (H, W))
    a.add_prompt(0, 1, prompt)
    ours = run_patches(a)
    b = Tracker(model, lambda i: clip[i], 12, (H, W))
    b.add_prompt(0, 1, prompt)
    ref = {f: {o: v.cpu().numpy() for o, v in m.items()} for f, m in b.propagate()}
    assert list(ours) == list(ref) == list(range(12))
    for f in range(12):
        np.testing.assert_allclose(ours[f][1], ref[f][1], atol=1e-5)


def test_middle_keyframe_runs_both_ways(model, clip):
    frames = Counting(clip)
    tracker = Tracker(model, frames, 11, (H, W))
    tracker.add_mask(5, 1, square(20, 25))
    report = tracker.run()
    assert report.frames == [5, 6, 7, 8, 9, 10, 4, 3, 2, 1, 0] and report.total == 11 and not report.cancelled
    assert sorted(frames.calls) == list(range(11))  # every frame encoded once
    assert tracker.tracks[1].owner == dict.fromkeys(range(11), 5)
    back = Tracker(model, lambda i: clip[i], 11, (H, W))
    back.add_mask(5, 1, square(20, 25))
    expected = dict(back.propagate(start=5, reverse=True))
    again = Tracker(model, lambda i: clip[i], 11, (H, W))
    again.add_mask(5, 1, square(20, 25))
    got = run_patches(again)
    for f in range(5):
        np.testing.assert_allclose(got[f][1], expected[f][1].cpu().numpy(), atol=1e-5)


def test_two_keyframes_meet_where_the_nearer_one_decides(model, clip):
    """Frames 0..5 depend only on keyframe 2, frames 6..11 only on keyframe 9: equal to runs
    with that keyframe alone, whatever the order of passes."""
    both = Tracker(model, lambda i: clip[i], 12, (H, W))
    both.add_mask(2, 1, square(20, 25))
    both.add_mask(9, 1, square(30, 35))
    got = run_patches(both)
    assert [both.tracks[1].owner[f] for f in range(12)] == [2] * 6 + [9] * 6
    for key, frames in ((2, range(0, 6)), (9, range(6, 12))):
        alone = Tracker(model, lambda i: clip[i], 12, (H, W))
        alone.add_mask(key, 1, square(20, 25) if key == 2 else square(30, 35))
        single = run_patches(alone)
        for f in frames:
            np.testing.assert_allclose(got[f][1], single[f][1], atol=1e-5)


def test_correction_reruns_only_the_frames_it_now_owns(model, clip):
    frames = Counting(clip)
    tracker = Tracker(model, frames, 12, (H, W))
    tracker.add_prompt(2, 1, Prompt(points=[[20, 25]], labels=[1]))
    tracker.add_prompt(2, 2, Prompt(box=(5, 5, 30, 30)))
    first = run_patches(tracker)
    frames.calls.clear()
    tracker.add_prompt(
        8, 1, Prompt(points=[[10, 40]], labels=[0]), clear=False
    )  # a correction on a tracked frame
    # conditioned on frames 2-7 (and frame 8's previous logits) as SAM2 does: 3, 4, 7 and 8 were
    # released behind the run's passes (forward to 11, backward to 0) and are recomputed
    assert sorted(set(frames.calls)) == [3, 4, 7, 8]
    frames.calls.clear()
    second = run_patches(tracker)
    assert list(second) == [8, 9, 10, 11, 7, 6]  # frames 6..11 are nearer to 8 than to 2
    assert all(set(second[f]) == {1} for f in second)  # object 2 had no new prompt
    assert sorted(set(frames.calls)) == [6, 7, 8, 9, 10, 11]
    assert not np.allclose(first[8][1], second[8][1])
    assert sorted(tracker.tracks[1].cond) == [2, 8] and tracker.tracks[1].owner[5] == 2
    assert tracker.run().frames == []  # nothing new: nothing to do


def test_many_objects_one_id_per_voxel_by_highest_logit(model, clip):
    tracker = Tracker(model, lambda i: clip[i], 6, (H, W))
    for obj, box in ((1, (5, 5, 30, 30)), (2, (15, 15, 40, 45)), (3, (0, 20, 25, 55))):
        tracker.add_prompt(0, obj, Prompt(box=box))
    labels = np.zeros((6, H, W), np.uint16)
    patches = {}
    writer = LabelWriter(labels)
    for f, ps in tracker.track():
        writer.write((f,), ps)
        patches[f] = ps
    assert len(patches) == 6
    for f, ps in patches.items():
        stack = np.stack([ps[o].full((H, W)) for o in (1, 2, 3)])
        expect = np.where(stack.max(0) > 0, stack.argmax(0) + 1, 0)
        np.testing.assert_array_equal(labels[f], expect)
    assert set(np.unique(labels)) <= {0, 1, 2, 3} and len(np.unique(labels)) >= 3


def test_cancel_leaves_every_written_frame_whole_and_a_rerun_completes(model, clip):
    def fresh():
        t = Tracker(model, lambda i: clip[i], 10, (H, W))
        t.add_prompt(4, 1, Prompt(box=(5, 5, 30, 30)))
        t.add_prompt(4, 2, Prompt(points=[[35, 40]], labels=[1]))
        return t

    full = np.zeros((10, H, W), np.uint32)
    fresh().run(LabelWriter(full))

    labels = np.zeros((10, H, W), np.uint32)
    tracker, done = fresh(), []
    report = tracker.run(
        LabelWriter(labels), progress=lambda d, t: done.append((d, t)), cancel=lambda: len(done) >= 3
    )
    assert report.cancelled and report.frames == [4, 5, 6] and done == [(1, 10), (2, 10), (3, 10)]
    for f in range(10):
        if f in report.frames:
            np.testing.assert_array_equal(labels[f], full[f])  # complete: every object of the frame
        else:
            assert not labels[f].any()  # untouched
    assert tracker.run(LabelWriter(labels)).frames == [4, 5, 6, 7, 8, 9, 3, 2, 1, 0]
    np.testing.assert_array_equal(labels, full)


def test_seeding_from_labels_keeps_other_objects(model, clip):
    labels = np.zeros((8, H, W), np.uint16)
    labels[4][square(15, 15)] = 3
    labels[4][square(32, 40)] = 5
    labels[:, 40:, :10] = 9  # painted by the user on every slice, not seeded... on slice 4 too
    labels[4][40:, :10] = 0
    painted = labels == 9
    tracker = Tracker(model, lambda i: clip[i], 8, (H, W))
    assert tracker.seed_from_labels(labels, (4,), 4) == [3, 5]
    tracker.run(LabelWriter(labels))
    assert (labels[painted] == 9).all()  # never overwritten
    for obj, mask in ((3, square(15, 15)), (5, square(32, 40))):
        got = labels[4] == obj
        # a mask prompt is its own answer, up to the 16 x 16 logits of this 64-pixel test model
        assert (got & mask).sum() / (got | mask).sum() > 0.85


def test_absent_objects_are_empty_and_stop_after_n(clip):
    absent_model = make_model(score_bias=-20.0).to(TEST_DEVICE)
    frames = Counting(clip)
    tracker = Tracker(absent_model, frames, 12, (H, W))
    tracker.add_mask(6, 1, square(20, 25))
    labels = np.zeros((12, H, W), np.uint8)
    labels[:, :5, :5] = 1  # stale labels of object 1 from an earlier run: cleared where absent
    tracker.run(LabelWriter(labels), stop_after_absent=2)
    assert sorted(set(frames.calls)) == [4, 5, 6, 7, 8]  # two absent frames each way, then stop
    assert labels[6].any() and not np.delete(labels, 6, axis=0).any()
    stats = {s.frame: s for s in tracker.stats(1)}
    assert [stats[f].stopped for f in range(12)] == [True] * 4 + [False] * 5 + [True] * 3
    assert stats[6].keyframe and stats[6].present and not stats[7].present
    with pytest.raises(TrackerError, match="stop_after_absent"):
        tracker.run(stop_after_absent=0)


def test_stats_and_drift_frames(model, clip):
    tracker = Tracker(model, lambda i: clip[i], 6, (H, W))
    tracker.add_mask(2, 1, square(20, 25))
    tracker.run()
    stats = tracker.stats()
    assert [s.frame for s in stats] == list(range(6)) and all(s.obj_id == 1 for s in stats)
    key = stats[2]
    assert key.keyframe and key.area_change is None and key.area == pytest.approx(144, rel=0.15)
    for s in stats:
        if s.frame != 2:
            neighbour = stats[s.frame - 1 if s.frame > 2 else s.frame + 1]
            assert s.area_change == pytest.approx((s.area - neighbour.area) / max(neighbour.area, 1))
    flagged = tracker.drift_frames(min_iou=2.0, max_area_change=1e9)  # every present tracked frame
    assert {f for f, _, why in flagged if why.startswith("predicted IoU")} == {
        s.frame for s in stats if s.present and not s.keyframe
    }
    assert tracker.drift_frames(min_iou=-1.0, max_area_change=1e9) == []


def test_bad_input_gives_clear_errors(model, clip):
    tracker = Tracker(model, lambda i: clip[i], 5, (H, W))
    with pytest.raises(IndexError, match=r"frame 7 is outside the sequence of 5 frames \(0..4\)"):
        tracker.add_prompt(7, 1, Prompt(points=[[1, 1]], labels=[1]))
    with pytest.raises(TrackerError, match="object ids are positive ints"):
        tracker.add_prompt(0, 0, Prompt(points=[[1, 1]], labels=[1]))
    with pytest.raises(TrackerError, match=r"labels planes are \(10, 10\) but the frames are \(48, 56\)"):
        tracker.seed_from_labels(np.zeros((5, 10, 10), np.uint8), (0,), 0)
    with pytest.raises(TrackerError, match="has shape"):
        tracker.add_mask(0, 1, np.zeros((10, 10), bool))
    with pytest.raises(TrackerError, match="no object has a prompt"):
        tracker.run()
    tracker.add_mask(0, 1, square(10, 10))
    with pytest.raises(TrackerError, match=r"labels planes are \(9, 9\)"):
        tracker.run(LabelWriter(np.zeros((5, 9, 9), np.uint8)))
    with pytest.raises(TrackerError, match="unknown object 4; known: 1"):
        tracker.stats(4)
    with pytest.raises(TrackerError, match="crop must be"):
        Tracker(model, lambda i: clip[i], 5, (H, W), crop=50)
    with pytest.raises(TrackerError, match=r"max_crop \(32\) must be at least the crop \(64\)"):
        Tracker(
            model,
            FrameSequence(np.zeros((2, 300, 300), np.uint8), image_size=64),
            2,
            (300, 300),
            max_crop=32,
        )
    with pytest.raises(TrackerError, match="crop"):
        Tracker(model, lambda i: clip[i], 5, (600, 600), crop=64)


# ---------------------------------------------------------------------- native-resolution crops
@pytest.fixture(scope="module")
def big_stack():
    rng = np.random.default_rng(0)
    return rng.integers(0, 1000, size=(5, 300, 400)).astype(np.uint16)


def test_crop_is_the_native_region(model, big_stack):
    seq = FrameSequence(big_stack, image_size=64)
    win = Crop(100, 150, 64, 64)
    expect = to_model_input(apply_window(big_stack[2, 100:164, 150:214], seq.window), 64)
    torch.testing.assert_close(seq.crop(2, win, 64), expect)
    edge = seq.crop(2, Crop(-10, 380, 64, 64), 64)  # reaches past the top and the right
    padded = np.zeros((64, 64), np.float32)  # the outside is the intensity window's low value: 0
    padded[10:, :20] = apply_window(big_stack[2, :54, 380:], seq.window)
    torch.testing.assert_close(edge, to_model_input(padded, 64))


def test_crops_follow_the_object_at_native_resolution(model, big_stack):
    seq = FrameSequence(big_stack, image_size=64)
    tracker = Tracker(model, seq, 5, seq.frame_hw)  # "auto": 300 x 400 frames > 64: crops of 64
    assert tracker.crop_size == 64 and tracker.net.config.image_size == 64
    mask = square(150, 250, half=10, shape=seq.frame_hw)
    logits = tracker.add_mask(1, 1, mask)[1]
    key = tracker.tracks[1].pending[1]
    assert key.crop == Crop(118, 218, 64, 64)  # centred on the 20 x 20 mask, at least 64 wide
    assert ((logits > 0).numpy() == mask).mean() > 0.99 and float(
        logits[0, 0]
    ) < -100  # outside the crop: empty
    big = square(150, 250, half=50, shape=seq.frame_hw)
    tracker.add_mask(3, 2, big)
    assert tracker.tracks[2].pending[3].crop == Crop(50, 150, 200, 200)  # grown to twice the object
    capped = Tracker(model, seq, 5, seq.frame_hw, max_crop=100)
    capped.add_mask(3, 2, big)
    assert capped.tracks[2].pending[3].crop == Crop(100, 200, 100, 100)
    tracker.run()
    t1 = tracker.tracks[1]
    checked = 0
    for f in (2, 3, 4):  # re-centred on the previous frame's mask every frame, grown with it
        r0, c0, r1, c1 = t1.result(f - 1).bbox
        win = t1.result(f).crop
        assert win.height == win.width == max(64, int(np.ceil(2 * max(r1 - r0, c1 - c0))))
        for start, centre, n in ((win.row0, (r0 + r1) / 2, 300), (win.col0, (c0 + c1) / 2, 400)):
            if 0 < start < n - win.height:  # not pushed back inside the plane at a border
                assert abs(start + win.height / 2 - centre) <= 1
                checked += 1
    assert checked >= 2
