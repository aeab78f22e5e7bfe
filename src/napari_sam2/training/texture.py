"""Teach a model's image encoder to read textured, noisy planes as it reads plain ones.

A model trained on generated nuclei fails on real ones mostly through their look, not their shape: the
demo model's clicks on the real cells3d nuclei score 0.39, and 0.74 on the same planes smoothed with a
Gaussian of 3 pixels first (its decoder and memory are fine once the features look like the ones they
were trained on; docs/training.md). Real nuclei carry chromatin texture, bright spots and more noise
than the generator draws.

This stage trains only the image encoder, by distillation from a frozen copy of itself (the teacher):

* each step draws ``plain + textured`` planes of the training data, through the same windows, jitter,
  crops and turns as fine-tuning (:class:`~.finetune.TrainingConfig` with one-frame clips);
* the textured planes get, on their windowed 0..1 intensities, a random multiplicative texture
  (Gaussian-smoothed noise of random grain and strength), sometimes bright spots, and added noise
  (:func:`perturb`);
* the encoder (the student) must produce, for every plane as it sees it, the teacher's features of the
  plain plane: mean squared error per feature level, relative to the teacher's mean square there.

The plain planes keep the features of plain images where they were. Prompt encoder, mask decoder,
memory attention and memory encoder keep their weights bit for bit.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..engine.intensity import IMAGENET_MEAN, IMAGENET_STD
from ..model import Sam2Model
from .finetune import TrainingConfig, TrainingError, _as_pair, _ClipSampler, _prepare, recent_parts

__all__ = ["TextureConfig", "TextureResult", "perturb", "train_texture"]


@dataclass(frozen=True)
class TextureConfig:
    """Options of :func:`train_texture`.

    Attributes:
        steps: optimiser steps.
        lr: AdamW peak learning rate (linear warm-up over ``warmup_steps``, then cosine decay to
            ``lr * min_lr_ratio``), no weight decay; gradients clipped to norm ``grad_clip``.
        plain, textured: planes per step seen as they are / with :func:`perturb` applied.
        amplitude: range of the texture's relative strength (standard deviation of the
            multiplicative field).
        grain: range of the texture's Gaussian sigma, in model-input pixels.
        spots: the strength of bright spots (0: none); drawn for half of the textured planes.
        noise: range of the added Gaussian noise's standard deviation (on 0..1 intensities).
        stack_fraction: share of planes drawn from stacks (None: every dataset equally often), as in
            :class:`~.finetune.TrainingConfig`.
        intensity_jitter, intensity_gamma: the planes' window and gamma jitter (see
            :class:`~.finetune.TrainingConfig`).
        seed: seeds the plane and texture draws.
    """

    steps: int = 3000
    lr: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    plain: int = 2
    textured: int = 2
    amplitude: tuple[float, float] = (0.1, 0.8)
    grain: tuple[float, float] = (0.7, 3.0)
    spots: float = 1.0
    noise: tuple[float, float] = (0.0, 0.12)
    stack_fraction: float | None = None
    intensity_jitter: float = 0.25
    intensity_gamma: float = 0.0
    seed: int = 11


@dataclass
class TextureResult:
    """What :func:`train_texture` did: steps, seconds, the loss of every step, and the loss of the
    plain and the textured planes averaged over the last 50 steps."""

    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)


def perturb(plane01: np.ndarray, rng: np.random.Generator, config: TextureConfig | None = None) -> np.ndarray:
    """A windowed (H, W) plane with 0..1 intensities -> the same plane with random texture, bright
    spots (half of the time, when ``config.spots`` > 0) and noise, clipped to 0..1, float32.

    The texture multiplies the intensities, so a dark background stays dark apart from the noise.
    """
    cfg = config or TextureConfig()
    p = np.asarray(plane01, dtype=np.float32)
    field_ = ndimage.gaussian_filter(rng.standard_normal(p.shape).astype(np.float32), rng.uniform(*cfg.grain))
    field_ /= field_.std() + 1e-6
    out = p * np.clip(1.0 + rng.uniform(*cfg.amplitude) * field_, 0.0, None)
    if cfg.spots > 0 and rng.random() < 0.5:
        seeds = (rng.random(p.shape) < 0.003).astype(np.float32)
        # a spot's peak is about strength x 20 / (2 pi sigma^2) of the local intensity: 0.5-3x at full strength
        out += (
            p * ndimage.gaussian_filter(seeds, rng.uniform(1.0, 2.5)) * (rng.uniform(0.0, cfg.spots) * 20.0)
        )
    out += rng.normal(0.0, rng.uniform(*cfg.noise), size=p.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0, out=out)


def _level_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Each plane's share of the loss -> (B,); their mean is the mean over feature levels of the
    batch's MSE relative to the teacher's mean square at that level (over the whole batch, so dark,
    nearly empty planes do not weigh more than bright ones)."""
    terms = [
        ((s - t) ** 2).flatten(1).mean(1) / (t**2).mean().clamp(min=1e-8) for s, t in zip(student, teacher)
    ]
    return torch.stack(terms).mean(0)


