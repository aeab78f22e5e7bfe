"""When the model finds no object at a prompt, the user is told and nothing is erased: the
keyframe keeps the labels it had, and a prompted keyframe's mask wins over other objects' tracked
masks on that frame. Random weights whose object-score head says "absent" (or "present") for sure."""

from __future__ import annotations

import numpy as np
import torch

from helpers import H, W, make_model
from napari_sam2.api import propagate, segment
from napari_sam2.engine import LabelWriter, Prompt, Tracker
from napari_sam2.engine.tracker import NOT_FOUND_HINT

HINT = "the model found no object at the click; try a box, more clicks or an official model"


def clip(n: int = 8) -> torch.Tensor:
    torch.manual_seed(5)
    return torch.randn(n, 3, 64, 64)  # model inputs of frames of (H, W) = (48, 56)


def test_tracker_keeps_the_keyframe_labels_when_the_click_finds_nothing():
    frames = clip()
    tracker = Tracker(make_model(score_bias=-20.0), lambda i: frames[i], 8, (H, W))
    tracker.add_prompt(3, 1, Prompt(points=[[30, 30]], labels=[1]))
    labels = np.zeros((8, H, W), np.uint8)
    labels[3, 20:40, 20:40] = 1  # what the user accepted on the keyframe
    labels[6, :5, :5] = 1  # stale labels on a tracked frame: cleared there, the object is absent
    accepted = labels[3].copy()
    report = tracker.run(LabelWriter(labels))
    assert np.array_equal(labels[3], accepted)
    assert not labels[6].any()
    assert report.not_found == [(3, 1)]
    assert report.message == f"object 1 on frame 3: {HINT}" and NOT_FOUND_HINT == HINT


def test_a_keyframe_mask_wins_over_other_objects_tracked_masks_on_its_frame():
    frames = clip()
    tracker = Tracker(make_model(score_bias=20.0, seed=1), lambda i: frames[i], 8, (H, W))
    tracker.add_prompt(2, 1, Prompt(points=[[20, 20]], labels=[1]))
    tracker.add_prompt(3, 2, Prompt(points=[[44, 44]], labels=[1]))
    keyed = tracker.frame_logits(2)[1].numpy() > 0  # object 1's prompted mask on its keyframe
    tracked = {}
    labels = np.zeros((8, H, W), np.uint8)
    for frame, patches in tracker.track():
        if frame == 2:
            tracked = {o: p.full((H, W)) for o, p in patches.items()}
        LabelWriter(labels).write((frame,), patches)
    assert keyed.sum() > 50
    assert np.array_equal(labels[2] == 1, keyed)  # all of it, untouched by object 2
    assert not (tracked[2][keyed] > 0).any()
    assert (labels[2] == 2).any()  # object 2 is still tracked on the rest of the frame


def test_api_results_say_when_the_model_found_nothing(monkeypatch):
    import napari_sam2.api.core as core

    class NothingFound(core.ImagePredictor):  # the real predictor, answering with an empty mask
        def predict(self, prompt, **kwargs):
            got = super().predict(prompt, **kwargs)
            got.logits[:] = -1.0  # every candidate empty (masks are logits > 0)
            return got

    image = np.random.default_rng(0).integers(0, 1000, (4, H, W)).astype(np.uint16)
    labels = np.zeros((4, H, W), np.uint16)
    labels[1, 30:40, 30:40] = 1  # the user's own mask of object 1 there
    before = labels.copy()
    click = Prompt(points=[[35, 35]], labels=[1])
    model = make_model()
    found = segment(image, {(1, 1): click}, model=model)
    assert found.messages == [] and (found.labels[1] == 1).any()
    monkeypatch.setattr(core, "ImagePredictor", NothingFound)
    result = segment(image, {(1, 1): click}, model=model, labels=labels)
    assert np.array_equal(result.labels, before)  # nothing written, nothing erased
    assert result.messages == [f"object 1 on frame [1]: {HINT}"]
    # with a negative click an empty mask is an answer (the user took the object away): written
    removal = Prompt(points=[[35, 35], [36, 36]], labels=[1, 0])
    result = segment(image, {(1, 1): removal}, model=model, labels=labels)
    assert result.messages == [] and not (result.labels == 1).any()


def test_api_propagation_says_so_and_keeps_the_keyframe():
    image = np.random.default_rng(0).integers(0, 1000, (4, H, W)).astype(np.uint16)
    labels = np.zeros((4, H, W), np.uint16)
    labels[1, 10:20, 10:20] = 1
    result = propagate(image, {(1, 1): Prompt(points=[[15, 15]], labels=[1])}, model=make_model(score_bias=-20.0),
                       labels=labels)  # fmt: skip
    assert (result.labels[1] == 1).sum() == 100
    assert result.messages == [f"object 1 on frame [1]: {HINT}"]
