"""Teach the multimask outputs 1 and 2 plausible alternatives, leaving everything else as it is.

SAM2's decoder answers a single click with three candidate masks (mask tokens 1-3). Training with
the loss on the best candidate only lets one candidate learn while the others stay untrained: the
demo model's outputs 1 and 2 were near-full-image masks (120-150x the object's area, IoU below that
of a full mask). This stage trains only what belongs to those two outputs: the hypernetwork MLPs of
mask tokens 2 and 3 and their rows of the IoU head's last layer. The image encoder, the two-way
transformer, every token's embedding and output 0 (token 1) stay bit for bit as they were, so a
click's default mask, a box's mask and the tracker's single-mask path do not change; which output a
click keeps (the best predicted IoU) can, when an alternative is predicted better.

Targets, per clicked object:

* output 1 -- the object itself: a second guess from another head, which a user can switch to;
* output 2 -- the object with its neighbours within ``group_gap`` pixels (touching or nearly
  touching objects form one mask): SAM's "larger whole" reading of an ambiguous click; an isolated
  object is its own group.

Both heads also learn their predicted IoU against the clicked object (not against their own
target), so the group mask is never preferred to the object when they differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..engine.prompts import Prompt
from ..model import Sam2Model
from ._prompts import first_click
from .finetune import (
    TrainingConfig,
    TrainingError,
    _as_pair,
    _ClipSampler,
    _dice,
    _focal,
    _iou,
    _prepare,
    _prompt_batch,
    recent_parts,
)

__all__ = [
    "AlternativesConfig",
    "AlternativesResult",
    "TOKENS",
    "group_targets",
    "multimask_scores",
    "train_alternatives",
]

TOKENS = (2, 3)
"""The decoder's mask tokens of multimask outputs 1 and 2 (output 0 is token 1; token 0 is the
single-mask output)."""


@dataclass(frozen=True)
class AlternativesConfig:
    """Options of :func:`train_alternatives`.

    Attributes:
        steps: optimiser steps, one plane (up to ``objects`` clicked objects) each.
        lr: AdamW learning rate (constant after a linear warm-up of ``warmup_steps``), no weight decay.
        objects: clicked objects per step.
        group_gap: objects closer than this (pixels at the model's input) join the clicked one in
            output 2's target.
        loss_focal, loss_dice, loss_iou: weights of the loss terms (as in fine-tuning).
        iou_margin: the two heads learn to predict their IoU with the clicked object less this
            margin, so a click keeps output 0 (v1's mask) unless an alternative is clearly better.
        intensity_jitter, intensity_gamma: the planes' window and gamma jitter (see
            :class:`~.finetune.TrainingConfig`).
        seed: seeds the plane, object and click draws.
    """

    steps: int = 2000
    lr: float = 1e-3
    warmup_steps: int = 50
    objects: int = 8
    group_gap: int = 3
    loss_focal: float = 5.0
    loss_dice: float = 1.0
    loss_iou: float = 1.0
    iou_margin: float = 0.1
    intensity_jitter: float = 0.25
    intensity_gamma: float = 0.3
    seed: int = 5


@dataclass
class AlternativesResult:
    """What :func:`train_alternatives` did: steps, seconds and the loss of every step (with its parts
    averaged over the last 50 steps)."""

    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)


def group_targets(masks: torch.Tensor, gap: int) -> torch.Tensor:
    """(K, S, S) bool masks of all objects of a plane -> (K, S, S): each object with the objects
    that come within ``gap`` pixels of it."""
    ks = masks.shape[0]
    near = np.zeros((ks, ks), bool)
    struct = ndimage.generate_binary_structure(2, 1)
    m = masks.numpy()
    for i in range(ks):
        grown = ndimage.binary_dilation(m[i], struct, iterations=max(gap, 1))
        near[i] = (grown[None] & m).reshape(ks, -1).any(axis=1)
    near_t = torch.from_numpy(near | np.eye(ks, dtype=bool)).float()
    return (near_t @ masks.flatten(1).float()).view_as(masks) > 0


def _trainable(model: Sam2Model) -> tuple[list[torch.nn.Parameter], list[torch.utils.hooks.RemovableHandle]]:
    """Freeze the model except the two heads; the IoU head's last layer learns rows ``TOKENS`` only."""
    dec = model.sam_mask_decoder
    for p in model.parameters():
        p.requires_grad_(False)
    params: list[torch.nn.Parameter] = []
    for t in TOKENS:
        for p in dec.output_hypernetworks_mlps[t].parameters():
            p.requires_grad_(True)
            params.append(p)
    last = dec.iou_prediction_head.layers[-1]
    keep = torch.ones(last.out_features, dtype=torch.bool)
    keep[list(TOKENS)] = False
    hooks = []
    for p in (last.weight, last.bias):
        p.requires_grad_(True)
        params.append(p)
        hooks.append(
            p.register_hook(lambda g, keep=keep: g.masked_fill(keep.view(-1, *([1] * (g.ndim - 1))), 0))
        )
    return params, hooks


def train_alternatives(
    model: Sam2Model,
    data: Iterable[Any],
    config: AlternativesConfig | None = None,
    *,
    progress: Callable[[int, int, float], None] | None = None,
) -> AlternativesResult:
    """Train multimask outputs 1 and 2 of ``model`` (in place, on the CPU, float32) on ``data``
    ((image, labels) pairs or synthetic stacks, as :func:`~.finetune.train` takes).

    Raises:
        TrainingError: unusable data.
    """
    cfg = config or AlternativesConfig()
    pairs = [_as_pair(item) for item in data]
    if not pairs:
        raise TrainingError("no training data: give at least one (image, labels) pair")
    volumes = [_prepare(p, i) for i, p in enumerate(pairs)]
    size = model.config.image_size
    draw = TrainingConfig(
        clip_frames=1, max_objects=64, stack_fraction=0.5, augment=True,
        intensity_jitter=cfg.intensity_jitter, intensity_gamma=cfg.intensity_gamma,
    )  # fmt: skip
    sampler = _ClipSampler(volumes, draw, size)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to("cpu")
    params, hooks = _trainable(model)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1)))
    result = AlternativesResult()
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    flush = torch.set_flush_denormal(True)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            model.eval()  # no dropout anywhere; the frozen parts run as at inference
            for step in range(cfg.steps):
                images, masks = sampler.sample(rng)  # (1, 3, S, S), (1, K, S, S)
                loss, parts = _step_loss(model, images, masks[0], cfg, rng)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                result.losses.append(float(loss.detach()))
                history.append(parts)
                result.steps = step + 1
                if progress is not None:
                    progress(step + 1, cfg.steps, result.losses[-1])
    finally:
        if flush:
            torch.set_flush_denormal(False)
        for h in hooks:
            h.remove()
        for p in model.parameters():
            p.requires_grad_(True)
    result.seconds = time.perf_counter() - start
    result.parts = recent_parts(history)
    return result


