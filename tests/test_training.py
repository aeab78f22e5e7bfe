"""Training and fine-tuning: loss goes down, reproducible, freezing, checkpoints, input errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import require_reference
from napari_sam2.model import Sam2Model
from napari_sam2.model.checkpoint import load_checkpoint
from napari_sam2.model.config import DEMO_CONFIG
from napari_sam2.training import _prompts as tp
from napari_sam2.training.finetune import TrainingConfig, TrainingError, TrainingPair, train
from reference import build_reference

TINY = replace(DEMO_CONFIG, name="demo-64", image_size=64)


@pytest.fixture(autouse=True)
def _no_grad():
    """Training needs autograd: replaces conftest's inference-mode fixture in this module."""
    yield


def _discs(shape=(64, 64), centres=((20, 20), (44, 40)), radius=8, seed=0):
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    for i, (r, c) in enumerate(centres, start=1):
        labels[(rr - r) ** 2 + (cc - c) ** 2 <= radius**2] = i
    image = (100 + 800 * (labels > 0) + rng.normal(0, 30, shape)).clip(0).astype(np.uint16)
    return image, labels


def _stack(frames=4):
    planes = [_discs(centres=((20 + 2 * z, 20), (44, 40 - z)), seed=z) for z in range(frames)]
    return np.stack([p[0] for p in planes]), np.stack([p[1] for p in planes])


def _model(seed=0):
    torch.manual_seed(seed)
    return Sam2Model(TINY)


FAST = TrainingConfig(
    steps=3, lr=1e-3, warmup_steps=1, max_objects=2, correction_rounds=1, clip_frames=2, seed=1
)


def test_few_steps_lower_the_loss():
    image, labels = _discs()
    cfg = replace(FAST, steps=30, correction_rounds=0, prob_box=0.0, prob_mask=0.0, augment=False)
    result = train(_model(), [(image, labels)], cfg, device="cpu")
    assert result.steps == 30 and not result.cancelled
    assert np.mean(result.losses[-5:]) < 0.7 * np.mean(result.losses[:5])


def test_same_seed_same_losses_on_stacks():
    data = [_discs(), TrainingPair(*_stack(), axes="zyx")]
    a = train(_model(), data, FAST, device="cpu").losses
    b = train(_model(), data, FAST, device="cpu").losses
    c = train(_model(), data, replace(FAST, seed=2), device="cpu").losses
    assert a == b and a != c and all(np.isfinite(a))


