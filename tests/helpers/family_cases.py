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


def write_clip(folder: Path) -> Path:
    """Two bright discs drifting over a noisy background, as JPEG frames 0.jpg, 1.jpg, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    for i in range(FRAMES):
        img = np.full((H, W, 3), 30.0)
        img[(yy - 30) ** 2 + (xx - 20 - 4 * i) ** 2 < 150] = 200
        img[(yy - 20) ** 2 + (xx - 60 + 2 * i) ** 2 < 60, 1] = 160
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.jpg")
    return folder


# (reference step, our step); reference points are (x, y), ours (row, col)
STEPS = [
    (["points", 0, 1, [[22, 30]], [1], True], ("prompt", 0, 1, Prompt(points=[[30, 22]], labels=[1]), True)),
    (["box", 0, 2, [50, 8, 72, 32]], ("prompt", 0, 2, Prompt(box=(8, 50, 32, 72)), True)),
    (["propagate", 0, False], ("propagate", 0, False)),
    (
        ["points", 4, 1, [[40, 10]], [0], False],
        ("prompt", 4, 1, Prompt(points=[[10, 40]], labels=[0]), False),
    ),
    (
        ["points", 4, 2, [[52, 20]], [1], False],
        ("prompt", 4, 2, Prompt(points=[[20, 52]], labels=[1]), False),
    ),
    (["propagate", 0, False], ("propagate", 0, False)),
    (["propagate", 4, True], ("propagate", 4, True)),
]
