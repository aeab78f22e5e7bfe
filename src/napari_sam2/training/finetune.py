"""Train or fine-tune a SAM2 model on image + label pairs (2D planes, z-stacks or time series).

Each step draws one *clip*: ``clip_frames`` consecutive planes (z-slices or time points, in a
random direction; a single plane for 2D data), up to ``max_objects`` labelled objects of its
first plane, and simulates what a user and the tracker do with them, as SAM2 is trained:

1. The first frame is prompted per object with a click, a jittered box or the ground-truth mask
   (:class:`TrainingConfig` ``prob_box`` / ``prob_mask``), then corrected over
   ``correction_rounds`` rounds: a click in the error region of the current prediction is added
   and the previous low-resolution logits are fed back as mask input.
2. Later frames are conditioned on the memories and object pointers of the frames before them
   (:func:`.tracker.select_memories`, :meth:`Sam2Model.condition_on_memory`) and decoded
   without prompts, exactly as :class:`.tracker.Tracker` propagates, but with gradients.
3. Losses as in SAM2: focal (x20) + dice on the mask logits where the object is present,
   back-propagated through the best of the three multimask outputs only; L1 between the
   predicted and the actual IoU of every output; binary cross-entropy on the object score on
   every frame, including frames the object has left.

Planes go through the same path as at inference: one robust intensity window per dataset
(:func:`.intensity.resolve_window`), native-resolution crops of ``image_size`` pixels for larger
planes (the predictor's tiles), resizing for smaller ones (:func:`.intensity.to_model_input`).

Example::

    from napari_sam2 import load_model
    from napari_sam2.training.finetune import TrainingConfig, train

    model = load_model("sam2.1_hiera_tiny", device="cpu")
    result = train(model, [(image, labels)], TrainingConfig(steps=200, freeze=("image_encoder",)),
                   out="finetuned.pt")
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.device import autocast, select_device
from ..engine.intensity import IntensityWindow, apply_window, resolve_window, to_model_input
from ..engine.prompts import Prompt, prompt_tensors
from ..engine.sources import ImageSource, SourceError, open_image
from ..engine.tracker import FrameResult, Track, select_memories
from ..model import ImageFeatures, Memory, Sam2Model
from ..model.checkpoint import save_checkpoint
from ..model.mask_decoder import DecoderOutput
from ..model.prompt_encoder import PAD
from ._prompts import correction_click, first_click, jittered_box

__all__ = ["TrainingError", "TrainingConfig", "TrainingPair", "TrainingResult", "train"]

Progress = Callable[[int, int, float], None]
Cancel = Callable[[], bool]


class TrainingError(ValueError):
    """Training data or options that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class TrainingConfig:
    """Options of :func:`train`.

    Attributes:
        steps: optimiser steps (one clip each).
        lr: peak learning rate of AdamW, reached after ``warmup_steps`` of linear warm-up, then
            cosine decay to ``lr * min_lr_ratio``. 1e-5 suits fine-tuning an official model.
        weight_decay: AdamW weight decay.
        grad_clip: clip the gradients' global norm to this (None: no clipping).
        clips_per_step: clips whose gradients are accumulated into one optimiser step (a larger
            effective batch: less noisy steps).
        clip_frames: consecutive planes per clip on stacks (1 trains single images only).
        stack_fraction: chance that a clip comes from a stack (z or t) when the data mixes
            stacks and single planes; None draws every dataset equally often. Only clips
            from stacks train the memory modules, so a mix dominated by 2D images needs this.
        max_objects: most objects per clip (they share the image encoding).
        correction_rounds: correction clicks on the prompted frame after the first prompt.
        prob_box, prob_mask: chance that the first prompt is a box, or the ground-truth mask
            (otherwise one click).
        box_jitter: box corner noise, as a fraction of the box side (at most 20 pixels).
        click_center_prob: chance that a simulated click goes to the most interior pixel of its
            region rather than a uniformly drawn one.
        loss_focal, loss_dice, loss_iou, loss_object: loss weights (SAM2's 20, 1, 1, 1).
        min_object_pixels: objects smaller than this (at model resolution) in the prompted
            frame are not prompted.
        augment: random 90-degree rotations and flips of each clip.
        intensity_jitter: move each clip's intensity window (low and high) by up to this fraction
            of its width, independently, as users' contrast limits differ from the robust
            percentiles (0: always the dataset's window).
        intensity_gamma: raise each clip's windowed intensities (0..1) to a power drawn
            log-uniformly from ``exp(-g)`` to ``exp(g)`` (0: linear), so the model also meets
            other display curves and intensity histograms.
        freeze: name prefixes of parameters to keep fixed, e.g. ``("image_encoder",)`` or
            ``("image_encoder.trunk", "memory_attention")``.
        seed: seeds data sampling, prompts and torch: same seed, same data -> same losses on CPU.
    """

    steps: int = 500
    lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 25
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    clips_per_step: int = 1
    clip_frames: int = 3
    stack_fraction: float | None = None
    max_objects: int = 4
    correction_rounds: int = 2
    prob_box: float = 0.3
    prob_mask: float = 0.1
    box_jitter: float = 0.1
    click_center_prob: float = 0.3
    loss_focal: float = 20.0
    loss_dice: float = 1.0
    loss_iou: float = 1.0
    loss_object: float = 1.0
    min_object_pixels: int = 16
    augment: bool = True
    intensity_jitter: float = 0.0
    intensity_gamma: float = 0.0
    freeze: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if (
            min(self.clip_frames, self.max_objects, self.clips_per_step) < 1
            or min(self.steps, self.correction_rounds) < 0
        ):
            raise TrainingError(
                "steps and correction_rounds must be >= 0; clip_frames, max_objects and clips_per_step >= 1"
            )
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1):
            raise TrainingError(
                f"lr must be > 0 and min_lr_ratio in [0, 1], got {self.lr}, {self.min_lr_ratio}"
            )
        if self.stack_fraction is not None and not 0 <= self.stack_fraction <= 1:
            raise TrainingError(f"stack_fraction must be in [0, 1] or None, got {self.stack_fraction}")
        if not 0 <= self.intensity_jitter <= 1:
            raise TrainingError(f"intensity_jitter must be in [0, 1], got {self.intensity_jitter}")
        if not 0 <= self.intensity_gamma <= 2:
            raise TrainingError(f"intensity_gamma must be in [0, 2], got {self.intensity_gamma}")
        if not (self.prob_box >= 0 and self.prob_mask >= 0 and self.prob_box + self.prob_mask <= 1):
            raise TrainingError("prob_box and prob_mask must be >= 0 and add up to at most 1")
        object.__setattr__(self, "freeze", tuple(self.freeze))


