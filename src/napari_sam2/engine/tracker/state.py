"""The tracker's typed state: per-object :class:`Track` records of :class:`FrameResult` s, the
:class:`Recipe` that lets a released result be recomputed, run reports and errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..prompts import Prompt
from .crop import Crop

MEMORY_DTYPE = torch.bfloat16
"""Stored memories are rounded to bfloat16, as in SAM2 (half the RAM; part of its numerics)."""

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class TrackerError(RuntimeError):
    """Propagation was asked for in a state that does not allow it (e.g. no prompts)."""


@dataclass
class FrameResult:
    """One object's result on one frame.

    Attributes:
        low_res: mask logits at the decoder's resolution (1, 1, S/4, S/4) over ``crop``,
            float32; None once released (the frame fell out of the retained range and was
            already yielded) or for a frame skipped after the object was absent too long.
        obj_ptr: object pointer (1, C). object_score: presence logit (1, 1). Both are small and
            always kept.
        memory: memory features (1, mem_dim, S/16, S/16) in :data:`MEMORY_DTYPE`, or None
            until encoded or once released.
        crop: where ``low_res`` lies on the frame.
        iou: the decoder's predicted IoU of the chosen mask.
        area: mask area in plane pixels (counted at the decoder's resolution, scaled).
        bbox: (row0, col0, row1, col1) of the mask in plane pixels (ends exclusive), None if empty.
        stopped: the frame was not computed because the object was absent for too many frames.
        recipe: how a tracked result was computed, so that its logits and memory can be
            recomputed exactly after they were released (None for prompted results, which are
            never released, and for stopped frames).
    """

    low_res: torch.Tensor | None
    obj_ptr: torch.Tensor
    object_score: torch.Tensor
    memory: torch.Tensor | None = None
    crop: Crop | None = None
    iou: float = 1.0
    area: float = 0.0
    bbox: tuple[float, float, float, float] | None = None
    stopped: bool = False
    recipe: Recipe | None = field(default=None, repr=False, compare=False)  # a chain of results

    @property
    def present(self) -> bool:
        return float(self.object_score.reshape(-1)[0]) > 0

    @property
    def has_memory(self) -> bool:
        """True when the memory is held or can be recomputed (not for a stopped frame)."""
        return self.memory is not None or self.recipe is not None

    @property
    def released(self) -> bool:
        """True when the large tensors were dropped and can be recomputed from the recipe."""
        return self.memory is None and self.recipe is not None

    def release(self) -> None:
        """Drop the large tensors (mask logits and memory), keeping pointer and score."""
        self.low_res = None
        self.memory = None


@dataclass(frozen=True, eq=False)
class Recipe:
    """The inputs of one tracked frame's computation (see :meth:`Tracker._restore`).

    ``spatial`` holds the results whose memories were read, with their slots; ``pointers`` the
    object pointers read, with their distances (the tensors themselves: pointers are never
    released). ``order`` increases with every computation, so a result's inputs always have a
    smaller order than the result.
    """

    frame: int
    order: int
    spatial: tuple[tuple[FrameResult, int], ...]
    pointers: tuple[tuple[int, torch.Tensor], ...]


@dataclass
class Track:
    """Everything known about one object.

    ``prompts`` holds the accumulated clicks/box per frame (plane coordinates), ``cond`` the
    prompted (conditioning, key) frames, ``tracked_only`` the frames computed by propagation,
    ``pending`` the prompted frames whose memory is not encoded yet. ``reverse_at`` records,
    per frame visited by propagation, whether it was reached backwards; ``owner`` the keyframe
    each frame was tracked from by :meth:`Tracker.run`; ``stale`` the keyframes whose frames
    :meth:`Tracker.run` still has to (re)compute.
    """

    obj_id: int
    prompts: dict[int, Prompt] = field(default_factory=dict)
    cond: dict[int, FrameResult] = field(default_factory=dict)
    tracked_only: dict[int, FrameResult] = field(default_factory=dict)
    pending: dict[int, FrameResult] = field(default_factory=dict)
    reverse_at: dict[int, bool] = field(default_factory=dict)
    owner: dict[int, int] = field(default_factory=dict)
    stale: set[int] = field(default_factory=set)

    def result(self, frame: int) -> FrameResult | None:
        return self.pending.get(frame) or self.cond.get(frame) or self.tracked_only.get(frame)


@dataclass
class RunReport:
    """What :meth:`Tracker.run` did: frames finished (written) in order, out of ``total``;
    ``not_found``: (frame, obj_id) keyframes where the model found no object at the prompt
    (object score <= 0 or an empty mask): nothing was written for that object there, so the
    labels it already had on that frame are kept, and the user is told (:attr:`message`)."""

    frames: list[int] = field(default_factory=list)
    total: int = 0
    cancelled: bool = False
    not_found: list[tuple[int, int]] = field(default_factory=list)

    @property
    def message(self) -> str:
        """One line for the user when the model found nothing at some prompt ('' otherwise)."""
        return not_found_message(self.not_found)


NOT_FOUND_HINT = "the model found no object at the click; try a box, more clicks or an official model"


def asks_for_an_object(prompt: Prompt | None) -> bool:
    """True for a prompt of positive clicks and/or a box only: an empty answer to it means the
    model found nothing. With a negative click an empty answer can be what the user asked for."""
    return prompt is not None and not bool((np.asarray(prompt.labels) == 0).any())


def not_found_message(where: Sequence[tuple[Any, int]]) -> str:
    """'object 3 on frame 12: the model found no object at the click; ...' for (frame, obj_id)
    pairs (frames as ints or index tuples); '' for none."""
    if not where:
        return ""
    parts = ", ".join(
        f"object {obj} on frame {list(f) if isinstance(f, tuple) else f}" for f, obj in sorted(where, key=str)
    )
    return f"{parts}: {NOT_FOUND_HINT}"


def segment_bounds(keyframes: Sequence[int], key: int, num_frames: int) -> tuple[int, int]:
    """First and last frame (inclusive) owned by keyframe ``key``: the frames nearer to it than
    to any other keyframe; a frame exactly between two keyframes belongs to the earlier one."""
    keys = sorted(keyframes)
    i = keys.index(key)
    lo = 0 if i == 0 else (keys[i - 1] + key) // 2 + 1
    hi = num_frames - 1 if i == len(keys) - 1 else (key + keys[i + 1]) // 2
    return lo, hi
