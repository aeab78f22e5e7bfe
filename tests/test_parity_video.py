"""Parity with Meta's reference video predictor on the memory path, identical random weights.

Where the reference has a known bug (SAM2_SPEC section 9) ours must not have it; those tests
show the reference's behaviour and ours side by side instead of reproducing the bug. Runs on
``NAPARI_SAM2_TEST_DEVICE`` (default CPU; see conftest.py), with the same tolerances there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TEST_DEVICE, require_reference
from napari_sam2.engine import Prompt, Tracker
from napari_sam2.model import Memory
from reference import build_reference, ours_from

require_reference()
pytestmark = pytest.mark.reference

SIZE, H, W = 256, 60, 80
# fp32 logits, pointers and memory features: the image path's tolerances (test_parity_image.py
# says how they were measured across CPU kernels), as the memory path runs the same kinds of
# layers at the same widths. Binary masks agree except where the reference's logit lies within
# LOGIT_ATOL of 0, where another CPU's kernels may put it on the other side.
LOGIT_ATOL = 1e-4
SCORE_ATOL = 1e-5
# Memories are stored in bfloat16 (8-bit significand): two fp32 values a hair apart can round to
# neighbouring bfloat16 numbers, one unit in the last place apart, which is at most 2**-7 (0.78 %)
# of the value; rtol 1e-2 allows exactly one such step, atol 1e-3 the same near zero.
MEMORY_RTOL, MEMORY_ATOL = 1e-2, 1e-3
# Sine position encodings of fixed coordinates, values in [-1, 1]: sin/cos differ by a few units
# in the last place (6e-8 each) between vectorised and scalar kernels; 1e-6 is about 16 of them.
POS_ATOL = 1e-6


def write_clip(folder: Path, frames: int) -> Path:
    """A bright disc moving right over a noisy background, as JPEG frames 0.jpg, 1.jpg, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    for i in range(frames):
        img = np.full((H, W, 3), 30.0)
        img[(yy - 30) ** 2 + (xx - 20 - 4 * i) ** 2 < 150] = 200
        img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.jpg")
    return folder