def train_texture(
    model: Sam2Model,
    data: Iterable[Any],
    config: TextureConfig | None = None,
    *,
    progress: Callable[[int, int, float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> TextureResult:
    """Train ``model``'s image encoder (in place, on the CPU, float32) to give textured planes of
    ``data`` ((image, labels) pairs or synthetic stacks, as :func:`~.finetune.train` takes; the labels
    only choose crops of large planes) the features its starting weights give the plain planes.

    Raises:
        TrainingError: unusable data or config.
    """
    cfg = config or TextureConfig()
    if cfg.steps < 1 or cfg.plain < 0 or cfg.textured < 1:
        raise TrainingError(
            f"a texture stage needs steps >= 1, plain >= 0 and textured >= 1, got {cfg.steps}, {cfg.plain}, {cfg.textured}"
        )
    pairs = [_as_pair(item) for item in data]
    if not pairs:
        raise TrainingError("no training data: give at least one (image, labels) pair")
    volumes = [_prepare(p, i) for i, p in enumerate(pairs)]
    size = model.config.image_size
    draw = TrainingConfig(
        clip_frames=1, max_objects=1, stack_fraction=cfg.stack_fraction, augment=True,
        intensity_jitter=cfg.intensity_jitter, intensity_gamma=cfg.intensity_gamma,
    )  # fmt: skip
    sampler = _ClipSampler(volumes, draw, size)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to("cpu")
    teacher_encoder = _frozen_copy(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("image_encoder."))
    params = list(model.image_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)

    def lr_factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))
        return warm * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    result = TextureResult()
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    flush = torch.set_flush_denormal(True)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            model.eval()
            for step in range(cfg.steps):
                if cancel is not None and cancel():
                    break
                plain = [sampler.sample(rng)[0][0] for _ in range(cfg.plain + cfg.textured)]  # (3, S, S) each
                seen = list(plain)
                for i in range(cfg.plain, len(plain)):
                    p01 = (plain[i][0] * std[0] + mean[0]).numpy()
                    t01 = torch.from_numpy(perturb(p01, rng, cfg))
                    seen[i] = (t01[None].expand(3, size, size) - mean) / std
                with torch.no_grad():
                    target, _ = teacher_encoder(torch.stack(plain))
                got, _ = model.image_encoder(torch.stack(seen))
                per_plane = _level_loss(got, target)
                loss = per_plane.mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                result.losses.append(float(loss.detach()))
                parts = per_plane.detach()
                history.append(
                    {
                        "plain": float(parts[: cfg.plain].mean()) if cfg.plain else 0.0,
                        "textured": float(parts[cfg.plain :].mean()),
                    }
                )
                result.steps = step + 1
                if progress is not None:
                    progress(step + 1, cfg.steps, result.losses[-1])
    finally:
        if flush:
            torch.set_flush_denormal(False)
        for p in model.parameters():
            p.requires_grad_(True)
    result.seconds = time.perf_counter() - start
    result.parts = recent_parts(history)
    return result


def _frozen_copy(model: Sam2Model) -> torch.nn.Module:
    """A frozen copy of ``model``'s image encoder, in eval mode."""
    encoder = copy.deepcopy(model.image_encoder).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder
