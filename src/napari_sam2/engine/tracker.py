"""Track objects through a sequence of frames (video frames, z-slices or time points) with SAM2.

The state is typed: a :class:`Track` per object holding :class:`FrameResult` records. Memory
selection follows SAM2's rules (see :func:`select_memories`), with three deliberate
differences from Meta's video predictor, each covered by a test:

* A click on a frame that was already tracked (a *correction*) makes that frame a
  conditioning frame, so later propagation keeps it. Meta's default predictor recomputes the
  frame without the click and silently drops the correction.
* Stored memories (bfloat16, as in SAM2) are cast to the compute dtype before use, so
  float32 runs never mix dtypes (Meta's predictor crashes when a frame has spatial memories but
  no object pointer, e.g. reverse tracking from the last frame).
* The temporal encoding of object pointers divides by ``max(min(num_frames, 16) - 1, 1)``, so
  a one-frame sequence does not produce NaN.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..model import ImageFeatures, Memory, Sam2Model
from ..model._layers import resize_bilinear
from .prompts import Prompt, PromptError, prompt_tensors

__all__ = ["TrackerError", "FrameResult", "Track", "Tracker", "select_memories"]

MEMORY_DTYPE = torch.bfloat16
"""Stored memories are rounded to bfloat16, as in SAM2 (half the RAM; part of its numerics)."""


class TrackerError(RuntimeError):
    """Propagation was asked for in a state that does not allow it (e.g. no prompts)."""


@dataclass
class FrameResult:
    """One object's result on one frame.

    Attributes:
        low_res: mask logits at the decoder's resolution (1, 1, S/4, S/4), float32; None once
            released (the frame fell out of the retained window and was already yielded).
        obj_ptr: object pointer (1, C). object_score: presence logit (1, 1). Both are small and
            always kept.
        memory: memory features (1, mem_dim, S/16, S/16) in :data:`MEMORY_DTYPE`, or None
            until encoded or once released.
    """

    low_res: torch.Tensor | None
    obj_ptr: torch.Tensor
    object_score: torch.Tensor
    memory: torch.Tensor | None = None

    def release(self) -> None:
        """Drop the large tensors (mask logits and memory), keeping pointer and score."""
        self.low_res = None
        self.memory = None


@dataclass
class Track:
    """Everything known about one object.

    ``clicks`` holds the accumulated clicks per frame (model coordinates), ``cond`` the prompted
    (conditioning) frames, ``tracked_only`` the frames computed by propagation, ``pending`` the
    prompted frames whose memory is not encoded yet. ``reverse_at`` records, per frame visited
    by propagation, whether it was reached backwards.
    """

    obj_id: int
    clicks: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    cond: dict[int, FrameResult] = field(default_factory=dict)
    tracked_only: dict[int, FrameResult] = field(default_factory=dict)
    pending: dict[int, FrameResult] = field(default_factory=dict)
    reverse_at: dict[int, bool] = field(default_factory=dict)

    def result(self, frame: int) -> FrameResult | None:
        return self.pending.get(frame) or self.cond.get(frame) or self.tracked_only.get(frame)


def select_memories(
    track: Track, frame: int, reverse: bool, num_frames: int, num_maskmem: int = 7, max_ptrs: int = 16
) -> tuple[list[tuple[FrameResult, int]], list[tuple[int, FrameResult]]]:
    """SAM2's choice of memories for ``frame``.

    Returns (spatial, pointers): spatial memories as (result, slot) -- every conditioning frame
    in slot 0, then the ``num_maskmem - 1`` previous frames in the tracking direction (slot
    ``num_maskmem - d`` for distance d) where they exist -- and object pointers as (distance,
    result): conditioning frames not ahead of ``frame``, then up to ``min(num_frames,
    max_ptrs) - 1`` previous tracked frames.
    """
    step = 1 if reverse else -1  # towards the frames already seen
    spatial = [(r, 0) for r in track.cond.values()]
    for slot in range(1, num_maskmem):
        r = track.tracked_only.get(frame + step * (num_maskmem - slot))
        if r is not None and r.memory is not None:
            spatial.append((r, slot))
    pointers = [
        (abs(frame - t), r) for t, r in track.cond.items() if (t >= frame if reverse else t <= frame)
    ]
    for d in range(1, min(num_frames, max_ptrs)):
        t = frame + step * d
        if not 0 <= t < num_frames:
            break
        r = track.tracked_only.get(t)
        if r is not None:
            pointers.append((d, r))
    return spatial, pointers


class Tracker:
    """Prompts on some frames -> masks on all frames, for any number of objects.

    Args:
        model: a :class:`Sam2Model` (on its compute device, in eval mode).
        frames: ``frames(i)`` returns frame i as a normalised model input (3, S, S).
        num_frames: length of the sequence.
        frame_hw: (H, W) of the original frames: prompts are given and masks returned at it.
        feature_cache: how many frames' image features to keep.
        retain: how many tracked frames behind the current one keep their memory and mask
            logits during propagation ("auto": ``num_maskmem - 1`` = 6, all that SAM2's memory
            reads). Older frames keep only their object pointer (1 KB), so memory does not grow
            with the number of frames; None keeps everything. A frame already released has no
            logits for :meth:`frame_logits` (they were yielded when it was tracked) and gives
            no previous-mask prompt to a later correction click.
    """

    def __init__(
        self,
        model: Sam2Model,
        frames: Callable[[int], torch.Tensor],
        num_frames: int,
        frame_hw: tuple[int, int],
        feature_cache: int = 2,
        retain: int | str | None = "auto",
    ) -> None:
        if num_frames < 1:
            raise TrackerError("a sequence needs at least one frame")
        self.model = model
        self.frames = frames
        self.num_frames = num_frames
        self.frame_hw = tuple(frame_hw)
        self.tracks: dict[int, Track] = {}
        self._features: OrderedDict[int, ImageFeatures] = OrderedDict()
        self._feature_cache = max(1, feature_cache)
        self._memory_pos: torch.Tensor | None = None
        self.retain = model.config.num_maskmem - 1 if retain == "auto" else retain

    # ------------------------------------------------------------------ helpers
    @property
    def _cfg(self):
        return self.model.config

    def _check_frame(self, frame: int) -> None:
        if not 0 <= frame < self.num_frames:
            raise IndexError(f"frame {frame} is outside the sequence of {self.num_frames} frames")

    def features(self, frame: int) -> ImageFeatures:
        """Image features of ``frame``, from the small cache or freshly encoded."""
        if frame in self._features:
            self._features.move_to_end(frame)
            return self._features[frame]
        image = self.frames(frame).to(self.model.device, self.model.dtype)
        feats = self.model.encode_image(image.unsqueeze(0))
        self._features[frame] = feats
        while len(self._features) > self._feature_cache:
            self._features.popitem(last=False)
        return feats

    def _conditioned(self, track: Track, frame: int, feats: ImageFeatures, reverse: bool) -> torch.Tensor:
        spatial, pointers = select_memories(
            track, frame, reverse, self.num_frames, self._cfg.num_maskmem, self._cfg.max_obj_ptrs
        )
        memories = [Memory(r.memory, self._memory_pos, slot) for r, slot in spatial]
        ptrs = offsets = None
        if pointers:
            ptrs = torch.stack([r.obj_ptr for _, r in pointers], dim=1)  # (1, P, C)
            offsets = torch.tensor([d for d, _ in pointers], dtype=torch.float32)
        max_offset = min(self.num_frames, self._cfg.max_obj_ptrs) - 1
        return self.model.condition_on_memory(feats, memories, ptrs, offsets, max_offset)

    def _encode_memory(self, result: FrameResult, feats: ImageFeatures, from_clicks: bool) -> None:
        mem, pos = self.model.encode_memory(feats, result.low_res, result.object_score, from_clicks)
        result.memory = mem.to(MEMORY_DTYPE)
        if self._memory_pos is None:
            self._memory_pos = pos  # identical for every frame

    def _to_frame_res(self, logits: torch.Tensor) -> torch.Tensor:
        return resize_bilinear(logits, self.frame_hw)[0, 0]

    def frame_logits(self, frame: int) -> dict[int, torch.Tensor]:
        """Mask logits (H, W) of every object that has a result on ``frame``."""
        out = {}
        for obj_id, track in self.tracks.items():
            r = track.result(frame)
            if r is not None and r.low_res is not None:
                out[obj_id] = self._to_frame_res(r.low_res)
        return out

    # ------------------------------------------------------------------ prompts
    @torch.inference_mode()
    def add_prompt(self, frame: int, obj_id: int, prompt: Prompt, clear: bool = True) -> dict[int, torch.Tensor]:
        """Add clicks and/or a box for ``obj_id`` on ``frame``; returns that frame's logits.

        With ``clear=False`` the clicks add to the ones already on this frame. The previous
        result on this frame, if any, is given to the decoder as a mask prompt.
        """
        self._check_frame(frame)
        prompt.check_inside(self.frame_hw)
        if prompt.box is not None and not clear:
            raise PromptError("a box starts a new prompt on its frame: pass clear=True with a box")
        track = self.tracks.setdefault(obj_id, Track(obj_id))
        coords, labels = prompt_tensors(prompt, self.frame_hw, self._cfg.image_size, self.model.device)
        if not clear and frame in track.clicks:
            old_c, old_l = track.clicks[frame]
            coords, labels = torch.cat((old_c, coords), dim=1), torch.cat((old_l, labels), dim=1)
        track.clicks[frame] = (coords, labels)

        feats = self.features(frame)
        first_visit = frame not in track.reverse_at
        prev = track.result(frame)
        prev_logits = None if prev is None or prev.low_res is None else prev.low_res.clamp(-32.0, 32.0)
        if first_visit:
            embed = self.model.embed_without_memory(feats)
        else:
            embed = self._conditioned(track, frame, feats, track.reverse_at[frame])
        out = self.model.predict_frame(
            embed, feats.high_res, coords, labels, prev_logits, multimask=labels.shape[1] <= 1
        )
        track.pending[frame] = FrameResult(out.low_res, out.obj_ptr, out.object_score)
        return self.frame_logits(frame)

    @torch.inference_mode()
    def add_mask(self, frame: int, obj_id: int, mask: np.ndarray | torch.Tensor) -> dict[int, torch.Tensor]:
        """Use a binary (H, W) mask as ``obj_id``'s answer on ``frame``; returns the frame's logits."""
        self._check_frame(frame)
        m = torch.as_tensor(np.asarray(mask)).to(self.model.device)
        if m.ndim != 2:
            raise ValueError(f"a mask prompt is a 2D (H, W) array, got shape {tuple(m.shape)}")
        m = m.bool().float()[None, None]
        s = self._cfg.image_size
        if tuple(m.shape[-2:]) != (s, s):
            m = (resize_bilinear(m, s, antialias=True) >= 0.5).float()
        track = self.tracks.setdefault(obj_id, Track(obj_id))
        track.clicks.pop(frame, None)
        out = self.model.predict_from_mask(self.features(frame), m)
        track.pending[frame] = FrameResult(out.low_res, out.obj_ptr, out.object_score)
        return self.frame_logits(frame)

    # ------------------------------------------------------------------ propagation
    def _commit_pending(self) -> None:
        """Encode memories of newly prompted frames and make them conditioning frames."""
        if not self.tracks:
            raise TrackerError("no object has a prompt yet: add clicks, a box or a mask first")
        for track in self.tracks.values():
            for frame, result in track.pending.items():
                if result.memory is None:
                    self._encode_memory(result, self.features(frame), from_clicks=True)
                track.cond[frame] = result
            track.pending.clear()
            if not track.cond:
                raise TrackerError(f"object {track.obj_id} has no prompt; add one or remove the object")
            for frame in track.cond:
                track.tracked_only.pop(frame, None)

    @torch.inference_mode()
    def propagate(
        self, start: int | None = None, reverse: bool = False, max_frames: int | None = None
    ) -> Iterator[tuple[int, dict[int, torch.Tensor]]]:
        """Track every object from ``start`` (default: the first prompted frame) to one end.

        Yields (frame, {obj_id: logits (H, W)}) for each frame in order. Prompted frames keep
        their prompted result.
        """
        self._commit_pending()
        if start is None:
            start = min(min(t.cond) for t in self.tracks.values())
        self._check_frame(start)
        last = 0 if reverse else self.num_frames - 1
        if max_frames is not None:
            last = max(start - max_frames, 0) if reverse else min(start + max_frames, self.num_frames - 1)
        order: Sequence[int] = range(start, last - 1, -1) if reverse else range(start, last + 1)
        for frame in order:
            feats = None
            for track in self.tracks.values():
                if frame not in track.cond:
                    if feats is None:
                        feats = self.features(frame)
                    embed = self._conditioned(track, frame, feats, reverse)
                    out = self.model.predict_frame(embed, feats.high_res, multimask=True)
                    result = FrameResult(out.low_res, out.obj_ptr, out.object_score)
                    self._encode_memory(result, feats, from_clicks=False)
                    track.tracked_only[frame] = result
                track.reverse_at[frame] = reverse
                if self.retain is not None:  # the frame leaving SAM2's memory window
                    old = track.tracked_only.get(frame + (1 if reverse else -1) * (self.retain + 1))
                    if old is not None:
                        old.release()
            yield frame, self.frame_logits(frame)
