"""Scheduling: which frames are computed in which order, for SAM2's one-direction passes
(:meth:`~.core.Tracker.propagate`) and the keyframe runs (:meth:`~.core.Tracker.track`,
:meth:`~.core.Tracker.run`) that stream finished frames to a label writer."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from ...model.sam2_model import NO_OBJECT_LOGIT
from ..labels import LabelWriter, MaskPatch
from .state import (
    Cancel,
    FrameResult,
    Progress,
    RunReport,
    Track,
    TrackerError,
    asks_for_an_object,
    segment_bounds,
)


class ScheduleMixin:
    """The :class:`~.core.Tracker`'s propagation methods."""

    def _commit_pending(self) -> None:
        """Encode memories of newly prompted frames and make them conditioning frames."""
        if not self.tracks:
            raise TrackerError("no object has a prompt yet: add clicks, a box or a mask first")
        for track in self.tracks.values():
            for frame, result in track.pending.items():
                if result.memory is None:
                    self._encode_memory(result, self.features(frame, result.crop), from_clicks=True)
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
        crop = self._crop_around(prev.bbox if prev else None, prev.crop if prev else None)
        feats = self.features(frame, crop)
        embed, recipe = self._conditioned(track, frame, feats, reverse, keyframe)
        out = self.net.predict_frame(embed, feats.high_res, multimask=True)
        result = self._result(out, crop)
        result.recipe = recipe
        self._encode_memory(result, feats, from_clicks=False)
        return result

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
        prompted: dict[int, set[int]] = {}  # frame -> objects written from their own keyframe there
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
                        crop=prev.crop if prev else None,
                        iou=0.0,
                        stopped=True,
                    )
                else:
                    result = self._track_frame(track, frame, reverse, keyframe=k)
                    absent[run_key] = 0 if result.present else absent.get(run_key, 0) + 1
                self._store(track, frame, result)
                track.owner[frame] = k
                track.reverse_at[frame] = reverse
                stash.setdefault(frame, {})[track.obj_id] = (result.low_res, result.crop)
                self._release_behind(track, frame, reverse)

        def finished(frame: int) -> tuple[int, dict[int, MaskPatch]]:
            patches = {obj: self._patch(*lw) for obj, lw in stash.pop(frame, {}).items()}
            _keyframes_first(patches, prompted.pop(frame, set()), self.frame_hw)
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
                empty = r.low_res is None or bool((r.low_res <= NO_OBJECT_LOGIT).all())
                if empty and asks_for_an_object(track.prompts.get(k)):
                    report.not_found.append((frame, track.obj_id))  # keep what the labels hold there
                    continue
                stash.setdefault(frame, {})[track.obj_id] = (r.low_res, r.crop)
                prompted.setdefault(frame, set()).add(track.obj_id)
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


def _keyframes_first(patches: dict[int, MaskPatch], keyed: set[int], hw: tuple[int, int]) -> None:
    """On a frame where some objects have their keyframe, their prompted masks win: a tracked
    object's logits are cut to "outside" wherever a keyframed object's mask is (in place)."""
    if not keyed or len(patches) <= len(keyed):
        return
    inside = np.zeros(hw, bool)
    for obj in keyed:
        inside |= patches[obj].full(hw) > 0
    if not inside.any():
        return
    for obj, patch in list(patches.items()):
        if obj in keyed or patch.logits.size == 0:
            continue
        logits = patch.full(hw, fill=NO_OBJECT_LOGIT)
        logits[inside] = NO_OBJECT_LOGIT
        patches[obj] = MaskPatch(logits) if (logits > 0).any() else MaskPatch.empty()
