"""The widget's long label-writing actions: propagate one object, propagate every object of a
slice, segment everything (on the slice or through the stack).

Each one checks its inputs in the GUI thread (errors become notifications at once), then streams
into a :class:`._ops.RecordingWriter` from the task runner, and records everything written as one
undo step, also when cancelled or failing half-way (the frames written stay whole).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..api.session import (
    RecordingWriter,
    propagate,
    propagate_labels,
    propagate_time,
    segment_everything_plane,
)
from ..engine import PromptError
from ..engine.automask import segment_everything
from ._layers import ImageGeometry, LayerError, prompted_frames
from ._tasks import USER_ERRORS

if TYPE_CHECKING:
    from ._widget import Sam2Widget

__all__ = ["Propagation", "where"]


def where(geometry: ImageGeometry, frame: tuple[int, ...]) -> str:
    """ " at z=3" (or " at t=1 z=3"); "" for a 2D image."""
    return "".join(f" {a}={i}" for a, i in zip(geometry.frame_axes, frame)).replace(" ", " at ", 1)


class Propagation:
    """Propagation and segment-everything for one :class:`~._widget.Sam2Widget` (its part, split
    out for size: it reads the widget's pickers, prompts and model, and runs on its task panel)."""

    def __init__(self, widget: Sam2Widget) -> None:
        self.widget = widget

    def propagate(self, axis: str | None = None) -> None:
        """See :meth:`Sam2Widget.propagate`."""
        w = self.widget
        try:
            image, geometry = w.data.require_image(), w.geometry()
            axis = axis or w.axis_combo.currentText()
            if not axis or (axis != "z+t" and axis not in geometry.frame_axes):
                raise LayerError(
                    f"nothing to propagate through: image {image.name!r} has axes {geometry.axes!r}; propagation "
                    "needs a z or t axis (for a 3D stack, set '3D stack axis')"
                )
            frame, labels, source = w.current_frame(), w.labels_layer(), w.data.source(image, geometry)
            obj, window = w.session.object_id, tuple(image.contrast_limits)
            fa = geometry.frame_axes
            frames = {}
            if w.points_layer is not None:
                frames = prompted_frames(*w.object_prompts(), len(fa))
            writer = RecordingWriter(labels.data, overwrite=w.overwrite)
            if axis == "z+t":
                if not frames:
                    raise PromptError(f"object {obj} has no click or box: click on it on one slice first")
                prompts3 = {(f[0], f[1], obj): p for f, p in frames.items()}

                def work(progress, cancel):
                    return propagate_time(
                        w.model, source, writer, prompts3, window=window, progress=progress, cancel=cancel
                    )
            else:
                k = fa.index(axis)
                fixed = {a: frame[i] for i, a in enumerate(fa) if a != axis}
                same = [i for i, a in enumerate(fa) if a != axis]
                prompts = {f[k]: p for f, p in frames.items() if all(f[i] == frame[i] for i in same)}
                masks = {}
                if not prompts:
                    mask = np.asarray(labels.data[frame]) == obj
                    if not mask.any():
                        raise PromptError(
                            f"object {obj} has no click, box or label on this {'slice' if fa else 'image'}: click "
                            "on it (or paint it with the labels brush), then Propagate"
                        )
                    masks = {frame[k]: mask}

                def work(progress, cancel):
                    return propagate(
                        w.model, source, writer, obj, axis=axis, fixed=fixed, prompts=prompts,
                        masks=masks, window=window, progress=progress, cancel=cancel,
                    )  # fmt: skip
        except USER_ERRORS as err:
            w.tasks.error("Propagate", err)
            return
        if w.model is None:
            w.load_model(then=lambda: w.propagate(axis))
            return
        before = after = w.snapshot()
        self.run_writing(f"propagate object {obj} along {axis}", work, writer, labels, before, after, obj)

    def propagate_all_labels(self, axis: str | None = None) -> None:
        """See :meth:`Sam2Widget.propagate_all_labels`."""
        w = self.widget
        try:
            image, geometry = w.data.require_image(), w.geometry()
            axis = axis or w.axis_combo.currentText()
            if axis not in geometry.frame_axes:
                raise LayerError(f"choose z or t under 'Propagate along' (image axes {geometry.axes!r})")
            frame, labels, source = w.current_frame(), w.labels_layer(), w.data.source(image, geometry)
            fa = geometry.frame_axes
            fixed = {a: frame[i] for i, a in enumerate(fa) if a != axis}
            writer = RecordingWriter(labels.data, overwrite=w.overwrite)
        except USER_ERRORS as err:
            w.tasks.error("Propagate labels", err)
            return
        if w.model is None:
            w.load_model(then=lambda: w.propagate_all_labels(axis))
            return
        window = tuple(image.contrast_limits)

        def work(progress, cancel):
            _, report = propagate_labels(
                w.model, source, writer, frame[fa.index(axis)], axis=axis, fixed=fixed,
                window=window, progress=progress, cancel=cancel,
            )  # fmt: skip
            return report

        snap = w.snapshot()
        obj = w.session.object_id
        self.run_writing(f"propagate labels along {axis}", work, writer, labels, snap, snap, obj)

    def segment_everything(self, whole_stack: bool | None = None, **options: Any) -> None:
        """See :meth:`Sam2Widget.segment_everything`."""
        w = self.widget
        if whole_stack is None:
            whole_stack = w.actions.everything_stack_check.isChecked()
        try:
            image, geometry = w.data.require_image(), w.geometry()
            frame, labels, source = w.current_frame(), w.labels_layer(), w.data.source(image, geometry)
            fa = geometry.frame_axes
            whole_stack = bool(whole_stack and fa)  # a single plane is its own whole stack
            axis = w.axis_combo.currentText()
            if whole_stack and axis not in fa:
                raise LayerError(
                    f"choose z or t under 'Propagate along' to segment everything through the stack (image "
                    f"axes {geometry.axes!r}), or untick 'whole stack' to segment this slice"
                )
            writer = RecordingWriter(labels.data, overwrite=w.overwrite)
        except USER_ERRORS as err:
            w.tasks.error("Segment everything", err)
            return
        if w.model is None:
            w.load_model(then=lambda: w.segment_everything(whole_stack, **options))
            return
        window = tuple(image.contrast_limits)
        if whole_stack:
            fixed = {a: frame[i] for i, a in enumerate(fa) if a != axis}
            what = f"segment everything along {axis}"

            def work(progress, cancel):
                return segment_everything(
                    w.model, source, axis=axis, fixed=fixed, window=window, writer=writer,
                    progress=progress, cancel=cancel, **options,
                )  # fmt: skip
        else:
            what = f"segment everything{where(geometry, frame)}"

            def work(progress, cancel):
                return segment_everything_plane(
                    w.model, source, frame, writer, window=window, progress=progress, cancel=cancel, **options
                )

        def next_id(report):  # the next click starts a new object
            return max(max(report.objects, default=0) + 1, w.session.object_id)

        snap, obj = w.snapshot(), w.session.object_id
        self.run_writing(
            what, work, writer, labels, snap, snap, obj,
            title="Segment everything", label="segment everything", unit="objects", next_id=next_id,
        )  # fmt: skip

    def run_writing(
        self, what, work, writer, labels, before, after, obj, *,
        title: str = "Propagate", label: str = "propagate", unit: str = "frames", next_id=None,
    ) -> None:  # fmt: skip
        """Run a task that streams into ``writer``; record its edits even when cancelled or failing.

        Args:
            what: the undo step's description; title: the action in error messages; label: the task's.
            unit: what the report counts ("frames": ``report.frames``, "objects": ``report.objects``).
            next_id: ``next_id(report)`` -> the current object id after a finished (or cancelled) run.
        """
        w = self.widget

        def done(report):
            w.last_report = report
            obj_after = obj if next_id is None else next_id(report)
            w.record_step(what, writer, before, after, obj, obj_after)
            labels.refresh()
            if obj_after != obj:
                w.set_object_id(obj_after)
            total = getattr(report, "total", 0)
            written = len(getattr(report, unit, getattr(report, "objects", [])))
            if report.cancelled:
                w.tasks.info(
                    f"{what}: cancelled after {written} of {total or '?'} {unit}; the {unit} written are kept "
                    "(Undo removes them)"
                )
            else:
                w.tasks.status(
                    f"{what}: {written} {unit}, {sum(e.changed for e in writer.edits)} voxels changed"
                )

        def failed(err):
            w.record_step(what, writer, before, after, obj, obj)
            labels.refresh()
            w.tasks.error(title, err)

        w.tasks.start(label, work, done, failed)
