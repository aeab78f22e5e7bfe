"""The widget's long label-writing actions: propagate one object, propagate every object of a
slice, segment everything (on the slice or through the stack).

Each one checks its inputs in the GUI thread (errors become notifications at once), then streams
into a :class:`~napari_sam2.api.session.RecordingWriter` from the task runner, and records everything
written as one typed undo step (:class:`._session.Step`), also when cancelled or failing half-way
(the frames written stay whole).

Corrections: the tracker of the latest propagation is kept (with its image, axis, window, model,
object and labels). When the next propagation of that object has the same prompts plus new or
changed ones (a correction click on a propagated slice), it runs on the kept tracker, which
recomputes and writes only the frames nearer to the changed prompts than to any other
(:meth:`napari_sam2.engine.Tracker.run`). Anything else (a removed prompt, undo, another image,
window or model) starts afresh. A second *Propagate* while one runs is ignored, with a message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from ..api.session import (
    RecordingWriter,
    propagate,
    propagate_labels,
    propagate_time,
    propagation_tracker,
    segment_everything_plane,
)
from ..engine import PromptError
from ..engine.automask import segment_everything
from ._history import History
from ._label_edits import fit_ids, show_edits, show_thumbnail
from ._layers import LayerError, prompted_frames, raw_layer, same_layer
from ._model_picker import ModelSlot
from ._ports import Choices, ImagePicker, Tasks
from ._prompts import PromptLayers
from ._session import Session, Step, StepKind
from ._tasks import USER_ERRORS

__all__ = ["Propagation"]


class Propagation:
    """Propagation and segment-everything of one widget.

    Args:
        session: the current object id.
        data: the picked image, its frame and the output labels.
        prompts: the prompt layers (the object's clicks and boxes, snapshots for the undo step).
        models: the model in use (loaded on demand).
        tasks: runs the work and shows the messages.
        history: records the undo step and sets the current object id.
        choices: the axis, overwrite and whole-stack switches.
        on_report: called with each run's report (the widget keeps the latest).
    """

    def __init__(
        self,
        *,
        session: Session,
        data: ImagePicker,
        prompts: PromptLayers,
        models: ModelSlot,
        tasks: Tasks,
        history: History,
        choices: Choices,
        on_report: Callable[[Any], None],
    ) -> None:
        self.session, self.data, self.prompts, self.models = session, data, prompts, models
        self.tasks, self.history, self.choices, self.on_report = tasks, history, choices, on_report
        self._kept: tuple[tuple, Any, dict] | None = None  # (key, tracker, prompts it has run with)

    def forget(self) -> None:
        """Drop the kept tracker: the next propagation computes every frame (after undo, redo)."""
        self._kept = None

    def kept_covers(self, obj: int, frame: tuple[int, ...]) -> bool:
        """True if the kept tracker propagated ``obj`` through ``frame`` (so a click there is a
        correction that re-propagates its range)."""
        if self._kept is None:
            return False
        key = self._kept[0]
        image, axis, fixed, obj_kept = key[0], key[2], dict(key[3]), key[6]
        try:
            if obj_kept != obj or not same_layer(self.data.require_image(), image):
                return False
            fa = self.data.geometry().frame_axes
        except USER_ERRORS:
            return False
        return axis in fa and all(frame[fa.index(a)] == i for a, i in fixed.items())

    def propagate(self, axis: str | None = None) -> None:
        """See :meth:`Sam2Widget.propagate`."""
        if self.tasks.busy and self.tasks.label == "propagate":
            self.tasks.info(
                "propagation is already running: this request is ignored (wait for it, or Cancel with Shift-C)"
            )
            return
        data = self.data
        kept, key = None, None
        try:
            image, geometry = data.require_image(), data.geometry()
            axis = axis or self.choices.axis()
            if not axis or (axis != "z+t" and axis not in geometry.frame_axes):
                raise LayerError(
                    f"nothing to propagate through: image {image.name!r} has axes {geometry.axes!r}; propagation "
                    "needs a z or t axis (for a 3D stack, set '3D stack axis')"
                )
            frame, labels, source = data.current_frame(), data.labels_layer(), data.source(image, geometry)
            obj, window = self.session.object_id, data.window(image, geometry)
            fa = geometry.frame_axes
            frames = {}
            if self.prompts.points is not None:
                frames = prompted_frames(*self.prompts.object_prompts(obj), len(fa))
            if widened := fit_ids(labels, obj):
                self.tasks.info(widened)
            writer = RecordingWriter(labels.data, overwrite=self.choices.overwrite())
            if axis == "z+t":
                if not frames:
                    raise PromptError(f"object {obj} has no click or box: click on it on one slice first")
                used = frames
                prompts3 = {(f[0], f[1], obj): p for f, p in frames.items()}

                def work(progress, cancel):
                    return propagate_time(
                        self.models.model, source, writer, prompts3, window=window, progress=progress,
                        cancel=cancel,
                    )  # fmt: skip
            else:
                k = fa.index(axis)
                fixed = {a: frame[i] for i, a in enumerate(fa) if a != axis}
                same = [i for i, a in enumerate(fa) if a != axis]
                used = {f: p for f, p in frames.items() if all(f[i] == frame[i] for i in same)}
                prompts = {f[k]: p for f, p in used.items()}
                masks = {}
                if not prompts:
                    mask = np.asarray(labels.data[frame]) == obj
                    if not mask.any():
                        raise PromptError(
                            f"object {obj} has no click, box or label on this {'slice' if fa else 'image'}: click "
                            "on it (or paint it with the labels brush), then Propagate"
                        )
                    masks = {frame[k]: mask}
                else:
                    key = (
                        raw_layer(image), id(source), axis, tuple(sorted(fixed.items())), window, id(self.models.model),
                        obj, id(labels.data), self.choices.overwrite(),
                    )  # fmt: skip
                    if self._kept is not None and self._kept[0] == key and set(self._kept[2]) <= set(prompts):
                        kept = self._kept[1]
                made = []

                def work(progress, cancel):
                    tracker = kept
                    if tracker is None and key is not None:
                        tracker = propagation_tracker(
                            self.models.model, source, axis=axis, fixed=fixed, window=window
                        )
                    made.append(tracker)
                    return propagate(
                        self.models.model, source, writer, obj, axis=axis, fixed=fixed, prompts=prompts,
                        masks=masks, window=window, progress=progress, cancel=cancel, tracker=tracker,
                    )  # fmt: skip
        except USER_ERRORS as err:
            self.tasks.error("Propagate", err)
            return
        if not self.models.ready(then=lambda: self.propagate(axis)):
            return
        if axis == "z+t" or key is None or key[5] != id(self.models.model):  # the model was loaded just now
            key = None
        self._kept = None  # until this run has finished

        def keep(report):
            if key is not None and made and made[0] is not None:
                self._kept = (key, made[0], dict(prompts))

        snap = self.prompts.snapshot()
        step = Step(
            StepKind.PROPAGATE, obj, fa, frame, axis, used, window, prompts_before=snap, prompts_after=snap
        )
        self.run_writing(step, work, writer, labels, uses=(image, labels), on_done=keep)

    def propagate_all_labels(self, axis: str | None = None) -> None:
        """See :meth:`Sam2Widget.propagate_all_labels`."""
        data = self.data
        try:
            image, geometry = data.require_image(), data.geometry()
            axis = axis or self.choices.axis()
            if axis not in geometry.frame_axes:
                raise LayerError(f"choose z or t under 'Propagate along' (image axes {geometry.axes!r})")
            frame, labels, source = data.current_frame(), data.labels_layer(), data.source(image, geometry)
            fa = geometry.frame_axes
            fixed = {a: frame[i] for i, a in enumerate(fa) if a != axis}
            writer = RecordingWriter(labels.data, overwrite=self.choices.overwrite())
            window = data.window(image, geometry)
        except USER_ERRORS as err:
            self.tasks.error("Propagate labels", err)
            return
        if not self.models.ready(then=lambda: self.propagate_all_labels(axis)):
            return

        def work(progress, cancel):
            _, report = propagate_labels(
                self.models.model, source, writer, frame[fa.index(axis)], axis=axis, fixed=fixed,
                window=window, progress=progress, cancel=cancel,
            )  # fmt: skip
            return report

        snap = self.prompts.snapshot()
        step = Step(
            StepKind.PROPAGATE_LABELS, self.session.object_id, fa, frame, axis, window=window,
            prompts_before=snap, prompts_after=snap,
        )  # fmt: skip
        self.run_writing(step, work, writer, labels, uses=(image, labels))

    def segment_everything(self, whole_stack: bool | None = None, **options: Any) -> None:
        """See :meth:`Sam2Widget.segment_everything`."""
        data = self.data
        if whole_stack is None:
            whole_stack = self.choices.whole_stack()
        try:
            image, geometry = data.require_image(), data.geometry()
            frame, labels, source = data.current_frame(), data.labels_layer(), data.source(image, geometry)
            fa = geometry.frame_axes
            whole_stack = bool(whole_stack and fa)  # a single plane is its own whole stack
            axis = self.choices.axis()
            if whole_stack and axis not in fa:
                raise LayerError(
                    f"choose z or t under 'Propagate along' to segment everything through the stack (image "
                    f"axes {geometry.axes!r}), or untick 'whole stack' to segment this slice"
                )
            # how many objects it finds is not known beforehand: uint32 holds any number of them
            if widened := fit_ids(labels, int(np.iinfo(np.uint32).max)):
                self.tasks.info(widened)
            writer = RecordingWriter(labels.data, overwrite=self.choices.overwrite())
            window = data.window(image, geometry)
        except USER_ERRORS as err:
            self.tasks.error("Segment everything", err)
            return
        if not self.models.ready(then=lambda: self.segment_everything(whole_stack, **options)):
            return
        if whole_stack:
            fixed = {a: frame[i] for i, a in enumerate(fa) if a != axis}

            def work(progress, cancel):
                return segment_everything(
                    self.models.model, source, axis=axis, fixed=fixed, window=window, writer=writer,
                    progress=progress, cancel=cancel, **options,
                )  # fmt: skip
        else:

            def work(progress, cancel):
                return segment_everything_plane(
                    self.models.model, source, frame, writer, window=window, progress=progress, cancel=cancel,
                    **options,
                )  # fmt: skip

        obj = self.session.object_id

        def next_id(report):  # the next click starts a new object
            return max(max(report.objects, default=0) + 1, self.session.object_id)

        snap = self.prompts.snapshot()
        step = Step(
            StepKind.SEGMENT_EVERYTHING, obj, fa, frame, axis if whole_stack else None, window=window,
            options={"whole_stack": whole_stack, **options}, prompts_before=snap, prompts_after=snap,
        )  # fmt: skip
        self.run_writing(
            step, work, writer, labels,
            title="Segment everything", label="segment everything", unit="objects", next_id=next_id,
            uses=(image, labels),
        )  # fmt: skip

    def run_writing(
        self, step: Step, work, writer: RecordingWriter, labels, *,
        title: str = "Propagate", label: str = "propagate", unit: str = "frames", next_id=None,
        uses: tuple = (), on_done=None,
    ) -> None:  # fmt: skip
        """Run a task that streams into ``writer``; record ``step`` with its edits even when cancelled
        or failing.

        Args:
            step: the undo step (without edits); title: the action in error messages; label: the task's.
            unit: what the report counts ("frames": ``report.frames``, "objects": ``report.objects``).
            next_id: ``next_id(report)`` -> the current object id after a finished (or cancelled) run.
            uses: the layers the task reads or writes (removing one cancels it).
            on_done: ``on_done(report)`` after a run that returned (finished or cancelled).
        """
        obj, what = step.object_id, step.description
        shown = 0  # writer.edits[:shown] are on screen

        def show_new() -> None:  # GUI thread: redraw only the boxes written since, where in view
            nonlocal shown
            new = writer.edits[shown:]
            shown += len(new)
            show_edits(labels, new)

        def show_rest() -> None:
            show_new()
            show_thumbnail(labels)

        def done(report):
            if on_done is not None:
                on_done(report)
            self.on_report(report)
            obj_after = obj if next_id is None else next_id(report)
            self.history.record(replace(step, object_after=obj_after), writer)
            show_rest()
            if obj_after != obj:
                self.history.set_object_id(obj_after)
            total = getattr(report, "total", 0)
            written = len(getattr(report, unit, getattr(report, "objects", [])))
            if report.cancelled:
                self.tasks.info(
                    f"{what}: cancelled after {written} of {total or '?'} {unit}; the {unit} written are kept "
                    "(Undo removes them)"
                )
            elif getattr(report, "not_found", None):
                self.tasks.info(f"{what}: {report.message}; nothing was written for it there")
            else:
                self.tasks.status(
                    f"{what}: {written} {unit}, {sum(e.changed for e in writer.edits)} voxels changed"
                )

        def failed(err):
            self.history.record(step, writer)
            show_rest()
            self.tasks.error(title, err)

        self.tasks.start(label, work, done, failed, uses, on_progress=show_new)
