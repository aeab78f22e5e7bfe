"""Review: per-frame statistics of a tracking result and the frames that look like drift."""

from __future__ import annotations

from dataclasses import dataclass

from .state import Track, TrackerError


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


def frame_stats(tracks: dict[int, Track], obj_id: int | None = None) -> list[FrameStats]:
    """Per frame and object: object score, predicted IoU, area and area change, sorted by
    (frame, object). ``obj_id`` limits it to one object."""
    if obj_id is not None and obj_id not in tracks:
        raise TrackerError(f"unknown object {obj_id}; known: {', '.join(map(str, sorted(tracks))) or 'none'}")
    out = []
    for track in tracks.values():
        if obj_id is not None and track.obj_id != obj_id:
            continue
        for f in sorted(set(track.cond) | set(track.tracked_only)):
            r = track.result(f)
            key = f in track.cond
            change = None
            if not key:
                k = track.owner.get(f)
                n = f + (1 if track.reverse_at.get(f) else -1) if k is None else (f - 1 if f > k else f + 1)
                other = track.result(n)
                if other is not None:
                    change = (r.area - other.area) / max(other.area, 1.0)
            score = float(r.object_score.reshape(-1)[0])
            out.append(FrameStats(f, track.obj_id, score, r.iou, r.area, change, key, r.stopped))
    return sorted(out, key=lambda s: (s.frame, s.obj_id))


def drift_frames(
    stats: list[FrameStats], min_iou: float = 0.5, max_area_change: float = 0.5
) -> list[tuple[int, int, str]]:
    """Frames that look like drift, as (frame, obj_id, reason): the object is present with a
    predicted IoU below ``min_iou``, its area changed by more than ``max_area_change``
    (relative) from the neighbouring frame, or it vanished after being present there."""
    found = []
    for s in stats:
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
