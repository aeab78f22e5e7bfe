"""Follow 3D objects through time in (t, z, y, x) data.

Within a time point the z-slices are the frames of a :class:`Tracker`. From one time point to
the next an object is carried by SAM2's memory on its central slice: a two-frame tracker sees
the object's mask on slice z* at time t (z* = the slice where it is largest) and tracks it to
slice z* at time t + 1; that mask becomes the keyframe of the z-tracker at t + 1. An object that
is absent after the step (or has no voxels left) is not carried further.

Time points are processed outward from the prompted ones: forward from the first prompted time
point to the last one, then backward from it to time point 0, each time point written whole to
the labels before the next starts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..model import Sam2Model
from .frames import FrameSequence
from .intensity import IntensityWindow, resolve_window
from .labels import LabelWriter
from .prompts import Prompt
from .sources import ImageSource, open_image
from .tracker import Cancel, Crop, Progress, Tracker, TrackerError

__all__ = ["TimeReport", "track_through_time"]


@dataclass
class TimeReport:
    """Per time point, the objects present (written) there; ``cancelled`` if stopped early."""

    objects: dict[int, list[int]] = field(default_factory=dict)
    cancelled: bool = False


class _Pair:
    """Slice z* at two time points as a two-frame sequence (for the time step)."""

    def __init__(self, first: FrameSequence, second: FrameSequence, z: int) -> None:
        self._seqs, self._z = (first, second), z

    def __call__(self, i: int) -> torch.Tensor:
        return self._seqs[i](self._z)

    def crop(self, i: int, crop: Crop, size: int) -> torch.Tensor:
        return self._seqs[i].crop(self._z, crop, size)


def track_through_time(
    model: Sam2Model,
    image: ImageSource | Any,
    prompts: Mapping[tuple[int, int, int], Prompt],
    writer: LabelWriter,
    *,
    window: IntensityWindow | Sequence[float] | str | None = None,
    crop: int | str | None = "auto",
    max_crop: int | None = None,
    times: Sequence[int] | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    stop_after_absent: int | None = None,
) -> TimeReport:
    """Segment objects in 3D at the prompted time points and follow them through time.

    Args:
        model: the SAM2 model.
        image: a (t, z, y, x) image (anything :func:`open_image` takes).
        prompts: {(t, z, obj_id): Prompt}; several per object are allowed (keyframes).
        writer: a LabelWriter over (t, z, H, W) labels.
        window: the intensity window, resolved once for the whole dataset.
        crop, max_crop: the tracker's ``crop`` and ``max_crop`` (native-resolution crops for
            large frames).
        times: the time points to process (default: all).
        progress: ``progress(time_points_done, total)``.
        cancel: polled between frames; time points already finished stay written.
        stop_after_absent: passed to :meth:`Tracker.run`.

    Raises:
        TrackerError: the image has no t and z axes, the labels do not match it, or a prompt is
            outside the data.
    """
    source = open_image(image)
    try:
        if source.axes[:-2] != "tz":
            raise TrackerError(f"need a (t, z, y, x) image, got axes {source.axes!r}")
        n_t, n_z = source.frame_shape
        expect = (n_t, n_z, *source.plane_hw)
        if tuple(writer.labels.shape) != expect:
            raise TrackerError(
                f"labels of shape {tuple(writer.labels.shape)} do not match the image {expect}"
            )
        if not prompts:
            raise TrackerError("no prompts: give at least one {(t, z, obj_id): Prompt}")
        for t, z, _ in prompts:
            if not (0 <= t < n_t and 0 <= z < n_z):
                raise TrackerError(
                    f"a prompt at (t={t}, z={z}) lies outside the image (t < {n_t}, z < {n_z})"
                )
        resolved = resolve_window(window, source.sample_values)
        times = sorted(range(n_t) if times is None else set(times))
        prompted = sorted({t for t, _, _ in prompts if t in times})
        if not prompted:
            raise TrackerError("no prompt lies on the time points to process")
        first = prompted[0]
        passes = ([t for t in times if t >= first], [t for t in reversed(times) if t < first])
        total = len(passes[0]) + len(passes[1])
        size = model.config.image_size

        def sequence(t: int) -> FrameSequence:
            return FrameSequence(source, axis="z", fixed={"t": t}, window=resolved, image_size=size)

        report = TimeReport()
        for order in passes:
            carried = (
                {}
                if order is passes[0]
                else _central_slices(writer, first, report.objects[first], sequence(first))
            )
            for t in order:
                seq = sequence(t)
                tracker = Tracker(model, seq, n_z, seq.frame_hw, crop=crop, max_crop=max_crop)
                for (pt, z, obj), prompt in prompts.items():
                    if pt == t:
                        tracker.add_prompt(z, obj, prompt)
                for obj, (z, mask, prev_seq) in carried.items():
                    if obj not in tracker.tracks:
                        moved = _step_in_time(model, prev_seq, seq, z, obj, mask, crop, max_crop)
                        if moved is not None:
                            tracker.add_mask(z, obj, moved)
                carried = {}
                if tracker.tracks:
                    run = tracker.run(
                        writer,
                        index=lambda z, t=t: (t, z),
                        cancel=cancel,
                        stop_after_absent=stop_after_absent,
                    )
                    if run.cancelled:
                        report.cancelled = True
                        return report
                    lost = {obj for _, obj in run.not_found}  # labels kept on its keyframe are not carried
                    carried = _central_slices(writer, t, sorted(set(tracker.tracks) - lost), seq)
                report.objects[t] = sorted(carried)
                if progress is not None:
                    progress(len(report.objects), total)
        return report
    finally:
        if source is not image:
            source.close()


def _central_slices(
    writer: LabelWriter, t: int, objects: Sequence[int], seq: FrameSequence
) -> dict[int, tuple[int, np.ndarray, FrameSequence]]:
    """For each object written at time ``t``: the slice where it is largest and its mask there."""
    out = {}
    volume = np.asarray(writer.labels[t])  # (z, H, W), one time point
    for obj in objects:
        areas = (volume == obj).sum(axis=(1, 2))
        if areas.max() > 0:
            z = int(areas.argmax())
            out[obj] = (z, volume[z] == obj, seq)
    return out


def _step_in_time(
    model: Sam2Model,
    prev: FrameSequence,
    seq: FrameSequence,
    z: int,
    obj: int,
    mask: np.ndarray,
    crop: int | str | None,
    max_crop: int | None = None,
) -> np.ndarray | None:
    """Track ``mask`` on slice ``z`` from the previous time point to this one; None if lost."""
    pair = Tracker(model, _Pair(prev, seq, z), 2, seq.frame_hw, crop=crop, max_crop=max_crop)
    pair.add_mask(0, obj, mask)
    pair.run()
    result = pair.tracks[obj].tracked_only[1]
    if not result.present:
        return None
    logits = pair.frame_logits(1).get(obj)
    moved = None if logits is None else (logits > 0).cpu().numpy()
    return moved if moved is not None and moved.any() else None
