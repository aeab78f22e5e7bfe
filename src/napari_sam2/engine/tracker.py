"""Track objects through a sequence of frames (video frames, z-slices or time points) with SAM2.

The state is typed: a :class:`Track` per object holding :class:`FrameResult` records. There are
two ways to run it:

* :meth:`Tracker.run` (the one to use): every prompted frame is a *keyframe*; each frame belongs
  to its nearest keyframe (a tie goes to the earlier one) and is tracked outward from it, forward
  after it and backward before it, conditioned on that keyframe and the frames between them only.
  Where the passes of two keyframes meet, the nearer keyframe decides, so results do not depend
  on the order of passes, and a new click re-runs only the frames the clicked frame now owns.
  Finished frames stream to a :class:`~napari_sam2.engine.labels.LabelWriter`, with progress,
  cancel, an optional stop after N absent frames, and per-frame statistics for review.
* :meth:`Tracker.propagate`: one pass from a start frame to one end with SAM2's own memory rules
  (all conditioning frames and any tracked frame in reach), equal to Meta's video predictor.

Memory selection follows SAM2 (see :func:`select_memories`), with three deliberate differences
from Meta's video predictor, each covered by a test:

* A click on a frame that was already tracked (a *correction*) makes that frame a
  conditioning frame, so later propagation keeps it. Meta's default predictor recomputes the
  frame without the click and silently drops the correction.
* Stored memories (bfloat16, as in SAM2) are cast to the compute dtype before use, so
  float32 runs never mix dtypes (Meta's predictor crashes when a frame has spatial memories but
  no object pointer, e.g. reverse tracking from the last frame).
* The temporal encoding of object pointers divides by ``max(min(num_frames, 16) - 1, 1)``, so
  a one-frame sequence does not produce NaN.

Frames larger than the model input are tracked at native resolution in a square *window* per
object (``Tracker(window=...)``): centred on the object's mask in the previous frame, re-centred
every frame and grown when the object grows, so a small object on a large plane is neither
squashed nor cut at tile borders.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..model import ImageFeatures, Memory, Sam2Model
from ..model._layers import resize_bilinear
from ..model.sam2_model import NO_OBJECT_LOGIT
from .labels import LabelWriter, MaskPatch, seed_objects
from .prompts import Prompt, PromptError, prompt_tensors

__all__ = [
    "TrackerError",
    "Window",
    "FrameResult",
    "FrameStats",
    "Track",
    "RunReport",
    "Tracker",
    "select_memories",
    "segment_bounds",
]

MEMORY_DTYPE = torch.bfloat16
"""Stored memories are rounded to bfloat16, as in SAM2 (half the RAM; part of its numerics)."""

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class TrackerError(RuntimeError):
    """Propagation was asked for in a state that does not allow it (e.g. no prompts)."""


@dataclass(frozen=True)
class Window:
    """The part of a frame the model sees for one object: plane pixels [row0, row0 + height) x
    [col0, col0 + width). It may reach past the plane (the outside is padded with the window's
    low value, i.e. black)."""

    row0: int
    col0: int
    height: int
    width: int

    @property
    def hw(self) -> tuple[int, int]:
        return self.height, self.width

    def inside(self, plane_hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """The part of the window within a plane of ``plane_hw`` pixels: (row0, col0, row1, col1),
        ends exclusive (row1 <= row0 or col1 <= col0 when they do not overlap)."""
        return (
            max(self.row0, 0),
            max(self.col0, 0),
            min(self.row0 + self.height, plane_hw[0]),
            min(self.col0 + self.width, plane_hw[1]),
        )

    def padded(self, part: np.ndarray, plane_hw: tuple[int, int]) -> np.ndarray:
        """A window-sized array of zeros with ``part`` (the plane's pixels at :meth:`inside`, with
        any trailing channel axis) in its place."""
        r0, c0, r1, c1 = self.inside(plane_hw)
        out = np.zeros((self.height, self.width, *part.shape[2:]), part.dtype)
        out[r0 - self.row0 : r1 - self.row0, c0 - self.col0 : c1 - self.col0] = part
        return out

    def contains(self, rc: np.ndarray) -> bool:
        """True if every (row, col) of ``rc`` (N, 2) lies inside the window."""
        rc = np.asarray(rc, dtype=np.float64).reshape(-1, 2)
        rows_ok = (rc[:, 0] >= self.row0) & (rc[:, 0] <= self.row0 + self.height - 1)
        cols_ok = (rc[:, 1] >= self.col0) & (rc[:, 1] <= self.col0 + self.width - 1)
        return bool((rows_ok & cols_ok).all())


@dataclass
class FrameResult:
    """One object's result on one frame.

    Attributes:
        low_res: mask logits at the decoder's resolution (1, 1, S/4, S/4) over ``window``,
            float32; None once released (the frame fell out of the retained window and was
            already yielded) or for a frame skipped after the object was absent too long.
        obj_ptr: object pointer (1, C). object_score: presence logit (1, 1). Both are small and
            always kept.
        memory: memory features (1, mem_dim, S/16, S/16) in :data:`MEMORY_DTYPE`, or None
            until encoded or once released.
        window: where ``low_res`` lies on the frame.
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
    window: Window | None = None
    iou: float = 1.0
    area: float = 0.0
    bbox: tuple[float, float, float, float] | None = None
    stopped: bool = False
    recipe: Recipe | None = None

    @property
    def present(self) -> bool:
        return float(self.object_score.reshape(-1)[0]) > 0

    @property
    def released(self) -> bool:
        """True when the large tensors were dropped and can be recomputed from the recipe."""
        return self.memory is None and self.recipe is not None

    def release(self) -> None:
        """Drop the large tensors (mask logits and memory), keeping pointer and score."""
        self.low_res = None
        self.memory = None


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class FrameStats:
    """Review record of one object on one frame (see :meth:`Tracker.stats`).

    ``area_change`` is relative to the neighbouring frame towards the keyframe the frame was
    tracked from: (area - neighbour area) / max(neighbour area, 1); None on keyframes.
    """

    frame: int
    obj_id: int
    object_score: float
    iou: float
    area: float
    area_change: float | None
    keyframe: bool
    stopped: bool

    @property
    def present(self) -> bool:
        return self.object_score > 0


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
    """What :meth:`Tracker.run` did: frames finished (written) in order, out of ``total``."""

    frames: list[int] = field(default_factory=list)
    total: int = 0
    cancelled: bool = False