@dataclass
class TrainingPair:
    """One image and its labels.

    Attributes:
        image: anything :func:`.sources.open_image` takes: a numpy/dask/zarr array, a TIFF or
            zarr path, a napari Image layer's data. (H, W), (Z, H, W), (T, H, W) or (T, Z, H, W).
        labels: instance labels of the same shape (without the image's channel axis): integers,
            0 = background, one id per object (a napari Labels layer's data), or a path.
        axes: the image's axes if they cannot be inferred (see :func:`.sources.open_image`).
        window: the intensity window (None: robust percentiles of the whole image, as the
            predictor and tracker use).
    """

    image: Any
    labels: Any
    axes: str | None = None
    window: IntensityWindow | Sequence[float] | str | None = None


@dataclass
class TrainingResult:
    """What :func:`train` did.

    Attributes:
        losses: total loss of every step, in order.
        steps: steps done (fewer than asked when cancelled).
        seconds: wall time of the training loop.
        cancelled: ``cancel()`` stopped it early.
        checkpoint: the file written, if ``out`` was given.
        parts: mean of each loss term over the last 50 steps.
    """

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    checkpoint: Path | None = None
    parts: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- data
@dataclass
class _Volume:
    source: ImageSource
    labels: np.ndarray  # frame_shape + (H, W), integer ids
    window: IntensityWindow
    frames: list[tuple[int, ...]]  # frames holding at least one object


