"""Parity of our EfficientTAM with the authors' code (``efficient-track-anything`` 1.0), identical
random weights.

The authors' package installs as ``sam2`` like Meta's reference, so it runs in a subprocess
(``family_oracle.py``) from its own folder, ``.oracles/efficienttam`` (``scripts/setup.sh``), or the
folder named by ``NAPARI_SAM2_ORACLE_EFFICIENTTAM``. Its wheel ships no configs, so the oracle
registers the architecture itself (``family_oracle._register_efficienttam``). Logits within 1e-4,
binary masks identical except where a logit lies within 1e-4 of the threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from helpers.family_cases import (
    LOGIT_ATOL,
    SCORE_ATOL,
    H,
    W,
    _prompts,
    clip_case,
    close,
    replay_clip,
    same_masks,
    write_clip,
)
from napari_sam2.engine import Tracker
from napari_sam2.model import get_config
from napari_sam2.model.checkpoint import CheckpointError, identify_variant, load_checkpoint, read_state_dict

pytestmark = pytest.mark.reference

ROOT = Path(__file__).resolve().parents[1]
ORACLE = Path(os.environ.get("NAPARI_SAM2_ORACLE_EFFICIENTTAM", ROOT / ".oracles" / "efficienttam"))

if not (ORACLE / "sam2" / "modeling" / "backbones" / "vitdet.py").is_file():
    message = f"the authors' EfficientTAM (efficient-track-anything) is not installed in {ORACLE}; run scripts/setup.sh"
    if os.environ.get("CI"):
        raise RuntimeError(message)  # CI must have the oracle
    pytest.skip(message, allow_module_level=True)

# our variant -> the authors' memory cross-attention class in its config
CROSS_ATTENTION = {"": "RoPEAttention", "_1": "EfficientRoPEAttention1", "_2": "EfficientRoPEAttention2"}
TRUNKS = {"ti": {"embed_dim": 192, "num_heads": 3}, "s": {"embed_dim": 384, "num_heads": 6}}


def run_oracle(tmp: Path, job: dict, trunk: str = "ti", kind: str = "") -> dict:
    spec = {**TRUNKS[trunk], "cross_attention": CROSS_ATTENTION[kind]}
    job = {
        "efficienttam": spec,
        "checkpoint": str(tmp / "efficienttam.pt"),
        "out": str(tmp / "out.pt"),
        **job,
    }
    (tmp / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": ""}  # nothing may shadow the oracle's own ``sam2``
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("family_oracle.py")),
            str(ORACLE),
            str(tmp / "job.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(job["out"], weights_only=False)


def ours(tmp: Path, image_size: int, trunk: str = "ti", kind: str = ""):
    config = replace(get_config(f"efficienttam_{trunk}{kind}"), image_size=image_size)
    return load_checkpoint(tmp / "efficienttam.pt", config=config).eval()


# ---------------------------------------------------------------------------------------------- image path

SIZE = 512


@pytest.fixture(scope="module", params=["ti", "s"])
def image_case(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"efficienttam_{request.param}_image")
    ref = run_oracle(
        tmp, {"kind": "image", "image_size": SIZE, "seed": 3, "prompts": _prompts(SIZE)}, request.param
    )
    model = ours(tmp, SIZE, request.param)
    with torch.inference_mode():
        feats = model.encode_image(ref["x"])
    return tmp, ref, model, feats, request.param


def test_official_layout_loads_strictly_and_is_recognised(image_case):
    tmp, _, _, _, trunk = image_case
    state, stored = read_state_dict(tmp / "efficienttam.pt")
    assert stored is None and identify_variant(state) == f"efficienttam_{trunk}"
    model = load_checkpoint(tmp / "efficienttam.pt")  # no config given: recognised from the weights
    assert model.config.name == f"efficienttam_{trunk}" and model.config.image_size == 1024
    assert len(state) == len(model.state_dict()) == 455


def test_wrong_file_for_the_name_says_which_model_it_is(image_case, tmp_path):
    tmp, _, _, _, trunk = image_case
    with pytest.raises(CheckpointError, match=f"looks like 'efficienttam_{trunk}'"):
        load_checkpoint(tmp / "efficienttam.pt", config="sam2.1_hiera_tiny")
    other = "s" if trunk == "ti" else "ti"
    with pytest.raises(
        CheckpointError, match=f"does not fit the model 'efficienttam_{other}'.*entries of another shape"
    ):
        load_checkpoint(tmp / "efficienttam.pt", config=f"efficienttam_{other}")
    state, _ = read_state_dict(tmp / "efficienttam.pt")
    del state["image_encoder.trunk.pos_embed"]
    torch.save({"model": state}, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match=r"1 missing entries \(image_encoder.trunk.pos_embed\)"):
        load_checkpoint(tmp_path / "cut.pt", config=f"efficienttam_{trunk}")


def test_trunk_neck_and_embeddings(image_case):
    _, ref, model, feats, _ = image_case
    with torch.inference_mode():
        (level,) = model.image_encoder.trunk(ref["x"])
    (r,) = ref["trunk"]
    close(r, level, LOGIT_ATOL * max(1.0, r.abs().max().item() / 10))
    assert len(ref["fpn"]) == 1  # one level: nothing at strides 4 and 8
    close(ref["fpn"][0], feats.embed)
    close(ref["pos"][0], feats.pos)
    assert feats.high_res[0].shape[1] == feats.high_res[1].shape[1] == 0
    assert feats.embed.abs().mean() > 0.01


@pytest.mark.parametrize("prompt", list(_prompts(1)))
def test_decoder_outputs(image_case, prompt):
    _, ref, model, feats, _ = image_case
    coords, labels, _, multimask = _prompts(SIZE)[prompt]
    r = ref["decoded"][prompt]
    with torch.inference_mode():
        o = model.decode(
            model.embed_without_memory(feats),
            feats.high_res,
            torch.tensor(coords, dtype=torch.float32),
            torch.tensor(labels, dtype=torch.int32),
            r["mask_in"],
            multimask,
        )
    close(r["masks"], o.masks)
    same_masks(r["masks"], o.masks)
    close(r["iou"], o.iou, SCORE_ATOL)
    close(r["score"], o.object_score, SCORE_ATOL)
    close(r["tokens"], o.tokens)
    assert (r["masks"] > 0).any() and (r["masks"] < 0).any()


# ---------------------------------------------------------------------------------------------- video path


def video_job(size: int) -> dict:
    """Corrections are kept as prompted frames, which is what ours always does."""
    return {
        "kind": "video",
        "image_size": size,
        "seed": 5,
        "overrides": {"add_all_frames_to_correct_as_cond": "true"},
        "steps": [ref for ref, _ in clip_case(size)[1]],
    }


@pytest.mark.parametrize(
    ("trunk", "kind", "size"),
    [
        ("ti", "", 512),
        ("ti", "_1", 512),
        ("ti", "_2", 512),
        ("s", "_1", 512),  # the Small trunk through the video path (memory parts as Ti's)
        pytest.param("ti", "_1", 1024, marks=[pytest.mark.slow, pytest.mark.timeout(2400)]),
    ],
)
def test_clip_two_objects_correction_and_reverse(tmp_path, trunk, kind, size):
    """7 frames; object 1 from a click and object 2 from a box on frame 0; forward propagation;
    correction clicks for both objects on frame 4; forward again; reverse from frame 4. At 1024
    (about four times as slow) 4 frames, the corrections on frame 2 and no second forward pass. With the
    efficient cross-attention (``_1``, ``_2``) frames that see two or more memories attend to pooled
    memories, so most frames exercise it."""
    frames, steps, corrected = clip_case(size)
    ref = run_oracle(
        tmp_path, {**video_job(size), "clip": str(write_clip(tmp_path / "clip", frames))}, trunk, kind
    )
    images = ref["images"]
    tracker = Tracker(ours(tmp_path, size, trunk, kind), lambda i: images[i], frames, (H, W))
    seen_masks, tracked = replay_clip(tracker, steps, ref["records"])
    assert seen_masks == tracked  # an object on every tracked frame, so agreement means something
    assert list(tracker.tracks[1].cond) == [0, corrected] and list(tracker.tracks[2].cond) == [0, corrected]
