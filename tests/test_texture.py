"""The texture stage (training/texture.py): what it perturbs, what it trains, and what it learns."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from napari_sam2.engine.intensity import to_model_input
from napari_sam2.model import Sam2Model
from napari_sam2.model.config import DEMO_CONFIG
from napari_sam2.training import synthetic
from napari_sam2.training.finetune import TrainingError
from napari_sam2.training.texture import TextureConfig, perturb, train_texture


def _disc(size: int = 64, value: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    return np.where(inside, value, 0.0).astype(np.float32), inside


def test_perturb_textures_objects_keeps_a_dark_background_and_the_range():
    plane, inside = _disc()
    cfg = TextureConfig(amplitude=(0.5, 0.5), spots=0.0, noise=(0.0, 0.0))
    out = perturb(plane, np.random.default_rng(0), cfg)
    assert out.dtype == np.float32 and out.shape == plane.shape
    assert np.all(out[~inside] == 0)  # multiplicative: nothing appears where the plane is dark
    rel = out[inside] / 0.6
    assert 0.3 < rel.std() < 0.6 and abs(rel.mean() - 1) < 0.15  # about the drawn strength, 0.5
    again = perturb(plane, np.random.default_rng(0), cfg)
    assert np.array_equal(out, again)  # seeded
    noisy = perturb(plane, np.random.default_rng(1), TextureConfig(noise=(0.2, 0.2), spots=1.0))
    assert noisy.min() >= 0 and noisy.max() <= 1 and noisy[~inside].std() > 0.05


def _features(encoder, plane01: np.ndarray) -> list[torch.Tensor]:
    with torch.no_grad():
        feats, _ = encoder(to_model_input(plane01, DEMO_CONFIG.image_size)[None])
    return feats


def _distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(np.mean([((x - y) ** 2).mean() / (y**2).mean() for x, y in zip(a, b)]))


def test_the_stage_trains_only_the_image_encoder_towards_the_plain_features():
    """From a seeded random model (the shipped one has had this stage already): 30 steps bring the
    textured plane's features to 0.82 of their starting distance from the frozen plain features
    (0.0816 / 0.0993, measured 2026-12-06); without training the ratio is 1."""
    with torch.inference_mode(False):  # conftest runs tests in inference mode; training needs autograd
        torch.manual_seed(0)
        model = Sam2Model(DEMO_CONFIG)
    teacher = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = [synthetic.nuclei_2d((256, 256), 8, seed=s) for s in (1, 2)]
    # held-out plane, windowed to 0..1, and a textured copy of it
    plain = synthetic.nuclei_2d((256, 256), 8, seed=3).image.astype(np.float32)
    plain = np.clip((plain - np.percentile(plain, 0.5)) / np.ptp(np.percentile(plain, [0.5, 99.5])), 0, 1)
    textured = perturb(plain, np.random.default_rng(5))
    start = _distance(_features(model.image_encoder, textured), _features(model.image_encoder, plain))
    steps = []
    with torch.inference_mode(False):
        result = train_texture(
            model,
            data,
            TextureConfig(steps=30, lr=3e-4, warmup_steps=1),
            progress=lambda s, n, loss: steps.append(s),
        )
    assert result.steps == 30 and steps == list(range(1, 31)) and set(result.parts) == {"plain", "textured"}
    after = model.state_dict()
    encoder = {k for k in after if k.startswith("image_encoder.")}
    assert all(torch.equal(after[k], before[k]) for k in after if k not in encoder)
    assert sum(not torch.equal(after[k], before[k]) for k in encoder) > 0.9 * len(encoder)
    # the textured plane now reads (much) closer to the plain one as the starting weights read it
    got = _distance(_features(model.image_encoder, textured), _features(teacher.image_encoder, plain))
    assert got < 0.86 * start, (got, start)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "cfg, message",
    [(TextureConfig(steps=0), "steps >= 1"), (TextureConfig(textured=0), "textured >= 1")],
)
def test_bad_texture_configs_and_empty_data_are_training_errors(cfg, message):
    model = Sam2Model(DEMO_CONFIG)
    with pytest.raises(TrainingError, match=message):
        train_texture(model, [synthetic.nuclei_2d((64, 64), 2, seed=0)], cfg)
    with pytest.raises(TrainingError, match="no training data"):
        train_texture(model, [], TextureConfig(steps=1))