def segment_bounds(keyframes: Sequence[int], key: int, num_frames: int) -> tuple[int, int]:
    """First and last frame (inclusive) owned by keyframe ``key``: the frames nearer to it than
    to any other keyframe; a frame exactly between two keyframes belongs to the earlier one."""
    keys = sorted(keyframes)
    i = keys.index(key)
    lo = 0 if i == 0 else (keys[i - 1] + key) // 2 + 1
    hi = num_frames - 1 if i == len(keys) - 1 else (key + keys[i + 1]) // 2
    return lo, hi


def select_memories(
    track: Track,
    frame: int,
    reverse: bool,
    num_frames: int,
    num_maskmem: int = 7,
    max_ptrs: int = 16,
    keyframe: int | None = None,
) -> tuple[list[tuple[FrameResult, int]], list[tuple[int, FrameResult]]]:
    """SAM2's choice of memories for ``frame``.

    Returns (spatial, pointers): spatial memories as (result, slot) -- every conditioning frame
    in slot 0, then the ``num_maskmem - 1`` previous frames in the tracking direction (slot
    ``num_maskmem - d`` for distance d) where they exist -- and object pointers as (distance,
    result): conditioning frames not ahead of ``frame``, then up to ``min(num_frames,
    max_ptrs) - 1`` previous tracked frames.

    With ``keyframe`` (used by :meth:`Tracker.run`), the only conditioning frame is that
    keyframe and previous frames count only if they lie between it and ``frame``.
    """
    step = 1 if reverse else -1  # towards the frames already seen
    if keyframe is None:
        conds = dict(track.cond)

        def usable(t: int) -> bool:
            return True
    else:
        conds = {keyframe: track.cond[keyframe]}

        def usable(t: int) -> bool:
            return (t - keyframe) * (frame - keyframe) > 0

    spatial = [(r, 0) for r in conds.values()]
    for slot in range(1, num_maskmem):
        t = frame + step * (num_maskmem - slot)
        r = track.tracked_only.get(t)
        if r is not None and not r.stopped and usable(t):
            spatial.append((r, slot))
    pointers = [(abs(frame - t), r) for t, r in conds.items() if (t >= frame if reverse else t <= frame)]
    for d in range(1, min(num_frames, max_ptrs)):
        t = frame + step * d
        if not 0 <= t < num_frames or not usable(t):
            break
        r = track.tracked_only.get(t)
        if r is not None:
            pointers.append((d, r))
    return spatial, pointers


