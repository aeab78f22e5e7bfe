"""Other SAM2-family models (EdgeTAM, MedSAM2): configs, checkpoints, registry, and the engine on them.

No oracle needed: random weights, small inputs. Parity with the authors' code is in
``test_parity_edgetam.py``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_sam2.engine import Prompt, Tracker
from napari_sam2.engine.predictor import ImagePredictor
from napari_sam2.model import FAMILY_VARIANTS, VARIANTS, Memory, RepViTConfig, Sam2Model, get_config
from napari_sam2.model.checkpoint import (
    CheckpointError,
    _layout,
    identify_variant,
    load_checkpoint,
    save_checkpoint,
)
from napari_sam2.model.weights import FAMILY_WEIGHTS, OFFICIAL_WEIGHTS, _default_urls, get_weights_info


@pytest.fixture(scope="module")
def edgetam_256():
    torch.manual_seed(0)
    return Sam2Model(replace(get_config("edgetam"), name="edgetam-256", image_size=256)).eval()


def test_edgetam_layout():
    cfg = get_config("edgetam")
    assert isinstance(cfg.trunk, RepViTConfig) and cfg.perceiver is not None and not cfg.sam21
    layout = _layout(cfg)
    assert len(layout) == 982  # the authors' state dict (edgetam-dimos 1.0.1) has 982 entries
    assert layout["image_encoder.trunk.body.stages_2.blocks.13.channel_mixer.conv2.bn.running_var"] == (192,)
    assert layout["spatial_perceiver.latents_2d"] == (256, 64)
    assert layout["memory_attention.layers.1.cross_attn_image.k_proj.weight"] == (256, 64)
    assert "memory_attention.layers.2.norm1.weight" not in layout
    assert identify_variant({k: torch.empty(v) for k, v in layout.items()}) == "edgetam"
    n = sum(int(np.prod(v)) for k, v in layout.items() if not k.endswith("num_batches_tracked"))
    assert 13e6 < n < 15e6  # 13,895,794 parameters plus batch-norm statistics


def test_sam2_variants_are_unchanged_by_the_families():
    assert set(FAMILY_VARIANTS).isdisjoint(VARIANTS) and len(VARIANTS) == 8
    assert get_config("sam2.1_hiera_tiny.pt") is VARIANTS["sam2.1_hiera_tiny"]
    with pytest.raises(KeyError, match="edgetam"):
        get_config("edgetom")


def test_edgetam_checkpoint_roundtrip_with_stored_config(edgetam_256, tmp_path):
    path = save_checkpoint(edgetam_256, tmp_path / "mine.pt")
    again = load_checkpoint(path)
    assert again.config == edgetam_256.config
    x = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        a, b = edgetam_256.encode_image(x), again.encode_image(x)
    assert torch.equal(a.embed, b.embed)


def test_sam2_file_named_as_edgetam_is_refused_with_its_name(tmp_path):
    with torch.device("meta"):
        state = Sam2Model(VARIANTS["sam2_hiera_tiny"]).state_dict()
    torch.save({"model": {k: torch.zeros(v.shape) for k, v in state.items()}}, tmp_path / "edgetam.pt")
    with pytest.raises(CheckpointError, match="looks like 'sam2_hiera_tiny'"):
        load_checkpoint(tmp_path / "edgetam.pt", config="edgetam")


def test_eval_folds_batch_norm_and_branches_like_training_mode(edgetam_256):
    """The eval path folds each batch norm and the three token-mixing branches into one
    convolution; the unfolded (training-mode) arithmetic with the same statistics agrees."""
    trunk = edgetam_256.image_encoder.trunk
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in trunk.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.5 + 0.5)
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        fused = trunk(x)
        for m in trunk.modules():  # training-mode branches, but batch norms on running statistics
            m.training = not isinstance(m, torch.nn.BatchNorm2d)
        try:
            plain = trunk(x)
        finally:
            trunk.eval()
    for a, b in zip(fused, plain, strict=True):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())


def test_edgetam_memory_is_latents(edgetam_256):
    model = edgetam_256
    with torch.inference_mode():
        feats = model.encode_image(torch.randn(1, 3, 256, 256))
        mem, pos = model.encode_memory(feats, torch.randn(1, 1, 64, 64), torch.ones(1, 1), from_clicks=True)
        assert mem.shape == pos.shape == (1, 512, 64)
        assert torch.equal(pos[:, :256], torch.zeros_like(pos[:, :256]))  # global latents: no position
        cond = model.condition_on_memory(
            feats,
            [Memory(mem, pos, 0), Memory(mem, pos, 6)],
            torch.randn(1, 3, 256),
            torch.tensor([0.0, 1.0, 2.0]),
            6,
        )
    assert cond.shape == feats.embed.shape and torch.isfinite(cond).all()


def test_engine_runs_edgetam_unchanged(edgetam_256):
    """Image predictor (with tiles of the model's input size) and tracker take the model as is."""
    plane = np.zeros((300, 200), np.float32)
    plane[100:160, 60:120] = 1.0
    predictor = ImagePredictor(edgetam_256)
    predictor.set_image(plane)
    masks = predictor.predict(Prompt(points=[[130, 90]], labels=[1]))
    assert masks is not None

    frames = torch.randn(4, 3, 256, 256)
    tracker = Tracker(edgetam_256, lambda i: frames[i], 4, (64, 64))
    tracker.add_prompt(0, 1, Prompt(points=[[30, 30]], labels=[1]))
    tracker.add_prompt(0, 2, Prompt(box=(5, 5, 20, 25)))
    out = dict(tracker.propagate(start=0))
    assert list(out) == [0, 1, 2, 3] and all(set(v) <= {1, 2} for v in out.values())
    back = dict(tracker.propagate(start=3, reverse=True))
    assert list(back) == [3, 2, 1, 0]


def test_with_image_size_keeps_the_family(edgetam_256):
    other = edgetam_256.with_image_size(512)
    assert other.config.perceiver == edgetam_256.config.perceiver and other.config.image_size == 512
    with torch.inference_mode():
        feats = other.encode_image(torch.randn(1, 3, 512, 512))
        mem, _ = other.encode_memory(feats, torch.randn(1, 1, 128, 128), torch.ones(1, 1), from_clicks=False)
    assert mem.shape == (1, 512, 64)
    with pytest.raises(ValueError, match="multiple of 256"):  # a 8 x 8 map has no 16 x 16 windows
        edgetam_256.with_image_size(128)


# ---------------------------------------------------------------------------------------------- MedSAM2


@pytest.fixture(scope="module")
def tiny_state():
    torch.manual_seed(0)
    return Sam2Model(VARIANTS["sam2.1_hiera_tiny"]).state_dict()


@pytest.mark.parametrize("name", [n for n in FAMILY_WEIGHTS if n.startswith("MedSAM2")])
def test_medsam2_files_load_at_their_input_size(name, tiny_state, tmp_path):
    path = tmp_path / FAMILY_WEIGHTS[name].filename
    torch.save({"model": tiny_state}, path)
    model = load_checkpoint(path)
    assert model.config.name == "medsam2" and model.config.image_size == 512
    assert model.config.trunk == VARIANTS["sam2.1_hiera_tiny"].trunk


def test_medsam2_weights_under_another_name_need_the_config(tiny_state, tmp_path):
    torch.save({"model": tiny_state}, tmp_path / "my_medsam2.pt")
    assert load_checkpoint(tmp_path / "my_medsam2.pt").config.image_size == 1024  # looks like SAM 2.1 tiny
    assert load_checkpoint(tmp_path / "my_medsam2.pt", config="medsam2").config.image_size == 512


# ---------------------------------------------------------------------------------------------- registry


def test_family_registry_entries():
    assert set(FAMILY_WEIGHTS).isdisjoint(OFFICIAL_WEIGHTS)
    for name, info in FAMILY_WEIGHTS.items():
        assert get_weights_info(name) is info and get_weights_info(info.filename) is info
        assert info.config in FAMILY_VARIANTS
        assert info.url.startswith("https://") and info.filename.endswith(".pt")
        urls = _default_urls(info)
        assert urls and all(isinstance(u, str) and u.startswith("https://") for u in urls)
        if not name.startswith("efficienttam"):  # EfficientTAM's are in test_efficienttam.py
            assert info.sha256 is None  # no publisher states one; see the comment in weights.py
    assert FAMILY_WEIGHTS["edgetam"].hf_url is None
    assert FAMILY_WEIGHTS["MedSAM2_latest"].hf_url == FAMILY_WEIGHTS["MedSAM2_latest"].url
