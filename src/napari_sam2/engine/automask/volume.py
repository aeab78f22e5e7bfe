"""Segment everything in a stack: find instances on seed frames, carry them through z or t.

For each seed frame in turn (by default the middle frame, then every ``seed_spacing`` frames
outward from it):

1. the generator runs on that plane and its masks become one instance label image;
2. every instance that is mostly *untracked* there (at least :data:`NEW_FREE` of its pixels still
   background in the labels written so far) becomes a new object, keyed on that frame with its
   untracked pixels; instances the earlier seeds already carried there are left alone, so an
   object keeps the id it got first;
3. the tracker runs, computing only the new objects (forward and backward from their seed
   frame), and writes each finished frame; a new object never takes voxels of another.

So objects that begin or end between seeds are picked up by the next seed frame that shows them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from ..frames import FrameSequence
from ..labels import LabelWriter
from ..tracker import Tracker

NEW_FREE = 0.5
"""An instance on a seed frame is a new object if at least this fraction of it is untracked."""


def default_seeds(num_frames: int, spacing: int) -> list[int]:
    """The middle frame, then frames ``spacing`` apart outward from it (nearer first, earlier first on ties)."""
    mid = (num_frames - 1) // 2
    frames = [mid + k * spacing for k in range(-(num_frames // spacing) - 1, num_frames // spacing + 2)]
    frames = [f for f in frames if 0 <= f < num_frames]
    return sorted(frames, key=lambda f: (abs(f - mid), f))


def untracked_objects(seed_labels: np.ndarray, current: np.ndarray, min_area: int = 0) -> list[np.ndarray]:
    """(H, W) bool masks of the instances of ``seed_labels`` that are new with respect to
    ``current`` (the labels plane written so far): their untracked pixels, where those are at
    least :data:`NEW_FREE` of the instance and at least ``min_area`` (and 1) pixels."""
    out = []
    for i, sl in enumerate(ndimage.find_objects(seed_labels), start=1):
        if sl is None:
            continue
        obj = seed_labels[sl] == i
        free = obj & (current[sl] == 0)
        n_free = int(np.count_nonzero(free))
        if n_free >= max(min_area, 1) and n_free >= NEW_FREE * np.count_nonzero(obj):
            full = np.zeros(seed_labels.shape, dtype=bool)
            full[sl] = free
            out.append(full)
    return out


def segment_stack(
    model,
    seq: FrameSequence,
    find: Callable[[int, Callable[[int, int], None]], np.ndarray],
    writer: LabelWriter,
    report,
    *,
    seeds: Sequence[int],
    first_id: int,
    min_area: int,
    tracker_crop,
    stop_after_absent: int | None,
    progress: Callable[[int, int], None] | None,
    cancel: Callable[[], bool] | None,
) -> None:
    """Fill ``writer`` and ``report`` (an AutoReport) for the stack ``seq``.

    ``find(frame, progress)`` returns the seed frame's instance labels (H, W), or None when
    cancelled.
    """
    n = len(seq)
    tracker = Tracker(model, seq, n, seq.frame_hw, crop=tracker_crop)
    total = 2 * n * len(seeds)
    next_id = first_id
    for k, frame in enumerate(seeds):
        base = 2 * n * k

        def amg_progress(done: int, of: int, base: int = base) -> None:
            if progress is not None:
                progress(base + (n * done) // max(of, 1), total)

        if cancel is not None and cancel():
            report.cancelled = True
            return
        seed_labels = find(frame, amg_progress)
        if seed_labels is None:
            report.cancelled = True
            return
        report.seed_frames.append(frame)
        report.candidates[frame] = int(seed_labels.max())
        current = np.asarray(writer.labels[seq.source_index(frame)])
        new = untracked_objects(seed_labels, current, min_area)
        for mask in new:
            tracker.add_mask(frame, next_id, mask)
            report.objects[next_id] = frame
            next_id += 1
        if new:

            def run_progress(done: int, of: int, base: int = base) -> None:
                if progress is not None:
                    progress(base + n + (n * done) // max(of, 1), total)

            run = tracker.run(
                writer,
                index=seq.source_index,
                progress=run_progress,
                cancel=cancel,
                stop_after_absent=stop_after_absent,
            )
            if run.cancelled:
                report.cancelled = True
                return
        if progress is not None:
            progress(base + 2 * n, total)