class Tracker:
    """Prompts on some frames -> masks on all frames, for any number of objects.

    Args:
        model: a :class:`Sam2Model` (on its compute device, in eval mode).
        frames: ``frames(i)`` returns frame i as a normalised model input (3, S, S). For
            window tracking it must also have ``frames.crop(i, window, size)`` returning the
            window as a (3, size, size) model input (a
            :class:`~napari_sam2.engine.frames.FrameSequence` has both).
        num_frames: length of the sequence.
        frame_hw: (H, W) of the original frames: prompts are given and masks returned at it.
        feature_cache: how many frames' (or windows') image features to keep.
        retain: how many tracked frames behind the current one keep their memory and mask
            logits during propagation ("auto": ``num_maskmem - 1`` = 6, all that SAM2's memory
            reads). Older frames keep only their object pointer (1 KB) and the recipe of their
            computation, so memory does not grow with the number of frames; None keeps everything.
            When a later step needs a released frame (a correction click conditioned on the
            frames before it, a pass that starts mid-sequence), its memory and logits are
            recomputed exactly from the recipe, back to the nearest frames still held, and
            released again after use: results equal SAM2's whatever ``retain`` is, at the cost
            of recomputing at most the frames between the needed one and the start of the pass
            that computed it. A value below the default makes every pass recompute. A released
            frame has no logits for :meth:`frame_logits` (they were yielded when it was tracked).
        window: None: the model sees each whole frame, resized to S x S. An int w (multiple of
            32): each object is tracked in its own square window of at least w x w plane pixels
            around it, fed to the model at w x w (the same weights run at input size w), grown
            to twice the object's extent when the object is larger (then resized to w). "auto"
            (default): None when the frame fits the model input (max(H, W) <= S), else S.
        max_window: the largest side a window may grow to, in plane pixels (None: no limit
            beyond covering the frame). Bounds the time and memory per frame for objects that
            grow (or masks that leak); larger objects are cut at the window's edge.
    """

    def __init__(
        self,
        model: Sam2Model,
        frames: Callable[[int], torch.Tensor],
        num_frames: int,
        frame_hw: tuple[int, int],
        feature_cache: int = 2,
        retain: int | str | None = "auto",
        window: int | str | None = "auto",
        max_window: int | None = None,
    ) -> None:
        if num_frames < 1:
            raise TrackerError("a sequence needs at least one frame")
        self.model = model
        self.frames = frames
        self.num_frames = num_frames
        self.frame_hw = (int(frame_hw[0]), int(frame_hw[1]))
        self.tracks: dict[int, Track] = {}
        self._features: OrderedDict[tuple, ImageFeatures] = OrderedDict()
        self._feature_cache = max(1, feature_cache)
        self._memory_pos: torch.Tensor | None = None
        self._order = itertools.count()
        self.retain = model.config.num_maskmem - 1 if retain == "auto" else retain
        size = model.config.image_size
        if window == "auto":
            window = None if max(self.frame_hw) <= size else size
        if window is not None:
            if isinstance(window, bool) or not isinstance(window, int) or window <= 0 or window % 32:
                raise TrackerError(
                    f"window must be None, 'auto' or a positive multiple of 32, got {window!r}"
                )
            if not callable(getattr(frames, "crop", None)):
                raise TrackerError(
                    "window tracking needs frames with a crop(i, window, size) method, such as a FrameSequence; "
                    "pass window=None to track whole frames"
                )
        if max_window is not None and window is not None and max_window < window:
            raise TrackerError(f"max_window ({max_window}) must be at least the window ({window})")
        self.window = window
        self.max_window = max_window
        self.net = model if window is None else model.with_image_size(window)

    # ------------------------------------------------------------------ helpers
    @property
    def _cfg(self):
        return self.net.config

    def _check_frame(self, frame: int) -> None:
        if not 0 <= frame < self.num_frames:
            raise IndexError(
                f"frame {frame} is outside the sequence of {self.num_frames} frames (0..{self.num_frames - 1})"
            )

    def _track(self, obj_id: int) -> Track:
        if isinstance(obj_id, bool) or not isinstance(obj_id, int | np.integer) or obj_id <= 0:
            raise TrackerError(f"object ids are positive ints, got {obj_id!r}")
        return self.tracks.setdefault(int(obj_id), Track(int(obj_id)))

    def features(self, frame: int, window: Window | None = None) -> ImageFeatures:
        """Image features of ``frame`` (or of a window of it), from the small cache or freshly encoded."""
        key = (frame, window)
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        if window is None or self.window is None:
            image = self.frames(frame)
        else:
            image = self.frames.crop(frame, window, self._cfg.image_size)
        feats = self.net.encode_image(image.to(self.net.device, self.net.dtype).unsqueeze(0))
        self._features[key] = feats
        while len(self._features) > self._feature_cache:
            self._features.popitem(last=False)
        return feats

    # ------------------------------------------------------------------ windows
    def _window_around(
        self, box: tuple[float, float, float, float] | None, base: Window | None = None
    ) -> Window | None:
        """A window centred on ``box`` (row0, col0, row1, col1), at least ``self.window`` wide and
        twice the box's extent; ``base`` (or the plane's centre) when there is no box."""
        if self.window is None:
            return None
        if box is None:
            if base is not None:
                return base
            h, w = self.frame_hw
            box = (h / 2, w / 2, h / 2, w / 2)
        r0, c0, r1, c1 = box
        side = max(self.window, math.ceil(2 * max(r1 - r0, c1 - c0)))
        if self.max_window is not None:
            side = min(side, self.max_window)
        return Window(
            _place((r0 + r1) / 2, side, self.frame_hw[0]),
            _place((c0 + c1) / 2, side, self.frame_hw[1]),
            side,
            side,
        )

    def _grown(self, window: Window) -> Window | None:
        """The window twice as large around the same centre, or None if it already covers the plane."""
        if (
            window.row0 <= 0
            and window.col0 <= 0
            and window.row0 + window.height >= self.frame_hw[0]
            and (window.col0 + window.width >= self.frame_hw[1])
        ):
            return None
        cr, cc = window.row0 + window.height / 2, window.col0 + window.width / 2
        side = 2 * window.height
        if self.max_window is not None and side > self.max_window:
            return None
        return Window(_place(cr, side, self.frame_hw[0]), _place(cc, side, self.frame_hw[1]), side, side)

    def _touches_border(self, result: FrameResult) -> bool:
        """True if the mask reaches an edge of its window that lies inside the plane."""
        if result.window is None or result.bbox is None:
            return False
        w, (r0, c0, r1, c1) = result.window, result.bbox
        cell = w.height / self._cfg.low_res_size
        return (
            (r0 <= w.row0 + cell and w.row0 > 0)
            or (c0 <= w.col0 + cell and w.col0 > 0)
            or (r1 >= w.row0 + w.height - cell and w.row0 + w.height < self.frame_hw[0])
            or (c1 >= w.col0 + w.width - cell and w.col0 + w.width < self.frame_hw[1])
        )

    def _result(self, out, window: Window | None) -> FrameResult:
        """A FrameResult from a model output, with its area and bounding box in plane pixels."""
        low_res = out.low_res
        win = window or Window(0, 0, *self.frame_hw)
        n = low_res.shape[-1]
        sy, sx = win.height / n, win.width / n
        inside = low_res[0, 0] > 0
        area = float(inside.sum()) * sy * sx
        bbox = None
        if area > 0:
            rows = torch.nonzero(inside.any(dim=1)).flatten()
            cols = torch.nonzero(inside.any(dim=0)).flatten()
            bbox = (
                max(win.row0 + float(rows[0]) * sy, 0.0),
                max(win.col0 + float(cols[0]) * sx, 0.0),
                min(win.row0 + float(rows[-1] + 1) * sy, self.frame_hw[0]),
                min(win.col0 + float(cols[-1] + 1) * sx, self.frame_hw[1]),
            )
        iou = float(out.iou.reshape(-1)[0])
        return FrameResult(
            low_res, out.obj_ptr, out.object_score, window=window, iou=iou, area=area, bbox=bbox
        )

    def _patch(self, low_res: torch.Tensor | None, window: Window | None) -> MaskPatch:
        """Logits of one result at plane resolution over its window."""
        if low_res is None or bool((low_res <= NO_OBJECT_LOGIT).all()):
            return MaskPatch.empty()
        win = window or Window(0, 0, *self.frame_hw)
        logits = resize_bilinear(low_res, win.hw)[0, 0]
        return MaskPatch(logits.float().cpu().numpy(), (win.row0, win.col0))

    def _to_frame_res(self, result: FrameResult) -> torch.Tensor:
        if result.window is None:
            return resize_bilinear(result.low_res, self.frame_hw)[0, 0]
        full = self._patch(result.low_res, result.window).full(self.frame_hw, fill=NO_OBJECT_LOGIT)
        return torch.from_numpy(full)

    def frame_logits(self, frame: int) -> dict[int, torch.Tensor]:
        """Mask logits (H, W) of every object that has a result on ``frame``."""
        out = {}
        for obj_id, track in self.tracks.items():
            r = track.result(frame)
            if r is not None and r.low_res is not None:
                out[obj_id] = self._to_frame_res(r)
        return out

    # ------------------------------------------------------------------ prompts
    def _conditioned(
        self, track: Track, frame: int, feats: ImageFeatures, reverse: bool, keyframe: int | None = None
    ) -> tuple[torch.Tensor, Recipe]:
        """``frame``'s image features conditioned on the memories SAM2 selects, and the recipe."""
        spatial, pointers = select_memories(
            track, frame, reverse, self.num_frames, self._cfg.num_maskmem, self._cfg.max_obj_ptrs, keyframe
        )
        recipe = Recipe(
            frame, next(self._order), tuple(spatial), tuple((d, r.obj_ptr) for d, r in pointers)
        )
        return self._apply(recipe, feats), recipe

    def _apply(self, recipe: Recipe, feats: ImageFeatures) -> torch.Tensor:
        """Condition ``feats`` on the recipe's memories (recomputing released ones for the call)."""
        restored = self._restore([r for r, _ in recipe.spatial])
        memories = [Memory(r.memory, self._memory_pos, slot) for r, slot in recipe.spatial]
        ptrs = offsets = None
        if recipe.pointers:
            ptrs = torch.stack([p for _, p in recipe.pointers], dim=1)  # (1, P, C)
            offsets = torch.tensor([d for d, _ in recipe.pointers], dtype=torch.float32)
        max_offset = min(self.num_frames, self._cfg.max_obj_ptrs) - 1
        embed = self.net.condition_on_memory(feats, memories, ptrs, offsets, max_offset)
        for r in restored:
            r.release()
        return embed

    def _restore(self, results: Sequence[FrameResult]) -> list[FrameResult]:
        """Recompute the logits and memory of the released ``results`` from their recipes, with
        every released result those recipes read (transitively), in the order they were first
        computed: the same inputs give the same numbers. Intermediate results are released again
        as soon as nothing left to recompute reads them; returns the ``results`` restored (the
        caller releases them after use)."""
        todo: dict[int, FrameResult] = {}
        stack = [r for r in results if r.released]
        while stack:
            r = stack.pop()
            if id(r) not in todo:
                todo[id(r)] = r
                stack.extend(s for s, _ in r.recipe.spatial if s.released)
        if not todo:
            return []
        wanted = {id(r) for r in results}
        readers: dict[int, int] = {}
        for r in todo.values():
            for s, _ in r.recipe.spatial:
                if id(s) in todo:
                    readers[id(s)] = readers.get(id(s), 0) + 1
        for r in sorted(todo.values(), key=lambda r: r.recipe.order):
            feats = self.features(r.recipe.frame, r.window)
            embed = self._apply(r.recipe, feats)  # its inputs are held: restored before it
            out = self.net.predict_frame(embed, feats.high_res, multimask=True)
            r.low_res = out.low_res
            self._encode_memory(r, feats, from_clicks=False)
            for s, _ in r.recipe.spatial:
                if id(s) in readers:
                    readers[id(s)] -= 1
                    if readers[id(s)] == 0 and id(s) not in wanted:
                        s.release()
        return [r for r in todo.values() if id(r) in wanted]

    def _encode_memory(self, result: FrameResult, feats: ImageFeatures, from_clicks: bool) -> None:
        mem, pos = self.net.encode_memory(feats, result.low_res, result.object_score, from_clicks)
        result.memory = mem.to(MEMORY_DTYPE)
        if self._memory_pos is None:
            self._memory_pos = pos  # identical for every frame

    @torch.inference_mode()
    def add_prompt(
        self, frame: int, obj_id: int, prompt: Prompt, clear: bool = True
    ) -> dict[int, torch.Tensor]:
        """Add clicks and/or a box for ``obj_id`` on ``frame``; returns that frame's logits.

        With ``clear=False`` the clicks add to the ones already on this frame. The previous
        result on this frame, if any, is given to the decoder as a mask prompt.
        """
        self._check_frame(frame)
        prompt.check_inside(self.frame_hw)
        if prompt.box is not None and not clear:
            raise PromptError("a box starts a new prompt on its frame: pass clear=True with a box")
        track = self._track(obj_id)
        if not clear and frame in track.prompts:
            old = track.prompts[frame]
            prompt = Prompt(
                points=np.concatenate([old.points, prompt.points]),
                labels=np.concatenate([old.labels, prompt.labels]),
                box=old.box,
            )
        track.prompts[frame] = prompt

        first_visit = frame not in track.reverse_at
        prev = track.result(frame)
        window = self._prompt_window(prompt, prev)
        prev_logits = None
        if prev is not None and prev.window == window:
            restored = self._restore([prev])  # a released frame's logits are recomputed (as SAM2 keeps them)
            if prev.low_res is not None:
                prev_logits = prev.low_res.clamp(-32.0, 32.0)
            for r in restored:
                r.release()
        for _ in range(4):  # a window grows (at most 3 times) while the mask reaches its edge
            coords, labels = prompt_tensors(*self._prompt_geometry(prompt, window))
            feats = self.features(frame, window)
            if first_visit:
                embed = self.net.embed_without_memory(feats)
            else:
                embed, _ = self._conditioned(track, frame, feats, track.reverse_at[frame])
            out = self.net.predict_frame(
                embed, feats.high_res, coords, labels, prev_logits, multimask=labels.shape[1] <= 1
            )
            result = self._result(out, window)
            bigger = self._grown(window) if window is not None and self._touches_border(result) else None
            if bigger is None:
                break
            window, prev_logits = bigger, None
        track.pending[frame] = result
        return self.frame_logits(frame)

    def _prompt_geometry(self, prompt: Prompt, window: Window | None) -> tuple:
        if window is None:
            return prompt, self.frame_hw, self._cfg.image_size, self.net.device
        return prompt, window.hw, self._cfg.image_size, self.net.device, (window.row0, window.col0)

    def _prompt_window(self, prompt: Prompt, prev: FrameResult | None) -> Window | None:
        if self.window is None:
            return None
        coords = (
            np.concatenate([prompt.points, np.asarray(prompt.box).reshape(-1, 2)])
            if prompt.box
            else prompt.points
        )
        if prev is not None and prev.window is not None and prev.window.contains(coords):
            return prev.window
        positive = prompt.points[prompt.labels == 1]
        anchor = (
            np.asarray(prompt.box).reshape(2, 2) if prompt.box else (positive if len(positive) else coords)
        )
        (r0, c0), (r1, c1) = anchor.min(axis=0), anchor.max(axis=0)
        return self._window_around((r0, c0, r1, c1))

    @torch.inference_mode()
    def add_mask(self, frame: int, obj_id: int, mask: np.ndarray | torch.Tensor) -> dict[int, torch.Tensor]:
        """Use a binary (H, W) mask as ``obj_id``'s answer on ``frame``; returns the frame's logits."""
        self._check_frame(frame)
        m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
        if m.ndim != 2:
            raise ValueError(f"a mask prompt is a 2D (H, W) array, got shape {tuple(m.shape)}")
        if m.shape != self.frame_hw:
            raise TrackerError(
                f"the mask of object {obj_id} has shape {m.shape} but the frames are {self.frame_hw}; "
                "give a mask of the frame's size"
            )
        m = m.astype(bool)
        window = None
        if self.window is not None:
            rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
            box = (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1) if len(rows) else None
            window = self._window_around(box)
            m = _cut(m, window)
        s = self._cfg.image_size
        t = torch.from_numpy(m).to(self.net.device).float()[None, None]
        if tuple(t.shape[-2:]) != (s, s):
            t = (resize_bilinear(t, s, antialias=True) >= 0.5).float()
        track = self._track(obj_id)
        track.prompts.pop(frame, None)
        out = self.net.predict_from_mask(self.features(frame, window), t)
        track.pending[frame] = self._result(out, window)
        return self.frame_logits(frame)

    def seed_from_labels(self, labels, index: tuple[int, ...], frame: int) -> list[int]:
        """Seed every object of a labels plane: each positive id on ``labels[index]`` becomes a
        mask prompt on ``frame``. Returns the ids seeded (sorted).

        Raises:
            TrackerError: the labels plane does not have the frames' shape.
            LabelError: bad labels or index.
        """
        self._check_frame(frame)
        plane_hw = tuple(labels.shape[-2:])
        if plane_hw != self.frame_hw:
            raise TrackerError(
                f"labels planes are {plane_hw} but the frames are {self.frame_hw}; "
                "use labels of the image's size (the image's level 0 for multiscale data)"
            )
        masks = seed_objects(labels, index)
        for obj_id, mask in sorted(masks.items()):
            self.add_mask(frame, obj_id, mask)
        return sorted(masks)

    # ------------------------------------------------------------------ propagation
    def _commit_pending(self) -> None:
        """Encode memories of newly prompted frames and make them conditioning frames."""
        if not self.tracks:
            raise TrackerError("no object has a prompt yet: add clicks, a box or a mask first")
        for track in self.tracks.values():
            for frame, result in track.pending.items():
                if result.memory is None:
                    self._encode_memory(result, self.features(frame, result.window), from_clicks=True)
                track.cond[frame] = result
                track.stale.add(frame)
            track.pending.clear()
            if not track.cond:
                raise TrackerError(f"object {track.obj_id} has no prompt; add one or remove the object")
            for frame in track.cond:
                self._forget(track.tracked_only.pop(frame, None))

    def _track_frame(
        self, track: Track, frame: int, reverse: bool, keyframe: int | None = None
    ) -> FrameResult:
        """Compute ``track``'s result on ``frame`` from its memories, without storing it."""
        step = 1 if reverse else -1
        prev = track.result(frame + step)
        if prev is None and keyframe is not None:
            prev = track.cond[keyframe]
        window = self._window_around(prev.bbox if prev else None, prev.window if prev else None)
        feats = self.features(frame, window)
        embed, recipe = self._conditioned(track, frame, feats, reverse, keyframe)
        out = self.net.predict_frame(embed, feats.high_res, multimask=True)
        result = self._result(out, window)
        result.recipe = recipe
        self._encode_memory(result, feats, from_clicks=False)
        return result

    def _store(self, track: Track, frame: int, result: FrameResult) -> None:
        """Make ``result`` the tracked result of ``frame``, releasing the one it replaces."""
        self._forget(track.tracked_only.get(frame))
        track.tracked_only[frame] = result

    def _forget(self, result: FrameResult | None) -> None:
        """A tracked result is superseded: later steps read it only through recipes, which can
        recompute it, so its large tensors go (unless everything is retained)."""
        if result is not None and result.recipe is not None and self.retain is not None:
            result.release()

    def _release_behind(self, track: Track, frame: int, reverse: bool) -> None:
        if self.retain is not None:  # the frame leaving SAM2's memory window
            old = track.tracked_only.get(frame + (1 if reverse else -1) * (self.retain + 1))
            if old is not None:
                old.release()

    @torch.inference_mode()
    def propagate(
        self, start: int | None = None, reverse: bool = False, max_frames: int | None = None
    ) -> Iterator[tuple[int, dict[int, torch.Tensor]]]:
        """Track every object from ``start`` (default: the first prompted frame) to one end, with
        SAM2's own memory rules (as Meta's ``propagate_in_video``).

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
            for track in self.tracks.values():
                if frame not in track.cond:
                    self._store(track, frame, self._track_frame(track, frame, reverse))
                track.reverse_at[frame] = reverse
                self._release_behind(track, frame, reverse)
            yield frame, self.frame_logits(frame)

    # ------------------------------------------------------------------ keyframe runs
    @torch.inference_mode()
    def track(
        self,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        stop_after_absent: int | None = None,
        report: RunReport | None = None,
    ) -> Iterator[tuple[int, dict[int, MaskPatch]]]:
        """(Re)compute every frame owned by a new or changed keyframe; see :meth:`run`.

        Yields (frame, {obj_id: MaskPatch}) once per finished frame, with every object that was
        recomputed there (an absent object has an empty patch). A frame is yielded only when no
        object still has to be computed on it.
        """
        if stop_after_absent is not None and (isinstance(stop_after_absent, bool) or stop_after_absent < 1):
            raise TrackerError(f"stop_after_absent must be None or an int >= 1, got {stop_after_absent!r}")
        report = report if report is not None else RunReport()
        self._commit_pending()
        forward: dict[int, list[tuple[Track, int]]] = {}
        backward: dict[int, list[tuple[Track, int]]] = {}
        keys: dict[int, list[tuple[Track, int]]] = {}
        for track in self.tracks.values():
            for k in sorted(track.stale):
                lo, hi = segment_bounds(list(track.cond), k, self.num_frames)
                keys.setdefault(k, []).append((track, k))
                for f in range(k + 1, hi + 1):
                    forward.setdefault(f, []).append((track, k))
                for f in range(lo, k):
                    backward.setdefault(f, []).append((track, k))
        report.total = len(set(forward) | set(backward) | set(keys))
        stash: dict[int, dict[int, MaskPatch | tuple]] = {}
        absent: dict[tuple[int, int, bool], int] = {}

        def compute(frame: int, reverse: bool, work: list[tuple[Track, int]]) -> None:
            for track, k in work:
                run_key = (track.obj_id, k, reverse)
                if stop_after_absent is not None and absent.get(run_key, 0) >= stop_after_absent:
                    prev = track.result(frame + (1 if reverse else -1))
                    result = FrameResult(
                        None,
                        self.net.no_obj_ptr.detach(),
                        torch.full((1, 1), NO_OBJECT_LOGIT),
                        window=prev.window if prev else None,
                        iou=0.0,
                        stopped=True,
                    )
                else:
                    result = self._track_frame(track, frame, reverse, keyframe=k)
                    absent[run_key] = 0 if result.present else absent.get(run_key, 0) + 1
                self._store(track, frame, result)
                track.owner[frame] = k
                track.reverse_at[frame] = reverse
                stash.setdefault(frame, {})[track.obj_id] = (result.low_res, result.window)
                self._release_behind(track, frame, reverse)

        def finished(frame: int) -> tuple[int, dict[int, MaskPatch]]:
            patches = {obj: self._patch(*lw) for obj, lw in stash.pop(frame, {}).items()}
            report.frames.append(frame)
            if progress is not None:
                progress(len(report.frames), report.total)
            return frame, patches

        for frame in sorted(set(forward) | set(keys)):
            if cancel is not None and cancel():
                report.cancelled = True
                return
            for track, k in keys.get(frame, []):
                track.owner[frame] = k
                r = track.cond[k]
                stash.setdefault(frame, {})[track.obj_id] = (r.low_res, r.window)
            compute(frame, False, forward.get(frame, []))
            if frame not in backward:
                yield finished(frame)
        for frame in sorted(backward, reverse=True):
            if cancel is not None and cancel():
                report.cancelled = True
                return
            compute(frame, True, backward[frame])
            yield finished(frame)
        for track in self.tracks.values():
            track.stale.clear()

    def run(
        self,
        writer: LabelWriter | None = None,
        index: Callable[[int], tuple[int, ...]] | None = None,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        stop_after_absent: int | None = None,
    ) -> RunReport:
        """Propagate every object outward in both directions from each of its keyframes.

        Each frame is owned by the object's nearest keyframe (ties: the earlier one) and tracked
        from it, conditioned on that keyframe and the frames between them. Only frames owned by
        keyframes that are new or changed since the last run are computed: a correction click
        re-runs the frames nearer to it than to any other keyframe, nothing else.

        Args:
            writer: where each finished frame goes (every recomputed object of that frame in one
                plane write, so a cancelled run leaves every written frame whole). None: results
                stay in the tracker (see :meth:`frame_logits`, :meth:`stats`).
            index: frame -> the labels plane index (default ``(frame,)``), e.g.
                ``lambda z: (t, z)`` for one time point of (t, z, y, x) labels.
            progress: ``progress(frames_done, frames_total)`` after each finished frame.
            cancel: polled before each frame; return True to stop. Frames not finished keep
                their previous labels, and the next run recomputes the unfinished keyframes' frames.
            stop_after_absent: stop following an object in one direction after it was absent
                (object score <= 0) on this many consecutive frames; later frames of that pass
                are empty. None: never stop (objects that leave the frame can come back).

        Returns:
            A :class:`RunReport`.
        """
        if writer is not None and tuple(writer.labels.shape[-2:]) != self.frame_hw:
            raise TrackerError(
                f"labels planes are {tuple(writer.labels.shape[-2:])} but the frames are {self.frame_hw}; "
                "write into labels of the image's size"
            )
        report = RunReport()
        index = index or (lambda f: (f,))
        for frame, patches in self.track(progress, cancel, stop_after_absent, report):
            if writer is not None and patches:
                writer.write(index(frame), patches)
        return report

    # ------------------------------------------------------------------ review
    def stats(self, obj_id: int | None = None) -> list[FrameStats]:
        """Per frame and object: object score, predicted IoU, area and area change, sorted by
        (frame, object). ``obj_id`` limits it to one object."""
        if obj_id is not None and obj_id not in self.tracks:
            raise TrackerError(
                f"unknown object {obj_id}; known: {', '.join(map(str, sorted(self.tracks))) or 'none'}"
            )
        out = []
        for track in self.tracks.values():
            if obj_id is not None and track.obj_id != obj_id:
                continue
            frames = sorted(set(track.cond) | set(track.tracked_only))
            for f in frames:
                r = track.result(f)
                key = f in track.cond
                change = None
                if not key:
                    k = track.owner.get(f)
                    n = (
                        f + (1 if track.reverse_at.get(f) else -1)
                        if k is None
                        else (f - 1 if f > k else f + 1)
                    )
                    other = track.result(n)
                    if other is not None:
                        change = (r.area - other.area) / max(other.area, 1.0)
                out.append(
                    FrameStats(
                        f,
                        track.obj_id,
                        float(r.object_score.reshape(-1)[0]),
                        r.iou,
                        r.area,
                        change,
                        key,
                        r.stopped,
                    )
                )
        return sorted(out, key=lambda s: (s.frame, s.obj_id))

    def drift_frames(self, min_iou: float = 0.5, max_area_change: float = 0.5) -> list[tuple[int, int, str]]:
        """Frames that look like drift, as (frame, obj_id, reason): the object is present with a
        predicted IoU below ``min_iou``, its area changed by more than ``max_area_change``
        (relative) from the neighbouring frame, or it vanished after being present there."""
        found = []
        for s in self.stats():
            if s.keyframe or s.stopped:
                continue
            if s.present and s.iou < min_iou:
                found.append((s.frame, s.obj_id, f"predicted IoU {s.iou:.2f} < {min_iou}"))
            if s.area_change is not None and abs(s.area_change) > max_area_change:
                if s.present and s.area > 0:
                    found.append((s.frame, s.obj_id, f"area changed by {s.area_change:+.0%}"))
                else:
                    found.append((s.frame, s.obj_id, "object vanished"))
        return sorted(found)


def _place(centre: float, side: int, n: int) -> int:
    """Start of a window of ``side`` pixels centred on ``centre``, kept inside 0..n when it fits."""
    if side >= n:
        return (n - side) // 2
    return int(min(max(round(centre - side / 2), 0), n - side))


def _cut(mask: np.ndarray, window: Window) -> np.ndarray:
    """The window's part of a plane-sized array, zero-padded where the window leaves the plane."""
    r0, c0, r1, c1 = window.inside(mask.shape)
    return window.padded(mask[r0:r1, c0:c1], mask.shape)