def _as_pair(item: Any) -> TrainingPair:
    if isinstance(item, TrainingPair):
        return item
    if hasattr(item, "image") and hasattr(item, "labels"):  # e.g. engine.synthetic.SyntheticStack
        return TrainingPair(item.image, item.labels, getattr(item, "axes", None))
    if isinstance(item, (tuple, list)) and len(item) in (2, 3):
        return TrainingPair(*item)
    raise TrainingError(
        f"training data items are (image, labels) pairs or TrainingPair objects, got {type(item).__name__}"
    )


def _open_labels(labels: Any) -> np.ndarray:
    if isinstance(labels, (str, os.PathLike)):
        with open_image(labels) as src:
            return np.asarray(src.levels[0][...])
    if isinstance(labels, ImageSource):
        return np.asarray(labels.levels[0][...])
    if isinstance(labels, (list, tuple)) and labels and hasattr(labels[0], "shape"):
        labels = labels[0]  # multiscale labels: the finest level
    return np.asarray(labels)


def _prepare(pair: TrainingPair, index: int) -> _Volume:
    what = f"training pair {index}"
    try:
        source = open_image(pair.image, axes=pair.axes)
    except SourceError as exc:
        raise TrainingError(f"{what}: the image cannot be used: {exc}") from None
    labels = _open_labels(pair.labels)
    expected = (*source.frame_shape, *source.plane_hw)
    if labels.shape != expected:
        raise TrainingError(
            f"{what}: labels have shape {labels.shape} but the image has {expected} (axes {source.axes!r}); "
            "give one label per pixel of the image, e.g. a napari Labels layer drawn on it"
        )
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TrainingError(
            f"{what}: labels must be integer object ids (0 = background), got dtype {labels.dtype}; "
            "use labels.astype(np.uint16) if they hold whole numbers, or scipy.ndimage.label(mask) "
            "to number the objects of a binary mask"
        )
    n_frame = len(source.frame_shape)
    flat = labels.reshape(-1, *source.plane_hw) if n_frame else labels[None]
    frame_list = list(source.frame_indices())
    frames = [f for f, plane in zip(frame_list, flat) if plane.any()]
    if not frames:
        raise TrainingError(
            f"{what}: the labels hold no object (every pixel is 0); label at least one object "
            "with an id > 0, or leave this pair out"
        )
    window = resolve_window(pair.window, source.sample_values)
    return _Volume(source, labels, window, frames)