def setup(tmp_path, variant, frames=7, **overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    ref = build_reference(variant, SIZE, seed=1, video=True, device=TEST_DEVICE, **overrides)
    ours = ours_from(ref, tmp_path / "w.pt", variant, SIZE, device=TEST_DEVICE)
    state = ref.init_state(str(write_clip(tmp_path / "clip", frames)))
    images = state["images"]  # the reference's own preprocessing, so both see the same input
    return ref, state, Tracker(ours, lambda i: images[i], frames, (H, W))


def assert_frame_equal(ref_masks, ref_ids, ours: dict):
    for k, obj_id in enumerate(ref_ids):
        r = ref_masks[k, 0]
        if obj_id not in ours:
            assert (r == -1024).all()
            continue
        diff = (r - ours[obj_id]).abs().max().item()
        assert diff <= LOGIT_ATOL, f"object {obj_id}: max abs diff {diff:.3g}"
        flipped = ((r > 0) != (ours[obj_id] > 0)) & (r.abs() > LOGIT_ATOL)
        assert not flipped.any(), (
            f"object {obj_id}: {int(flipped.sum())} pixels differ away from the threshold"
        )


def assert_state_equal(ref, state, tracker: Tracker):
    """Every stored per-frame result: logits, pointer, object score, bfloat16 memory."""
    for idx, obj_id in enumerate(state["obj_ids"]):
        track = tracker.tracks[obj_id]
        out = state["output_dict_per_obj"][idx]
        assert set(out["cond_frame_outputs"]) == set(track.cond)
        assert set(out["non_cond_frame_outputs"]) == set(track.tracked_only)
        pairs = [(out["cond_frame_outputs"][t], track.cond[t]) for t in track.cond]
        pairs += [(out["non_cond_frame_outputs"][t], track.tracked_only[t]) for t in track.tracked_only]
        for r, o in pairs:
            assert (r["pred_masks"] - o.low_res).abs().max() <= LOGIT_ATOL
            assert (r["obj_ptr"] - o.obj_ptr).abs().max() <= LOGIT_ATOL
            assert (r["object_score_logits"] - o.object_score).abs().max() <= SCORE_ATOL
            assert r["maskmem_features"].dtype == o.memory.dtype == torch.bfloat16
            torch.testing.assert_close(
                r["maskmem_features"].float(), o.memory.float(), rtol=MEMORY_RTOL, atol=MEMORY_ATOL
            )


@pytest.mark.parametrize("variant", ["sam2.1_hiera_tiny", "sam2_hiera_tiny"])
def test_clip_two_objects_correction_and_reverse(tmp_path, variant):
    """7 frames; object 1 from a click, object 2 from a box; a correction click on a tracked frame;
    forward, again, then reverse propagation. The reference is configured to keep corrections as
    conditioning frames (``add_all_frames_to_correct_as_cond``), which is what ours always does."""
    ref, st, tr = setup(tmp_path, variant, add_all_frames_to_correct_as_cond=True)

    _, ids, m = ref.add_new_points_or_box(
        st, 0, 1, points=np.array([[22, 30]], np.float32), labels=np.array([1], np.int32)
    )
    assert_frame_equal(m, ids, tr.add_prompt(0, 1, Prompt(points=[[30, 22]], labels=[1])))  # (row, col)
    _, ids, m = ref.add_new_points_or_box(
        st, 1, 2, box=np.array([10, 15, 40, 45], np.float32)
    )  # (x0, y0, x1, y1)
    assert_frame_equal(m, ids, tr.add_prompt(1, 2, Prompt(box=(15, 10, 45, 40))))

    r = {t: (i, m) for t, i, m in ref.propagate_in_video(st, start_frame_idx=1)}
    o = dict(tr.propagate(start=1))
    assert list(r) == list(o) == [1, 2, 3, 4, 5, 6]
    for t, (i, m) in r.items():
        assert_frame_equal(m, i, o[t])
    before = {t: o[t][1].clone() for t in o}

    _, ids, m = ref.add_new_points_or_box(
        st,
        4,
        1,
        points=np.array([[40, 10]], np.float32),
        labels=np.array([0], np.int32),
        clear_old_points=False,
    )
    assert_frame_equal(m, ids, tr.add_prompt(4, 1, Prompt(points=[[10, 40]], labels=[0]), clear=False))

    for start, reverse in ((1, False), (4, True)):
        r = {t: (i, m) for t, i, m in ref.propagate_in_video(st, start_frame_idx=start, reverse=reverse)}
        o = dict(tr.propagate(start=start, reverse=reverse))
        assert list(r) == list(o)
        for t, (i, m) in r.items():
            assert_frame_equal(m, i, o[t])
    assert_state_equal(ref, st, tr)
    assert list(tr.tracks[1].cond) == [0, 4]
    assert any(not torch.equal(before[t], tr.frame_logits(t)[1]) for t in (5, 6))  # the correction counts


def test_memory_encoder_and_memory_attention_modules(tmp_path):
    ref, _, tr = setup(tmp_path, "sam2.1_hiera_tiny", frames=2)
    ours = tr.model
    feats = tr.features(0)
    torch.manual_seed(0)
    mask = (torch.randn(1, 1, SIZE, SIZE) * 5).to(TEST_DEVICE)
    r_mem = ref.memory_encoder(feats.embed, mask, skip_mask_sigmoid=False)
    o_mem, o_pos = ours.memory_encoder(feats.embed, torch.sigmoid(mask))
    assert (r_mem["vision_features"] - o_mem).abs().max() <= LOGIT_ATOL
    assert (r_mem["vision_pos_enc"][0] - o_pos).abs().max() <= POS_ATOL

    # two spatial memories (4 x 4 grid of 64-d tokens each) and 3 pointers split into 4 tokens each
    e = SIZE // 16
    mem = torch.randn(2 * e * e + 12, 1, 64).to(TEST_DEVICE)
    mem_pos = torch.randn(mem.shape).to(TEST_DEVICE)
    curr, curr_pos = feats.embed.flatten(2).permute(2, 0, 1), feats.pos.flatten(2).permute(2, 0, 1)
    r_out = ref.memory_attention(
        curr=[curr], curr_pos=[curr_pos], memory=mem, memory_pos=mem_pos, num_obj_ptr_tokens=12
    )
    o_out = ours.memory_attention(feats.embed, feats.pos, mem.transpose(0, 1), mem_pos.transpose(0, 1), 12)
    assert (r_out.permute(1, 2, 0).reshape(o_out.shape) - o_out).abs().max() <= LOGIT_ATOL

    # the assembled memory of one frame (spatial memories + pointers + temporal encodings)
    low = torch.randn(1, 1, SIZE // 4, SIZE // 4).to(TEST_DEVICE)
    score = torch.tensor([[1.0]], device=TEST_DEVICE)
    r_feats, r_pos = ref._encode_new_memory(
        [feats.embed.flatten(2).permute(2, 0, 1)],
        [(e, e)],
        torch.nn.functional.interpolate(low, (SIZE, SIZE), mode="bilinear"),
        score,
        True,
    )
    o_feats, o_pos = ours.encode_memory(feats, low, score, from_clicks=True)
    assert (r_feats - o_feats).abs().max() <= LOGIT_ATOL
    assert (r_pos[0] - o_pos).abs().max() <= POS_ATOL
    cond = ours.condition_on_memory(
        feats,
        [Memory(o_feats, o_pos, 0)],
        torch.randn(1, 2, 256).to(TEST_DEVICE),
        torch.tensor([0.0, 3.0]),
        6,
    )
    assert cond.shape == feats.embed.shape and torch.isfinite(cond).all()


def _click_and_propagate(ref, st, tr, frame=0):
    ref.add_new_points_or_box(
        st, frame, 1, points=np.array([[22, 30]], np.float32), labels=np.array([1], np.int32)
    )
    tr.add_prompt(frame, 1, Prompt(points=[[30, 22]], labels=[1]))
    r = {t: m[0, 0].clone() for t, _, m in ref.propagate_in_video(st)}
    o = {t: m[1].clone() for t, m in tr.propagate()}
    return r, o


def test_correction_click_is_kept_unlike_reference_default(tmp_path):
    """Reference bug (spec 9.2, sam2 issues 719/731): by default a click on an already tracked
    frame is overwritten by the next propagation, so it changes nothing. Ours keeps it."""
    ref, st, tr = setup(tmp_path, "sam2.1_hiera_tiny")  # reference defaults
    r_before, o_before = _click_and_propagate(ref, st, tr)
    for t in r_before:
        assert (r_before[t] - o_before[t]).abs().max() <= LOGIT_ATOL  # identical until the correction

    neg = np.array([[25, 28]], np.float32)  # a negative click inside the tracked object on frame 3
    ref.add_new_points_or_box(st, 3, 1, points=neg, labels=np.array([0], np.int32))
    tr.add_prompt(3, 1, Prompt(points=[[28, 25]], labels=[0]))
    r_after = {t: m[0, 0] for t, _, m in ref.propagate_in_video(st)}
    o_after = {t: m[1] for t, m in tr.propagate()}
    assert all(torch.equal(r_before[t], r_after[t]) for t in r_before)  # the reference dropped the click
    assert not torch.allclose(o_before[3], o_after[3])  # ours: the corrected frame keeps its correction
    assert any(not torch.allclose(o_before[t], o_after[t]) for t in (4, 5, 6))  # and it propagates
    assert 3 in tr.tracks[1].cond


def test_reverse_from_last_frame_has_no_dtype_crash(tmp_path):
    """Reference bug (spec 9.4, sam2 issues 308/577): in float32 it crashes ('mat1 and mat2 must
    have the same dtype') when a frame has bfloat16 spatial memories but no object pointer, e.g.
    reverse propagation starting at the last frame. Ours casts memories to the compute dtype."""
    ref, st, tr = setup(tmp_path, "sam2.1_hiera_tiny")
    _click_and_propagate(ref, st, tr)
    with pytest.raises(RuntimeError, match="dtype"):
        list(ref.propagate_in_video(st, start_frame_idx=6, reverse=True))
    o = dict(tr.propagate(start=6, reverse=True))
    assert list(o) == [6, 5, 4, 3, 2, 1, 0]
    assert all(torch.isfinite(m[1]).all() for m in o.values())
    # frames that the reference can still compute (they have pointers) agree with it
    st2_ref, st2, tr2 = setup(tmp_path / "b", "sam2.1_hiera_tiny")
    _click_and_propagate(st2_ref, st2, tr2)
    r = {t: m[0, 0] for t, _, m in st2_ref.propagate_in_video(st2, start_frame_idx=5, reverse=True)}
    o2 = {t: m[1] for t, m in tr2.propagate(start=5, reverse=True)}
    for t in r:
        assert (r[t] - o2[t]).abs().max() <= LOGIT_ATOL


def test_one_frame_sam21_correction_gives_no_nan(tmp_path):
    """Reference bug (spec 9.11): SAM 2.1 normalises pointer distances by min(num_frames, 16) - 1,
    which is 0/0 = NaN in a one-frame video; a correction click then yields an empty mask and a
    NaN pointer. Ours clamps the divisor to 1."""
    ref, st, tr = setup(tmp_path, "sam2.1_hiera_tiny", frames=1, add_all_frames_to_correct_as_cond=True)
    _click_and_propagate(ref, st, tr)
    second = Prompt(points=[[30, 24]], labels=[1])
    _, _, r_mask = ref.add_new_points_or_box(
        st,
        0,
        1,
        points=np.array([[24, 30]], np.float32),
        labels=np.array([1], np.int32),
        clear_old_points=False,
    )
    o_mask = tr.add_prompt(0, 1, second, clear=False)[1]
    assert (r_mask == -1024).all()  # the reference: the object vanished
    assert torch.isnan(st["temp_output_dict_per_obj"][0]["cond_frame_outputs"][0]["obj_ptr"]).all()
    assert torch.isfinite(o_mask).all() and torch.isfinite(tr.tracks[1].pending[0].obj_ptr).all()
    assert (o_mask > 0).any()


@pytest.mark.parametrize("retain", ["auto", 2])
def test_correction_after_memory_was_released_matches_reference(tmp_path, retain):
    """Issue 24.1: 9 frames, object 1 clicked and object 2 boxed on frame 0, a forward pass (which
    releases frame 1's memory at frame 8 with the default ``retain``), a negative correction on
    frame 7 (conditioned on frames 1-6, as SAM2 does), then forward from 0, reverse from 7 and
    forward from 4. Released memories are recomputed when a later step needs them, so the answers
    equal the reference's (which keeps everything) while RAM stays bounded by ``retain``."""
    frames = 9
    ref = build_reference(
        "sam2.1_hiera_tiny", SIZE, seed=1, video=True, add_all_frames_to_correct_as_cond=True
    )
    ours = ours_from(ref, tmp_path / "w.pt", "sam2.1_hiera_tiny", SIZE)
    st = ref.init_state(str(write_clip(tmp_path / "clip", frames)))
    images = st["images"]
    tr = Tracker(ours, lambda i: images[i], frames, (H, W), retain=retain)

    _, ids, m = ref.add_new_points_or_box(
        st, 0, 1, points=np.array([[20, 30]], np.float32), labels=np.array([1], np.int32)
    )
    assert_frame_equal(m, ids, tr.add_prompt(0, 1, Prompt(points=[[30, 20]], labels=[1])))
    _, ids, m = ref.add_new_points_or_box(st, 0, 2, box=np.array([5, 15, 35, 45], np.float32))
    assert_frame_equal(m, ids, tr.add_prompt(0, 2, Prompt(box=(15, 5, 45, 35))))

    def both(**kw):
        r = {t: (i, m) for t, i, m in ref.propagate_in_video(st, **kw)}
        o = dict(tr.propagate(start=kw.get("start_frame_idx"), reverse=kw.get("reverse", False)))
        assert list(r) == list(o)
        for t, (i, m) in r.items():
            assert_frame_equal(m, i, o[t])

    both()
    assert tr.tracks[1].tracked_only[1].memory is None  # released behind the pass: RAM stays bounded
    _, ids, m = ref.add_new_points_or_box(
        st,
        7,
        1,
        points=np.array([[48, 30]], np.float32),
        labels=np.array([0], np.int32),
        clear_old_points=False,
    )
    assert_frame_equal(m, ids, tr.add_prompt(7, 1, Prompt(points=[[30, 48]], labels=[0]), clear=False))
    assert tr.tracks[1].tracked_only[1].memory is None  # recomputed for the correction, then released again
    both(start_frame_idx=0)
    both(start_frame_idx=7, reverse=True)
    both(start_frame_idx=4)  # a pass that starts mid-sequence reads memories from the previous pass
    kept = [t for t, r in tr.tracks[1].tracked_only.items() if r.memory is not None]
    assert len(kept) <= tr.retain + 1