def _step_loss(
    model: Sam2Model,
    images: torch.Tensor,
    masks: torch.Tensor,
    cfg: AlternativesConfig,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one plane: ``masks`` (K, S, S) bool, every object of the plane."""
    s = model.config.image_size
    groups = group_targets(masks, cfg.group_gap)
    chosen = rng.permutation(masks.shape[0])[: cfg.objects]
    obj, grp = masks[chosen], groups[chosen]
    with torch.no_grad():
        feats = model.encode_image(images)
        embed = model.embed_without_memory(feats)
    prompts = [Prompt([first_click(m.numpy(), rng, 0.3)], [1]) for m in obj]
    coords, labels = _prompt_batch(prompts, s, images.device)
    dec = model.decode(embed, feats.high_res, coords, labels, None, True, repeat_image=True)
    logits = F.interpolate(dec.masks[:, 1:3].float(), size=(s, s), mode="bilinear", align_corners=False)
    target = torch.stack([obj, grp], dim=1).float()  # (K, 2, S, S)
    focal, dice = _focal(logits, target), _dice(logits, target)  # (K, 2)
    with torch.no_grad():
        actual = _iou(logits > 0, obj[:, None].expand_as(logits))  # IoU with the clicked object
    iou_l1 = (dec.iou[:, 1:3].float() - (actual - cfg.iou_margin).clamp(min=0)).abs()
    loss = (cfg.loss_focal * focal + cfg.loss_dice * dice + cfg.loss_iou * iou_l1).mean()
    parts = {
        "focal": float(focal.detach().mean()),
        "dice": float(dice.detach().mean()),
        "iou": float(iou_l1.detach().mean()),
        "iou_object_output_1": float(actual[:, 0].mean()),
        "iou_object_output_2": float(actual[:, 1].mean()),
    }
    return loss, parts


def multimask_scores(model, planes: Iterable[Any], window: Any = None) -> dict[str, float]:
    """Mean IoU with the clicked object of each multimask output, one click (the evaluation's click
    point) per object of each (image, labels) 2D plane, and of an all-foreground mask for
    comparison; also how often each output has the best predicted IoU.

    ``window``: each plane's intensity window, as :func:`.evaluate.evaluate` takes it (None: the
    model's own convention, such as the demo model's foreground window, else robust percentiles)."""
    from ..engine import ImagePredictor, open_image
    from ..engine.window_choice import choose_window
    from .evaluate import click_point, iou

    predictor = ImagePredictor(model)
    rows, picks = [], []
    for item in planes:
        pair = _as_pair(item)
        labels = np.asarray(pair.labels)
        source = open_image(pair.image, axes=pair.axes)
        win = choose_window(window, model=model, geometry=None, sample=source.sample_values).window
        predictor.set_image(source, window=win)
        for obj in np.unique(labels[labels > 0]):
            truth = labels == obj
            pred = predictor.predict(Prompt([click_point(truth)], [1]), multimask=True)
            rows.append([iou(pred.full(i), truth) for i in range(3)] + [truth.mean()])
            picks.append(int(pred.best))
    r = np.asarray(rows)
    counts = np.bincount(picks, minlength=3) / max(len(picks), 1)
    return {
        **{f"multimask_{i}_iou": float(r[:, i].mean()) for i in range(3)},
        "full_mask_iou": float(r[:, 3].mean()),
        **{f"multimask_{i}_picked": float(counts[i]) for i in range(3)},
        "objects": len(rows),
    }