class _ClipSampler:
    """Draws clips (model inputs and per-object target masks) from the prepared volumes."""

    def __init__(self, volumes: list[_Volume], cfg: TrainingConfig, image_size: int) -> None:
        self.volumes = volumes
        self.cfg = cfg
        self.size = image_size
        is_stack = [bool(v.source.frame_shape) and v.source.frame_shape[-1] > 1 for v in volumes]
        stacks = [v for v, stack in zip(volumes, is_stack) if stack]
        planes = [v for v, stack in zip(volumes, is_stack) if not stack]
        self.groups = (stacks, planes) if cfg.stack_fraction is not None and stacks and planes else None

    def _volume(self, rng: np.random.Generator) -> _Volume:
        if self.groups is None:
            return self.volumes[int(rng.integers(len(self.volumes)))]
        group = self.groups[0] if rng.random() < self.cfg.stack_fraction else self.groups[1]
        return group[int(rng.integers(len(group)))]

    def _frames(
        self, vol: _Volume, start: tuple[int, ...], rng: np.random.Generator
    ) -> list[tuple[int, ...]]:
        """Consecutive frames along the last frame axis from ``start``, in a random direction."""
        if not start:
            return [start]
        n = vol.source.frame_shape[-1]
        length = min(self.cfg.clip_frames, n)
        step = 1 if rng.random() < 0.5 else -1
        if not 0 <= start[-1] + step * (length - 1) < n:
            step = -step
        if not 0 <= start[-1] + step * (length - 1) < n:  # fits neither way: the longer side
            step = 1 if n - 1 - start[-1] >= start[-1] else -1
            length = (n - start[-1]) if step == 1 else start[-1] + 1
        return [(*start[:-1], start[-1] + step * i) for i in range(length)]

    def _window(
        self, vol: _Volume, frame: tuple[int, ...], rng: np.random.Generator
    ) -> tuple[slice, slice] | None:
        """Crop of the plane (native resolution) or None for a plane that fits the model input."""
        h, w = vol.source.plane_hw
        s = self.size
        if h <= s and w <= s:
            return None
        ids = vol.labels[frame]
        rows, cols = np.nonzero(ids)
        i = int(rng.integers(len(rows)))
        r0 = int(np.clip(rows[i] - rng.integers(s), 0, max(h - s, 0)))
        c0 = int(np.clip(cols[i] - rng.integers(s), 0, max(w - s, 0)))
        return slice(r0, r0 + s), slice(c0, c0 + s)

    def _intensity(self, vol: _Volume, rng: np.random.Generator) -> IntensityWindow:
        """The clip's intensity window: the dataset's, with both ends moved by up to
        ``intensity_jitter`` of its width (never narrower than a tenth of it)."""
        jitter = self.cfg.intensity_jitter
        if not jitter:
            return vol.window
        low, high = vol.window.low, vol.window.high
        width = high - low
        new_low, new_high = np.array([low, high]) + width * rng.uniform(-jitter, jitter, 2)
        new_high = max(new_high, new_low + 0.1 * width)
        return IntensityWindow(float(new_low), float(new_high))

    def _gamma(self, rng: np.random.Generator) -> float:
        """The clip's display exponent (1.0 without ``intensity_gamma``; no draw then, so runs
        without it keep their random sequence)."""
        g = self.cfg.intensity_gamma
        return float(np.exp(rng.uniform(-g, g))) if g else 1.0

    def _plane(
        self, vol: _Volume, frame: tuple[int, ...], crop, window: IntensityWindow, gamma: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> model input (3, S, S) float32 and labels (S, S) int64."""
        s = self.size
        if crop is None:
            plane = apply_window(vol.source.plane(frame), window)
            if gamma != 1.0:
                plane = np.power(plane, gamma, dtype=np.float32)
            ids = torch.from_numpy(vol.labels[frame].astype(np.int64))
            if ids.shape != (s, s):
                ids = F.interpolate(ids[None, None].double(), size=(s, s), mode="nearest-exact")[0, 0].long()
            return to_model_input(plane, s), ids
        rows, cols = crop
        plane = apply_window(vol.source.region(frame, rows, cols), window)
        if gamma != 1.0:
            plane = np.power(plane, gamma, dtype=np.float32)
        ids = vol.labels[frame][rows, cols].astype(np.int64)
        pad = [(0, s - ids.shape[0]), (0, s - ids.shape[1])]
        plane = np.pad(plane, pad + [(0, 0)] * (plane.ndim - 2))  # as the predictor pads edge tiles
        return to_model_input(plane, s), torch.from_numpy(np.pad(ids, pad))

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """-> images (T, 3, S, S) and target masks (T, K, S, S) bool; objects present in frame 0."""
        for _ in range(50):
            vol = self._volume(rng)
            start = vol.frames[int(rng.integers(len(vol.frames)))]
            frames = self._frames(vol, start, rng)
            crop = self._window(vol, start, rng)
            window = self._intensity(vol, rng)
            gamma = self._gamma(rng)
            planes = [self._plane(vol, f, crop, window, gamma) for f in frames]
            images = torch.stack([p[0] for p in planes])  # (T, 3, S, S)
            ids = torch.stack([p[1] for p in planes])  # (T, S, S)
            if self.cfg.augment:
                k = int(rng.integers(4))
                images, ids = images.rot90(k, (-2, -1)), ids.rot90(k, (-2, -1))
                if rng.random() < 0.5:
                    images, ids = images.flip(-1), ids.flip(-1)
            present, counts = torch.unique(ids[0], return_counts=True)
            keep = present[(present != 0) & (counts >= self.cfg.min_object_pixels)].numpy()
            if not len(keep):
                continue
            chosen = rng.permutation(keep)[: self.cfg.max_objects]
            masks = ids[:, None] == torch.from_numpy(chosen)[None, :, None, None]  # (T, K, S, S)
            return images.contiguous(), masks.contiguous()
        raise TrainingError(
            f"found no object of at least {self.cfg.min_object_pixels} pixels (at the model's "
            f"{self.size} x {self.size} input) in 50 random draws; label larger objects or lower "
            "min_object_pixels"
        )


# ---------------------------------------------------------------------------------------------- losses
def _focal(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss, mean over the last two axes."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(-2).mean(-1)


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = logits.sigmoid().flatten(-2)
    target = target.flatten(-2)
    return 1 - (2 * (prob * target).sum(-1) + 1) / (prob.sum(-1) + target.sum(-1) + 1)


def _iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred, target = pred.flatten(-2), target.flatten(-2)
    inter = (pred & target).sum(-1).float()
    union = (pred | target).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))


def _frame_loss(out: DecoderOutput, target: torch.Tensor, cfg: TrainingConfig) -> dict[str, torch.Tensor]:
    """SAM2's loss for one frame's decoder output, averaged over the K objects.

    target: (K, S, S) bool. Mask and IoU terms count only where the object is present.
    """
    s = target.shape[-1]
    logits = F.interpolate(
        out.masks.float(), size=(s, s), mode="bilinear", align_corners=False
    )  # (K, M, S, S)
    tgt = target[:, None].float().expand_as(logits)
    focal, dice = _focal(logits, tgt), _dice(logits, tgt)  # (K, M)
    combo = cfg.loss_focal * focal + cfg.loss_dice * dice
    best = combo.detach().argmin(dim=1)  # only the best of the multimask outputs learns the mask
    rows = torch.arange(len(best), device=best.device)
    with torch.no_grad():
        actual = _iou(logits > 0, tgt.bool())
    iou_l1 = (out.iou.float() - actual).abs().mean(dim=1)  # every output learns its IoU
    present = target.flatten(1).any(dim=1).float()  # (K,)
    obj = F.binary_cross_entropy_with_logits(out.object_score[:, 0].float(), present, reduction="none")
    n_present = present.sum().clamp(min=1)
    return {
        "focal": (focal[rows, best] * present).sum() / n_present,
        "dice": (dice[rows, best] * present).sum() / n_present,
        "iou": (iou_l1 * present).sum() / n_present,
        "object": obj.mean(),
    }


# ---------------------------------------------------------------------------------------------- model steps
def _expand(feats: ImageFeatures, k: int) -> ImageFeatures:
    return ImageFeatures(
        feats.embed.expand(k, -1, -1, -1),
        feats.pos.expand(k, -1, -1, -1),
        tuple(f.expand(k, -1, -1, -1) for f in feats.high_res),
    )


def _to_binary(low_res: torch.Tensor, size: int) -> np.ndarray:
    """(K, 1, s, s) logits -> (K, S, S) bool numpy masks at model resolution."""
    up = F.interpolate(low_res.detach().float(), size=(size, size), mode="bilinear", align_corners=False)
    return (up[:, 0] > 0).cpu().numpy()


def _prompt_batch(
    prompts: list[Prompt], size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [prompt_tensors(p, (size, size), size, device) for p in prompts]
    return torch.cat([c for c, _ in pairs]), torch.cat([lb for _, lb in pairs])


def _clip_loss(
    model: Sam2Model,
    images: torch.Tensor,
    masks: torch.Tensor,
    cfg: TrainingConfig,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one clip: images (T, 3, S, S), target masks (T, K, S, S) bool on the model's device."""
    mc = model.config
    s = mc.image_size
    t_len, k = masks.shape[:2]
    dev = images.device
    feats = model.encode_image(images)
    terms: list[dict[str, torch.Tensor]] = []
    gt0 = masks[0].cpu().numpy()

    # prompted first frame: click / box / mask, then correction clicks with the previous logits
    f0 = feats.select(0)
    u = rng.random()
    if u < cfg.prob_mask and t_len > 1:  # a mask prompt alone gives no loss on a single plane
        out0 = model.predict_from_mask(_expand(f0, k), masks[0][:, None].float())
    else:
        if u < cfg.prob_mask + cfg.prob_box:
            prompts = [Prompt(box=jittered_box(m, rng, cfg.box_jitter)) for m in gt0]
        else:
            prompts = [Prompt([first_click(m, rng, cfg.click_center_prob)], [1]) for m in gt0]
        embed = model.embed_without_memory(f0)
        mask_in = None
        for round_ in range(cfg.correction_rounds + 1):
            coords, labels = _prompt_batch(prompts, s, dev)
            multimask = labels.shape[1] <= 1  # as SAM2: several outputs for one click only
            dec = model.decode(embed, f0.high_res, coords, labels, mask_in, multimask, repeat_image=True)
            terms.append(_frame_loss(dec, masks[0], cfg))
            out0 = model.frame_output(dec, multimask)
            if round_ == cfg.correction_rounds:
                break
            pred = _to_binary(out0.low_res, s)
            new = []
            for p, g, m in zip(prompts, gt0, pred):
                r, c, lab = correction_click(g, m, rng, cfg.click_center_prob)
                new.append(Prompt(np.vstack([p.points, [[r, c]]]), np.append(p.labels, lab), p.box))
            prompts = new
            mask_in = out0.low_res.detach().clamp(-32.0, 32.0)

    # later frames: conditioned on memories and pointers, decoded without prompts
    track = Track(0)
    first = FrameResult(out0.low_res, out0.obj_ptr, out0.object_score)
    mem, mem_pos = model.encode_memory(_expand(f0, k), first.low_res, first.object_score, from_clicks=True)
    first.memory = mem
    track.cond[0] = first
    # the tracker divides pointer distances by min(stack length, 16) - 1: vary it so the
    # temporal encoding is seen at the scales of short clips and of long stacks
    max_offset = int(rng.integers(max(t_len - 1, 1), max(mc.max_obj_ptrs, t_len)))
    for t in range(1, t_len):
        ft = _expand(feats.select(t), k)
        spatial, pointers = select_memories(track, t, False, t_len, mc.num_maskmem, mc.max_obj_ptrs)
        memories = [Memory(r.memory, mem_pos, slot) for r, slot in spatial]
        ptrs = torch.stack([r.obj_ptr for _, r in pointers], dim=1)  # (K, P, C)
        offsets = torch.tensor([d for d, _ in pointers], dtype=torch.float32)
        embed = model.condition_on_memory(ft, memories, ptrs, offsets, max_offset)
        coords = embed.new_zeros(k, 1, 2)
        labels = torch.full((k, 1), PAD, dtype=torch.int32, device=dev)
        dec = model.decode(embed, ft.high_res, coords, labels, None, multimask=True)
        terms.append(_frame_loss(dec, masks[t], cfg))
        out = model.frame_output(dec, multimask=True)
        result = FrameResult(out.low_res, out.obj_ptr, out.object_score)
        result.memory, _ = model.encode_memory(ft, out.low_res, out.object_score, from_clicks=False)
        track.tracked_only[t] = result

    parts = {name: torch.stack([d[name] for d in terms]).mean() for name in terms[0]}
    loss = (
        cfg.loss_focal * parts["focal"]
        + cfg.loss_dice * parts["dice"]
        + cfg.loss_iou * parts["iou"]
        + cfg.loss_object * parts["object"]
    )
    return loss, {name: float(v.detach()) for name, v in parts.items()}


# ---------------------------------------------------------------------------------------------- loop
def _freeze(model: Sam2Model, prefixes: Sequence[str]) -> list[torch.nn.Parameter]:
    names = [n for n, _ in model.named_parameters()]
    for prefix in prefixes:
        if not any(n == prefix or n.startswith(prefix + ".") for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise TrainingError(f"freeze={prefix!r} matches no parameter; top-level parts: {', '.join(tops)}")
    trainable = []
    for name, p in model.named_parameters():
        frozen = any(name == pre or name.startswith(pre + ".") for pre in prefixes)
        p.requires_grad_(not frozen)
        if not frozen:
            trainable.append(p)
    if not trainable:
        raise TrainingError("freeze leaves no parameter to train")
    return trainable


def _schedule(cfg: TrainingConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(cfg.steps - cfg.warmup_steps, 1)
        progress = min((step - cfg.warmup_steps) / span, 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def recent_parts(history: list[dict[str, float]], last: int = 50) -> dict[str, float]:
    """Each loss part averaged over the ``last`` steps of ``history`` ({} when there were none)."""
    recent = history[-last:]
    return {k: float(np.mean([h[k] for h in recent])) for k in recent[0]} if recent else {}


def train(
    model: Sam2Model,
    data: Iterable[Any],
    config: TrainingConfig | None = None,
    *,
    device: str | torch.device | None = None,
    out: str | os.PathLike | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> TrainingResult:
    """Train ``model`` in place on ``data``; the model is left in eval mode.

    Args:
        model: a :class:`Sam2Model` (official weights to fine-tune, or freshly initialised).
        data: (image, labels) pairs, :class:`TrainingPair` objects, or objects with ``image``,
            ``labels`` and ``axes`` attributes (e.g. ``engine.synthetic.SyntheticStack``).
        config: the options (:class:`TrainingConfig`).
        device: "auto" (default), "cpu", "cuda", ... (see :func:`.device.select_device`). CPU runs
            in float32; CUDA under bfloat16 autocast where supported.
        out: write the trained weights here (official layout plus our config) when done or
            cancelled.
        progress: ``progress(step, total, loss)`` after every step.
        cancel: ``cancel()`` returning True stops before the next step (the result says so).

    Raises:
        TrainingError: unusable data (labels of another shape, non-integer labels, no objects)
            or options (e.g. a ``freeze`` prefix that matches nothing).
    """
    cfg = config or TrainingConfig()
    pairs = [_as_pair(item) for item in data]
    if not pairs:
        raise TrainingError("no training data: give at least one (image, labels) pair")
    volumes = [_prepare(p, i) for i, p in enumerate(pairs)]
    dev = select_device(device)
    if any(p.is_inference() for p in model.parameters()):
        raise TrainingError(
            "the model's weights were created under torch.inference_mode() and cannot be trained; "
            "load or build the model outside inference mode"
        )
    result = TrainingResult()
    sampler = _ClipSampler(volumes, cfg, model.config.image_size)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to(dev)
    trainable = _freeze(model, cfg.freeze)
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg))
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    # tiny gradients become denormal floats, which slow CPU training down ~50x within minutes
    flush = dev.type == "cpu" and torch.set_flush_denormal(True)
    with torch.inference_mode(False), torch.enable_grad():
        model.train()
        try:
            for step in range(cfg.steps):
                if cancel is not None and cancel():
                    result.cancelled = True
                    break
                opt.zero_grad(set_to_none=True)
                total, sums = 0.0, {}
                for _ in range(cfg.clips_per_step):  # gradients accumulate over the step's clips
                    images, masks = sampler.sample(rng)
                    with autocast(dev):
                        loss, parts = _clip_loss(model, images.to(dev), masks.to(dev), cfg, rng)
                    (loss / cfg.clips_per_step).backward()
                    total += float(loss.detach()) / cfg.clips_per_step
                    sums = {k: sums.get(k, 0.0) + v / cfg.clips_per_step for k, v in parts.items()}
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                opt.step()
                sched.step()
                result.losses.append(total)
                history.append(sums)
                result.steps = step + 1
                if progress is not None:
                    progress(step + 1, cfg.steps, result.losses[-1])
        finally:
            if flush:
                torch.set_flush_denormal(False)
            model.eval()
            for p in model.parameters():
                p.requires_grad_(True)
    result.seconds = time.perf_counter() - start
    result.parts = recent_parts(history)
    if out is not None:
        result.checkpoint = save_checkpoint(model, out)
    return result
