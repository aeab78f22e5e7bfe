"""The plugin's operations on arrays, shared by the widget and the console functions (no Qt here).

Each one composes engine pieces: segment one plane from a prompt, propagate prompts (or seed masks)
along z or t into labels, follow 3D objects through time, segment everything on one plane. Label writes go through a
:class:`RecordingWriter`, so every plane changed is kept as a :class:`PlaneEdit` for undo.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from ..engine import (
    FrameSequence,
    ImagePredictor,
    ImageSource,
    LabelWriter,
    PlaneEdit,
    Prompt,
    RunReport,
    TimeReport,
    Tracker,
    TrackerError,
    track_through_time,
)
from ..engine.automask import AutoReport, segment_everything
from ..engine.labels import MaskPatch
from ..model import Sam2Model

__all__ = [
    "RecordingWriter",
    "segment_plane",
    "propagate",
    "propagation_tracker",
    "propagate_labels",
    "propagate_time",
    "segment_everything_plane",
]

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class RecordingWriter:
    """A :class:`LabelWriter` that keeps every :class:`PlaneEdit` it made (for undo).

    It has what the tracker uses of a writer (``labels`` and ``write``), so it can be passed to
    :meth:`Tracker.run` and :func:`track_through_time`.

    Args:
        labels: the labels array, or a :class:`LabelWriter` to record (e.g. one that writes through
            a napari layer); ``overwrite`` is then the writer's own.
    """

    def __init__(self, labels: Any, *, overwrite: bool = False) -> None:
        self.writer = labels if isinstance(labels, LabelWriter) else LabelWriter(labels, overwrite=overwrite)
        self.edits: list[PlaneEdit] = []

    @property
    def labels(self) -> Any:
        return self.writer.labels

    def write(self, index: tuple[int, ...], logits: Mapping[int, Any]) -> PlaneEdit:
        edit = self.writer.write(index, logits)
        if edit.changed:
            self.edits.append(edit)
        return edit


def segment_plane(
    predictor: ImagePredictor,
    source: ImageSource,
    frame: tuple[int, ...],
    prompt: Prompt,
    window: tuple[float, float] | None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> MaskPatch:
    """One object's mask on one plane of ``source``, as logits over the mask's bounding box (a
    :class:`MaskPatch`, what :meth:`LabelWriter.write` takes; empty if the model found nothing).

    The plane's embedding is computed (or taken from the predictor's cache) before decoding. One
    click alone is ambiguous, so SAM's three candidates are decoded and the best-scored one kept.
    """
    predictor.set_image(source, frame=frame, window=window)
    multimask = prompt.box is None and len(prompt.points) == 1
    prediction = predictor.predict(prompt, multimask=multimask, progress=progress, cancel=cancel)
    return prediction.patch(prediction.best if multimask else 0)


def _require_sam2(model: object) -> None:
    if not isinstance(model, Sam2Model):
        raise TrackerError(
            f"propagation needs a SAM2 model; the current one is a {type(model).__name__}: load 'demo', "
            "an official model or a checkpoint file"
        )


def _sequence(
    model: Sam2Model, source: ImageSource, axis: str, fixed: Mapping[str, int], window
) -> FrameSequence:
    _require_sam2(model)
    return FrameSequence(
        source, axis=axis, fixed=dict(fixed), window=window, image_size=model.config.image_size
    )


def _index(source: ImageSource, axis: str, fixed: Mapping[str, int]) -> Callable[[int], tuple[int, ...]]:
    """Frame number along ``axis`` -> the labels plane index (one int per t/z axis)."""
    letters = source.axes[:-2]
    return lambda f: tuple(f if a == axis else int(fixed[a]) for a in letters)


def propagation_tracker(
    model: Sam2Model,
    source: ImageSource,
    *,
    axis: str,
    fixed: Mapping[str, int] | None = None,
    window: tuple[float, float] | None = None,
) -> Tracker:
    """A tracker along ``axis`` of ``source`` that :func:`propagate` can be given again and again.

    Kept between runs, it remembers every frame it tracked: a later run with one more (or one
    changed) prompt recomputes only the frames nearest to that prompt (see :meth:`Tracker.run`).

    Raises:
        TrackerError: a model that cannot track.
    """
    fixed = dict(fixed or {})
    seq = _sequence(model, source, axis, fixed, window)
    return Tracker(model, seq, len(seq), seq.frame_hw)


def _same_prompt(a: Prompt, b: Prompt) -> bool:
    return np.array_equal(a.points, b.points) and np.array_equal(a.labels, b.labels) and a.box == b.box


def propagate(
    model: Sam2Model,
    source: ImageSource,
    writer: RecordingWriter,
    obj_id: int,
    *,
    axis: str,
    fixed: Mapping[str, int] | None = None,
    prompts: Mapping[int, Prompt] | None = None,
    masks: Mapping[int, np.ndarray] | None = None,
    window: tuple[float, float] | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    tracker: Tracker | None = None,
) -> RunReport:
    """Propagate one object along ``axis`` ("z" or "t") in both directions from every keyframe.

    Args:
        prompts: frame number along ``axis`` -> clicks/box there.
        masks: frame number -> (H, W) bool mask (e.g. the object's labels on a slice), used where
            there is no prompt.
        fixed: the index of the other frame axis of a (t, z) image, e.g. ``{"t": 3}``.
        tracker: a tracker from :func:`propagation_tracker` (same source, axis, fixed and window) that
            ran before: only prompts new or changed since are added, and only the frames they now
            own are computed and written (a correction re-propagates its range, nothing else).
            None: a new tracker, every frame.

    Frames stream into ``writer`` as they finish; a cancelled run leaves every written frame whole.

    Raises:
        TrackerError: no prompt and no mask, or a model that cannot track.
    """
    if tracker is None:
        tracker = propagation_tracker(model, source, axis=axis, fixed=fixed, window=window)
    fixed = dict(fixed or {})
    kept = tracker.tracks[obj_id].prompts if obj_id in tracker.tracks else {}
    for frame, prompt in sorted((prompts or {}).items()):
        if frame not in kept or not _same_prompt(kept[frame], prompt):
            tracker.add_prompt(frame, obj_id, prompt)
    for frame, mask in sorted((masks or {}).items()):
        if frame not in (prompts or {}):
            tracker.add_mask(frame, obj_id, mask)
    if not tracker.tracks:
        raise TrackerError(
            f"object {obj_id} has no click, box or label to start from: click on it (or paint it) on "
            "at least one slice, then propagate"
        )
    return tracker.run(writer, index=_index(source, axis, fixed), progress=progress, cancel=cancel)


def propagate_labels(
    model: Sam2Model,
    source: ImageSource,
    writer: RecordingWriter,
    frame: int,
    *,
    axis: str,
    fixed: Mapping[str, int] | None = None,
    window: tuple[float, float] | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> tuple[list[int], RunReport]:
    """Seed every object of the labels plane at ``frame`` and propagate them all along ``axis``.

    Returns:
        (the object ids seeded, the run report).
    """
    fixed = dict(fixed or {})
    seq = _sequence(model, source, axis, fixed, window)
    tracker = Tracker(model, seq, len(seq), seq.frame_hw)
    index = _index(source, axis, fixed)
    ids = tracker.seed_from_labels(writer.labels, index(frame), frame)
    if not ids:
        raise TrackerError(
            f"the labels plane {index(frame)} is empty: paint or segment objects on it first, then "
            "propagate them"
        )
    return ids, tracker.run(writer, index=index, progress=progress, cancel=cancel)


def propagate_time(
    model: Sam2Model,
    source: ImageSource,
    writer: RecordingWriter,
    prompts: Mapping[tuple[int, int, int], Prompt],
    *,
    window: tuple[float, float] | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> TimeReport:
    """Segment objects in 3D at their prompted time points and follow them through time (t, z data).

    ``prompts`` maps (t, z, obj_id) to a prompt; see :func:`track_through_time`.
    """
    _require_sam2(model)
    return track_through_time(model, source, prompts, writer, window=window, progress=progress, cancel=cancel)


def segment_everything_plane(
    model: Any,
    source: ImageSource,
    frame: tuple[int, ...],
    writer: RecordingWriter,
    *,
    window: tuple[float, float] | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    **options: Any,
) -> AutoReport:
    """Segment everything on the plane ``frame`` of ``source`` with
    :func:`napari_sam2.engine.automask.segment_everything`; new ids start above every id in the
    labels (all planes), and no voxel of another object is taken unless the writer overwrites.

    A single-plane image goes to the engine as it is, with ``writer``. For a plane of a stack the
    engine's plane mode runs on that plane alone (its stack mode would track through every frame)
    into a scratch (H, W) labels plane, whose objects are then written into ``frame`` in one write
    under ids above the whole volume's largest (the engine would number them above that plane's).

    Args:
        model: a ``Sam2Model`` or a predictor backend.
        options: generator parameters (``points_per_side=16``, ``min_area=...``).

    Returns:
        The engine's :class:`~napari_sam2.engine.automask.AutoReport`; ``objects`` maps the ids
        written to ``frame``. A cancelled run writes nothing.
    """
    kw = {"window": window, "progress": progress, "cancel": cancel, **options}
    if not frame:
        return segment_everything(model, source, writer=writer, **kw)
    plane = source.plane(frame)  # (H, W) or (H, W, 3), one plane in memory
    scratch = LabelWriter(np.zeros(source.plane_hw, dtype=writer.labels.dtype))
    found = segment_everything(model, plane, axes="yxc" if source.rgb else "yx", writer=scratch, **kw)
    report = AutoReport(writer.labels, cancelled=found.cancelled)
    if found.cancelled:
        return report
    first = int(np.max(writer.labels[...])) + 1
    patches = {}
    for i, box in enumerate(ndimage.find_objects(scratch.labels), start=1):  # (rows, cols) slices
        if box is not None:
            inside = np.where(scratch.labels[box] == i, 1.0, -1.0).astype(np.float32)
            patches[first + len(patches)] = MaskPatch(inside, (box[0].start, box[1].start))
    writer.write(tuple(frame), patches)
    report.objects = dict.fromkeys(patches, tuple(frame))
    report.candidates[tuple(frame)] = len(patches)
    return report
