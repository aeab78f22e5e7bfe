"""End-to-end propagation quality with the shipped demo model on generated data it never saw
(seeds outside its training recipe): separate 3D blobs through z, moving blobs through t, an object that
leaves and comes back, and native-resolution crops on large frames against whole-frame tracking.

Masks are compared with the generator's ground truth; per-frame IoU is averaged over the frames
where the truth or the prediction has the object. The model runs on ``NAPARI_SAM2_TEST_DEVICE``
(default CPU; see conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import TEST_DEVICE
from napari_sam2.engine import FrameSequence, LabelWriter, Prompt, Tracker, load_model, open_image
from napari_sam2.training.evaluate import click_point, iou
from napari_sam2.training.synthetic import moving_blobs, nuclei_2d, nuclei_3d

pytestmark = pytest.mark.slow

HELD_OUT = 9001  # the demo recipe trains on seeds 0-63, 1000-1011 and 2000-2011


@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(1)  # steady on a shared machine; tiny model, small inputs
    return load_model("demo", device=TEST_DEVICE)


def track_all(model, stack, crop="auto", intensity=None, **run):
    """Click every object once at its most interior point on its largest frame; run; labels.
    ``crop``: the tracker's crops around objects; ``intensity``: the intensity window (None: robust
    percentiles, the default everywhere)."""
    source = open_image(stack.image, axes=stack.axes)
    seq = FrameSequence(source, axis=stack.axes[0], image_size=model.config.image_size, window=intensity)
    tracker = Tracker(model, seq, len(seq), seq.frame_hw, crop=crop)
    for obj in np.unique(stack.labels)[1:]:
        areas = (stack.labels == obj).sum(axis=(1, 2))
        f = int(areas.argmax())
        tracker.add_prompt(f, int(obj), Prompt(points=[click_point(stack.labels[f] == obj)], labels=[1]))
    labels = np.zeros(stack.labels.shape, np.uint32)
    tracker.run(LabelWriter(labels), **run)
    return labels, tracker


def per_frame_iou(pred, truth):
    """{obj: mean IoU over frames where truth or prediction has it}."""
    out = {}
    for obj in np.unique(truth)[1:]:
        scores = [
            iou(p == obj, t == obj) for p, t in zip(pred, truth) if (p == obj).any() or (t == obj).any()
        ]
        out[int(obj)] = float(np.mean(scores))
    return out


def test_3d_blobs_through_z(demo):
    """Separate 3D blobs (generated nuclei that do not touch). Measured with the shipped model:
    0.872, 0.873, 0.851 on seeds 9001-9003 (v1.2; v1.1: 0.87, 0.90, 0.87; docs/quality.md). The issue's target, 0.9 per frame,
    is not met yet: the stage-2 model given the truth's box on every slice, untracked, scored as
    it did tracked, so the gap is single-plane accuracy on small end slices. The bound sits just below
    the measured 0.872 (the same on the AVX-512 and AVX2 paths); a tracker that stops following objects
    scores about 0.1."""
    stack = nuclei_3d((32, 256, 256), n_objects=6, seed=HELD_OUT, touching=0.0)
    labels, _ = track_all(demo, stack)
    scores = per_frame_iou(labels, stack.labels)
    assert np.mean(list(scores.values())) >= 0.86, scores
    assert min(scores.values()) >= 0.8, scores  # every object is followed (measured: the worst 0.825)


def test_moving_blobs_through_t(demo):
    """The issue's target: mean per-frame IoU at least 0.9, over three held-out seeds (measured
    0.942, 0.950, 0.970 with the shipped v1.2 model, mean 0.954; v1.1: 0.95, 0.96, 0.97; an earlier model
    had 0.86, 0.76, 0.66)."""
    means = []
    for seed in range(HELD_OUT, HELD_OUT + 3):
        stack = moving_blobs((16, 256, 256), n_objects=4, seed=seed, appear_vanish=False)
        labels, _ = track_all(demo, stack)
        means.append(np.mean(list(per_frame_iou(labels, stack.labels).values())))
    assert np.mean(means) >= 0.9, means
    assert min(means) >= 0.8, means


def test_object_leaves_and_comes_back(demo):
    plane = nuclei_2d((256, 256), n_objects=6, seed=HELD_OUT)
    # the nucleus farthest from the others: this test is about leaving and returning, not
    # about telling touching nuclei apart
    gaps = {
        int(o): ndimage.distance_transform_edt(~((plane.labels > 0) & (plane.labels != o)))[
            plane.labels == o
        ].min()
        for o in np.unique(plane.labels)[1:]
    }
    obj = max(gaps, key=gaps.get)
    inside = plane.labels == obj
    hidden = plane.image.copy()
    hidden[inside] = np.median(plane.image[plane.labels == 0]).astype(plane.image.dtype)  # object gone
    present = [True] * 4 + [False] * 3 + [True] * 3
    image = np.stack([plane.image if p else hidden for p in present])
    seq = FrameSequence(open_image(image, axes="tyx"), axis="t", image_size=demo.config.image_size)
    tracker = Tracker(demo, seq, len(seq), seq.frame_hw)
    tracker.add_prompt(0, obj, Prompt(points=[click_point(inside)], labels=[1]))
    labels = np.zeros(image.shape, np.uint16)
    tracker.run(LabelWriter(labels))
    for f, p in enumerate(present):
        got = labels[f] == obj
        if p:
            assert iou(got, inside) >= 0.8, (f, iou(got, inside))
        else:
            assert not got.any(), f  # absent: empty, not a stale mask
    stats = {s.frame: s for s in tracker.stats(obj)}
    assert [stats[f].present for f in range(10)] == present


def test_crops_on_large_frames_beat_whole_frame_tracking(demo):
    """1024 x 1024 frames with small moving blobs: the 256-pixel demo model sees them 4x smaller
    when the frame is squashed; native-resolution crops keep them whole.

    Both runs use the data's full range as intensity window. The default robust window (0.5-99.5
    percentiles) suits frames crowded with nuclei, like the demo model's training data; three
    small blobs in a million pixels lie above its 99.5th percentile, so they saturate and the
    background noise fills the whole range, which the demo model was never shown."""
    stack = moving_blobs((8, 1024, 1024), n_objects=3, seed=HELD_OUT, appear_vanish=False, radius=(12, 18))
    full_range = (int(stack.image.min()), int(stack.image.max()))
    native, _ = track_all(demo, stack, crop=256, intensity=full_range)
    squashed, _ = track_all(demo, stack, crop=None, intensity=full_range)
    native_iou = np.mean(list(per_frame_iou(native, stack.labels).values()))
    squashed_iou = np.mean(list(per_frame_iou(squashed, stack.labels).values()))
    print(f"crops: {native_iou:.3f}  whole frame: {squashed_iou:.3f}")  # measured 0.94 / 0.06
    assert native_iou >= 0.6 and native_iou >= squashed_iou + 0.3
