"""The widget's undoable steps that are not segmentation: next object, clear prompts, undo, redo.

Every action that writes labels or changes the prompt layers becomes one :class:`._session.Step`
(:meth:`History.record`); undo and redo move steps between the session's stacks, revert or
re-apply their label planes, and put the prompt layers and the current object id back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..engine import LabelWriter
from ._session import PromptSnapshot, Step
from ._tasks import USER_ERRORS

if TYPE_CHECKING:
    from ..api.session import RecordingWriter
    from ._widget import Sam2Widget

__all__ = ["History"]


class History:
    """Undo/redo and the prompt-only steps of one :class:`~._widget.Sam2Widget` (its part, split
    out for size: it edits the widget's session, prompt layers and labels)."""

    def __init__(self, widget: Sam2Widget) -> None:
        self.widget = widget

    def record(
        self,
        what: str,
        writer: RecordingWriter,
        before: PromptSnapshot | None,
        after: PromptSnapshot | None,
        obj_before: int,
        obj_after: int,
    ) -> None:
        """Record a finished action's label edits and prompts as one undo step."""
        w = self.widget
        if writer.edits or before is not after:
            w.session.record(Step(what, tuple(writer.edits), before, after, obj_before, obj_after))
        if after is not None:
            w.prompts.last = after

    def next_object(self) -> int:
        """See :meth:`Sam2Widget.next_object`."""
        w = self.widget
        old = w.session.object_id
        labels = w.data.existing_labels()
        top = int(np.max(labels.data)) if labels is not None and labels.data.size else 0
        new = max(old + 1, top + 1)
        before = w.prompts.snapshot()
        after = w.prompts.without_object(before, old)
        if w.prompts.points is not None:
            w.prompts.restore(after)
        w.session.record(Step(f"next object {old} -> {new}", (), before, after, old, new))
        w.prompts.last = after
        w.set_object_id(new)
        return new

    def clear_prompts(self) -> None:
        """See :meth:`Sam2Widget.clear_prompts`."""
        w = self.widget
        if w.prompts.points is None:
            return
        obj = w.session.object_id
        before = w.prompts.snapshot()
        after = w.prompts.without_object(before, obj)
        w.prompts.restore(after)
        w.session.record(Step(f"clear prompts of object {obj}", (), before, after, obj, obj))
        w.prompts.last = after

    def undo(self) -> None:
        self._move("Undo", self.widget.session.undo)

    def redo(self) -> None:
        self._move("Redo", self.widget.session.redo)

    def _move(self, what: str, move) -> None:
        w = self.widget
        if w.runner.busy:
            w.tasks.info(f"{what}: wait for {w.runner.label} to finish (or Cancel it) first")
            return
        try:
            labels = w.data.existing_labels()
            step = move(LabelWriter(labels.data) if labels is not None else None)
        except USER_ERRORS as err:
            w.tasks.error(what, err)
            return
        if step is None:
            w.tasks.info(f"nothing to {what.lower()}")
            return
        if step.prompts_after is not None and w.prompts.points is not None:
            w.prompts.restore(step.prompts_after)
            w.prompts.last = step.prompts_after
        w.set_object_id(step.object_after)
        if labels is not None:
            labels.refresh()
        w.tasks.status(f"{what}: {step.description}")
