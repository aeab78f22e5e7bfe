"""Memory conditioning: SAM2's choice of memories for a frame (:func:`select_memories`), encoding
and releasing them, and recomputing released ones exactly when a later step needs them."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...model import ImageFeatures, Memory
from .state import MEMORY_DTYPE, FrameResult, Recipe, Track


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
        if r is not None and r.has_memory and usable(t):
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


class MemoryMixin:
    """The :class:`~.core.Tracker`'s memory methods (they use its ``net``, ``num_frames``,
    ``retain``, ``features`` and memory bookkeeping)."""

    def _conditioned(
        self, track: Track, frame: int, feats: ImageFeatures, reverse: bool, keyframe: int | None = None
    ) -> tuple[torch.Tensor, Recipe]:
        """``frame``'s image features conditioned on the memories SAM2 selects, and the recipe."""
        spatial, pointers = select_memories(
            track, frame, reverse, self.num_frames, self._cfg.num_maskmem, self._cfg.max_obj_ptrs, keyframe
        )
        recipe = Recipe(frame, next(self._order), tuple(spatial), tuple((d, r.obj_ptr) for d, r in pointers))
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
            feats = self.features(r.recipe.frame, r.crop)
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
        if self.retain is not None:  # the frame leaving retained range
            old = track.tracked_only.get(frame + (1 if reverse else -1) * (self.retain + 1))
            if old is not None:
                old.release()
