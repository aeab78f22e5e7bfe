"""Cases and comparisons shared by the parity tests of the SAM2-family models (EdgeTAM,
EfficientTAM) against their authors' code: prompts for the image path, a short two-object clip
with a correction and a reverse pass, and logit / binary-mask comparisons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from napari_sam2.engine import Prompt

from .parity import LOGIT_ATOL, close, same_masks  # noqa: F401  (the parity tests take them from here)

SCORE_ATOL = 1e-5


def _prompts(s: float) -> dict:
    return {
        "one_click_multimask": [[[[0.3 * s, 0.4 * s]]], [[1]], False, True],
        "positive_and_negative": [[[[0.3 * s, 0.4 * s], [0.6 * s, 0.5 * s]]], [[1, 0]], False, False],
        "box": [[[[0.1 * s, 0.2 * s], [0.6 * s, 0.7 * s]]], [[2, 3]], False, False],
        "box_and_click": [
            [[[0.1 * s, 0.2 * s], [0.6 * s, 0.7 * s], [0.3 * s, 0.3 * s]]],
            [[2, 3, 1]],
            False,
            False,
        ],
        "click_with_previous_logits": [[[[0.3 * s, 0.4 * s]]], [[1]], True, False],
    }


H, W, FRAMES = 60, 80, 7


def write_clip(folder: Path, frames: int = FRAMES) -> Path:
    """Two bright discs drifting over a noisy background, as JPEG frames 0.jpg, 1.jpg, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    for i in range(frames):
        img = np.full((H, W, 3), 30.0)
        img[(yy - 30) ** 2 + (xx - 20 - 4 * i) ** 2 < 150] = 200
        img[(yy - 20) ** 2 + (xx - 60 + 2 * i) ** 2 < 60, 1] = 160
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.jpg")
    return folder


def clip_steps(corrected: int = 4, again: bool = True) -> list:
    """(reference step, our step) pairs; reference points are (x, y), ours (row, col).

    Object 1 from a click and object 2 from a box on frame 0; a forward pass; a negative click on
    object 1 and a positive one on object 2 (on its disc, which drifts 2 pixels left a frame) on
    frame ``corrected``; forward again from 0 if ``again``; reverse from ``corrected``."""
    x2 = 60 - 2 * corrected
    steps = [
        (
            ["points", 0, 1, [[22, 30]], [1], True],
            ("prompt", 0, 1, Prompt(points=[[30, 22]], labels=[1]), True),
        ),
        (["box", 0, 2, [50, 8, 72, 32]], ("prompt", 0, 2, Prompt(box=(8, 50, 32, 72)), True)),
        (["propagate", 0, False], ("propagate", 0, False)),
        (
            ["points", corrected, 1, [[40, 10]], [0], False],
            ("prompt", corrected, 1, Prompt(points=[[10, 40]], labels=[0]), False),
        ),
        (
            ["points", corrected, 2, [[x2, 20]], [1], False],
            ("prompt", corrected, 2, Prompt(points=[[20, x2]], labels=[1]), False),
        ),
    ]
    if again:
        steps.append((["propagate", 0, False], ("propagate", 0, False)))
    steps.append((["propagate", corrected, True], ("propagate", corrected, True)))
    return steps


STEPS = clip_steps()  # the 7-frame clip: 19 tracked frames
SHORT_FRAMES, SHORT_CORRECTED = 4, 2
SHORT_STEPS = clip_steps(SHORT_CORRECTED, again=False)  # 4 frames, 7 tracked frames: for the slow 1024 input


def clip_case(size: int) -> tuple[int, list, int]:
    """(frames, steps, corrected frame) of the video parity clip for a model input ``size``: the
    7-frame clip, or at 1024 (where the 7-frame clip takes about four times as long as at 512 on a
    CPU) the 4-frame clip with the same kinds of step apart from the second forward pass."""
    if size >= 1024:
        return SHORT_FRAMES, SHORT_STEPS, SHORT_CORRECTED
    return FRAMES, STEPS, 4


def assert_frame_equal(ref_ids, ref_masks, ours_logits: dict) -> None:
    """One frame of the authors' video predictor (object ids, (N, 1, H, W) logits) against ours
    ({object id: logits}); an object we do not report must be absent (-1024) in theirs."""
    for k, obj_id in enumerate(ref_ids):
        r = ref_masks[k, 0]
        if obj_id not in ours_logits:
            assert (r == -1024).all()
            continue
        close(r, ours_logits[obj_id])
        same_masks(r, ours_logits[obj_id])


def replay_clip(tracker, steps: list, records: list) -> tuple[int, int]:
    """Run our side of ``steps`` on ``tracker`` and compare every answer with the authors' ``records``
    (one per step: {frame: (ids, masks)}) -> (tracked frames showing an object, tracked frames)."""
    seen_masks = tracked = 0
    for (_, step), record in zip(steps, records, strict=True):
        if step[0] == "prompt":
            _, frame, obj, prompt, clear = step
            ids, masks = record[frame]
            assert_frame_equal(ids, masks, tracker.add_prompt(frame, obj, prompt, clear=clear))
        else:
            _, start, reverse = step
            out = dict(tracker.propagate(start=start, reverse=reverse))
            assert list(out) == list(record)
            tracked += len(record)
            for t, (ids, masks) in record.items():
                assert_frame_equal(ids, masks, out[t])
                seen_masks += int((masks > 0).any())
    return seen_masks, tracked