def test_freeze_keeps_frozen_parameters_bit_identical():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, [_discs()], replace(FAST, freeze=("image_encoder", "memory_attention")), device="cpu")
    after = model.state_dict()
    frozen = [k for k in before if k.startswith(("image_encoder.", "memory_attention."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(
        before["sam_mask_decoder.iou_token.weight"], after["sam_mask_decoder.iou_token.weight"]
    )
    assert all(p.requires_grad for p in model.parameters()) and not model.training


def test_progress_and_cancel():
    calls = []
    result = train(
        _model(),
        [_discs()],
        replace(FAST, steps=10),
        device="cpu",
        progress=lambda step, total, loss: calls.append((step, total, loss)),
        cancel=lambda: len(calls) >= 2,
    )
    assert result.cancelled and result.steps == 2 and len(result.losses) == 2
    assert [c[:2] for c in calls] == [(1, 10), (2, 10)]


def test_checkpoint_loads_strictly_into_our_model(tmp_path):
    model = _model()
    result = train(model, [_discs()], replace(FAST, steps=1), device="cpu", out=tmp_path / "ft.pt")
    again = load_checkpoint(result.checkpoint)
    assert again.config == TINY
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


DEMO_REFERENCE_OVERRIDES = {
    "image_encoder.trunk.embed_dim": 24,
    "image_encoder.trunk.num_heads": 1,
    "image_encoder.trunk.stages": "[1,2,3,1]",
    "image_encoder.trunk.global_att_blocks": "[5]",
    "image_encoder.trunk.window_spec": "[8,4,8,4]",
    "image_encoder.trunk.window_pos_embed_bkg_spatial_size": "[8,8]",
    "image_encoder.neck.d_model": 64,
    "image_encoder.neck.backbone_channel_list": "[192,96,48,24]",
    "image_encoder.neck.position_encoding.num_pos_feats": 64,
    "memory_attention.d_model": 64,
    "memory_attention.num_layers": 2,
    "memory_attention.layer.d_model": 64,
    "memory_attention.layer.dim_feedforward": 256,
    "memory_attention.layer.self_attention.embedding_dim": 64,
    "memory_attention.layer.cross_attention.embedding_dim": 64,
    "memory_attention.layer.cross_attention.kv_in_dim": 32,
    "memory_encoder.out_dim": 32,
    "memory_encoder.in_dim": 64,
    "memory_encoder.position_encoding.num_pos_feats": 32,
    "memory_encoder.mask_downsampler.embed_dim": 64,
    "memory_encoder.fuser.layer.dim": 64,
    "memory_encoder.fuser.num_layers": 1,
}
"""Hydra overrides that make Meta's sam2.1_hiera_tiny config build DEMO_CONFIG's network."""


@pytest.mark.reference
def test_trained_checkpoint_loads_strictly_into_the_reference(tmp_path):
    require_reference()
    model = _model()
    path = train(model, [_discs()], replace(FAST, steps=1), device="cpu", out=tmp_path / "ft.pt").checkpoint
    ref = build_reference("sam2.1_hiera_tiny", image_size=TINY.image_size, **DEMO_REFERENCE_OVERRIDES)
    state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    ref.load_state_dict(state, strict=True)
    for k, v in state.items():
        assert torch.equal(ref.state_dict()[k], v), k


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        (np.zeros((32, 32), np.uint16), "shape"),
        (np.zeros((64, 64), np.float32), "integer object ids"),
        (np.zeros((64, 64), np.uint16), "no object"),
    ],
)
def test_bad_training_input_says_what_to_fix(labels, pattern):
    image, _ = _discs()
    with pytest.raises(TrainingError, match=pattern):
        train(_model(), [(image, labels)], FAST, device="cpu")


def test_bad_options():
    with pytest.raises(TrainingError, match="no training data"):
        train(_model(), [], FAST, device="cpu")
    with pytest.raises(TrainingError, match="matches no parameter"):
        train(_model(), [_discs()], replace(FAST, freeze=("encoder",)), device="cpu")
    with pytest.raises(TrainingError, match="prob_box"):
        TrainingConfig(prob_box=0.8, prob_mask=0.5)


def test_training_frame_rules_equal_predict_frame():
    model = _model().eval()
    with torch.no_grad():
        feats = model.encode_image(torch.randn(2, 3, 64, 64))
        coords = torch.tensor([[[10.0, 12.0]], [[40.0, 30.0]]])
        labels = torch.ones(2, 1, dtype=torch.int32)
        for multimask in (True, False):
            ours = model.frame_output(
                model.decode(feats.embed, feats.high_res, coords, labels, None, multimask), multimask
            )
            ref = model.predict_frame(feats.embed, feats.high_res, coords, labels, None, multimask)
            for name in ("low_res", "iou", "obj_ptr", "object_score"):
                assert torch.equal(getattr(ours, name), getattr(ref, name)), name


def test_simulated_prompts():
    rng = np.random.default_rng(0)
    gt = np.zeros((32, 32), bool)
    gt[8:20, 10:24] = True
    assert gt[tp.first_click(gt, rng)]
    r, c = tp.first_click(gt, rng, center_prob=1.0)  # deepest inside: 6 pixels from the border
    assert r in (13, 14) and 15 <= c <= 18
    r0, c0, r1, c1 = tp.jittered_box(gt, rng, jitter=0.0)
    assert (r0, c0, r1, c1) == (8, 10, 19, 23)
    pred = np.zeros_like(gt)
    r, c, label = tp.correction_click(gt, pred, rng)
    assert gt[r, c] and label == 1
    pred = gt.copy()
    pred[0:4, 0:4] = True
    r, c, label = tp.correction_click(gt, pred, rng, center_prob=1.0)
    assert r < 4 and c < 4 and label == 0


def test_clips_per_step_accumulates_gradients():
    result = train(_model(), [_discs()], replace(FAST, steps=2, clips_per_step=2), device="cpu")
    assert result.steps == 2 and len(result.losses) == 2 and all(np.isfinite(result.losses))
    with pytest.raises(TrainingError, match="clips_per_step"):
        TrainingConfig(clips_per_step=0)


@pytest.mark.parametrize("fraction, expect", [(1.0, {3}), (0.0, {1})])
def test_stack_fraction_picks_stacks_or_planes(fraction, expect):
    """stack_fraction 1 draws only clips of the stack (3 frames), 0 only the single plane."""
    from napari_sam2.training.finetune import _ClipSampler, _prepare

    volumes = [_prepare(TrainingPair(*_discs()), 0), _prepare(TrainingPair(*_stack(), axes="zyx"), 1)]
    cfg = replace(FAST, clip_frames=3, stack_fraction=fraction)
    sampler = _ClipSampler(volumes, cfg, 64)
    rng = np.random.default_rng(0)
    assert {sampler.sample(rng)[0].shape[0] for _ in range(20)} == expect
    mixed = _ClipSampler(volumes, replace(cfg, stack_fraction=0.5), 64)
    lengths = [mixed.sample(rng)[0].shape[0] for _ in range(200)]
    assert 70 <= lengths.count(3) <= 130  # about half of the clips come from the stack


def test_stack_fraction_out_of_range():
    with pytest.raises(TrainingError, match="stack_fraction must be in"):
        TrainingConfig(stack_fraction=1.5)


def test_clip_as_long_as_the_stack_stays_inside_it():
    """A 4-frame clip on a 4-frame stack from a middle slice used to step outside the stack."""
    from napari_sam2.training.finetune import _ClipSampler, _prepare

    vol = _prepare(TrainingPair(*_stack(), axes="zyx"), 0)
    sampler = _ClipSampler([vol], replace(FAST, clip_frames=4), 64)
    rng = np.random.default_rng(0)
    for start in range(4):
        for _ in range(5):
            frames = [f[0] for f in sampler._frames(vol, (start,), rng)]
            assert frames[0] == start and all(0 <= f < 4 for f in frames)
            assert abs(np.diff(frames)).tolist() == [1] * (len(frames) - 1)
            assert len(frames) == max(4 - start, start + 1)  # the longer side of the start


def test_intensity_jitter_moves_each_clips_window_within_bounds():
    """intensity_jitter 0.25: low and high move by up to a quarter of the window's width each,
    differently per clip, and one window serves the whole clip; 0 keeps the dataset's window."""
    from napari_sam2.training.finetune import _ClipSampler, _prepare

    vol = _prepare(TrainingPair(*_stack(), axes="zyx"), 0)
    low, high = vol.window.low, vol.window.high
    width = high - low
    rng = np.random.default_rng(0)
    plain = _ClipSampler([vol], replace(FAST, clip_frames=3), 64)
    assert {plain._intensity(vol, rng) for _ in range(5)} == {vol.window}
    sampler = _ClipSampler([vol], replace(FAST, clip_frames=3, intensity_jitter=0.25), 64)
    windows = [sampler._intensity(vol, rng) for _ in range(300)]
    lows = np.array([w.low for w in windows])
    highs = np.array([w.high for w in windows])
    assert np.all(np.abs(lows - low) <= 0.25 * width + 1e-9)
    assert np.all(highs - lows >= 0.1 * width - 1e-9)
    assert np.all(highs <= high + 0.25 * width + 1e-9)
    assert lows.min() < low - 0.2 * width and lows.max() > low + 0.2 * width  # both directions
    assert highs.min() < high - 0.2 * width and highs.max() > high + 0.2 * width
    # sample() uses it: same clip and masks (no rotations, so the random draws line up), other pixels
    sampler = _ClipSampler([vol], replace(FAST, clip_frames=3, intensity_jitter=0.25, augment=False), 64)
    plain = _ClipSampler([vol], replace(FAST, clip_frames=3, augment=False), 64)
    images, masks = sampler.sample(np.random.default_rng(1))
    base, base_masks = plain.sample(np.random.default_rng(1))
    assert torch.equal(masks, base_masks) and not torch.equal(images, base)


def test_intensity_jitter_out_of_range():
    with pytest.raises(TrainingError, match="intensity_jitter must be in"):
        TrainingConfig(intensity_jitter=1.5)


def test_train_command_writes_weights_and_errors_in_one_line(tmp_path, capsys):
    """`napari-sam2 train` goes through the CLI: exit codes, one-line errors, a loadable checkpoint."""
    import tifffile

    from napari_sam2.cli import main
    from napari_sam2.model.checkpoint import save_checkpoint

    image, labels = _discs()
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    start = save_checkpoint(_model(), tmp_path / "start.pt")
    base = ["train", "--model", str(start), "--device", "cpu", "--image", str(tmp_path / "img.tif")]
    with pytest.raises(SystemExit) as info:  # --labels missing: argparse's usage error
        main([*base, "--out", str(tmp_path / "bad.pt")])
    assert info.value.code == 2
    capsys.readouterr()
    mismatch = [*base, "--labels", str(tmp_path / "lab.tif"), "--labels", str(tmp_path / "lab.tif")]
    assert main([*mismatch, "--out", str(tmp_path / "bad.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["napari-sam2: error: give one --labels per --image (1 images, 2 labels)"]
    out = tmp_path / "trained.pt"
    ok = [
        *base,
        "--labels",
        str(tmp_path / "lab.tif"),
        "--steps",
        "2",
        "--warmup-steps",
        "1",
        "--out",
        str(out),
    ]
    assert main(ok) == 0
    assert "step 2/2 loss" in capsys.readouterr().out
    trained = load_checkpoint(out)
    assert trained.config.image_size == 64
    assert not torch.equal(
        trained.state_dict()["sam_mask_decoder.iou_token.weight"],
        _model().state_dict()["sam_mask_decoder.iou_token.weight"],
    )
    missing = main(
        [*base, "--labels", str(tmp_path / "nope.tif"), "--steps", "1", "--out", str(tmp_path / "x.pt")]
    )
    assert missing == 3 and "nope.tif does not exist" in capsys.readouterr().err


def test_intensity_gamma_raises_each_clip_to_one_power_within_its_range():
    from napari_sam2.engine.intensity import IMAGENET_MEAN, IMAGENET_STD
    from napari_sam2.training import finetune as ft

    rng0 = np.random.default_rng(0)
    image = rng0.uniform(0, 1000, (64, 64)).astype(np.float32)
    labels = np.zeros((64, 64), np.uint8)
    labels[20:40, 20:40] = 1
    vol = ft._prepare(TrainingPair(image, labels), 0)
    base = TrainingConfig(augment=False, max_objects=1)
    plain, _ = ft._ClipSampler([vol], base, 64).sample(np.random.default_rng(1))
    powers = []
    for seed in range(6):
        cfg = replace(base, intensity_gamma=0.5)
        got, _ = ft._ClipSampler([vol], cfg, 64).sample(np.random.default_rng(seed))
        x0 = plain[0, 0].numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        xg = got[0, 0].numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        mid = (x0 > 0.05) & (x0 < 0.95)
        g = np.median(np.log(xg[mid]) / np.log(x0[mid]))
        assert np.allclose(xg[mid], x0[mid] ** g, atol=2e-3)  # one power for the whole plane
        powers.append(g)
    assert all(np.exp(-0.5) - 1e-3 <= g <= np.exp(0.5) + 1e-3 for g in powers)
    assert min(powers) < 0.95 and max(powers) > 1.05
    with pytest.raises(TrainingError, match=r"intensity_gamma must be in \[0, 2\], got 3"):
        TrainingConfig(intensity_gamma=3)
