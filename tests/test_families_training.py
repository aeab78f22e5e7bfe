"""Fine-tuning the other SAM2-family models: a few steps of :func:`train` on EdgeTAM and EfficientTAM
(random weights, small input) move the weights, keep the loss finite, and write a checkpoint that
loads back as the same family."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_sam2.model import Sam2Model, get_config
from napari_sam2.model.checkpoint import load_checkpoint
from napari_sam2.training.finetune import TrainingConfig, train


@pytest.fixture(autouse=True)
def _no_grad():
    """Training needs autograd: replaces conftest's inference-mode fixture in this module."""
    yield


def _stack(frames=2, shape=(64, 64)):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros((frames, *shape), np.uint16)
    for z in range(frames):
        labels[z][(rr - 20 - 2 * z) ** 2 + (cc - 24) ** 2 <= 64] = 1
        labels[z][(rr - 44) ** 2 + (cc - 40 + z) ** 2 <= 49] = 2
    image = (100 + 800 * (labels > 0) + np.random.default_rng(0).normal(0, 30, labels.shape)).clip(0)
    return image.astype(np.uint16), labels


@pytest.mark.parametrize("name", ["edgetam", "efficienttam_ti_1"])
def test_a_few_steps_train_the_family(name, tmp_path):
    torch.manual_seed(0)
    model = Sam2Model(replace(get_config(name), image_size=256))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainingConfig(
        steps=2, lr=1e-3, warmup_steps=1, max_objects=2, correction_rounds=1, clip_frames=2, seed=1
    )
    result = train(model, [_stack()], cfg, device="cpu", out=tmp_path / "tuned.pt")
    assert result.steps == 2 and all(np.isfinite(result.losses))
    moved = [
        k
        for k, v in model.state_dict().items()
        if v.dtype.is_floating_point and not torch.equal(v, before[k])
    ]
    assert any(k.startswith("image_encoder.trunk.") for k in moved)
    assert any(k.startswith("memory_attention.") for k in moved)
    again = load_checkpoint(tmp_path / "tuned.pt")
    assert again.config == model.config
    key = "sam_mask_decoder.iou_token.weight"
    assert torch.equal(again.state_dict()[key], model.state_dict()[key])
