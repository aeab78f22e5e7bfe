"""The widget's undo history: recording steps, the prompt-only steps (next object, clear prompts),
undo and redo.

Every action that writes labels or changes the prompt layers becomes one typed
:class:`._session.Step` (:meth:`History.record`); undo and redo move steps between the session's
stacks, revert or re-apply the changed boxes of their label planes through the layer (only those
voxels are written and redrawn, :mod:`._label_edits`), and put the prompt layers and the current object id
back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Labels

from ._label_edits import LayerLabelWriter
from ._ports import Tasks
from ._prompts import PromptLayers
from ._session import Session, Step, StepKind
from ._tasks import USER_ERRORS

if TYPE_CHECKING:
    from ..api.session import RecordingWriter

__all__ = ["History"]


class History:
    """Undo/redo and the prompt-only steps of one widget.

    Args:
        session: the current object id and the undo/redo stacks.
        prompts: the prompt layers (snapshots to record, restored by undo).
        labels: returns the output Labels layer if there is one (never creates it).
        tasks: says whether a task runs, and shows the messages.
        set_object_id: makes an id current (the session, the object box and the prompt defaults).
    """

    def __init__(
        self,
        session: Session,
        prompts: PromptLayers,
        labels: Callable[[], Labels | None],
        tasks: Tasks,
        set_object_id: Callable[[int], None],
    ) -> None:
        self.session = session
        self.prompts = prompts
        self.labels = labels
        self.tasks = tasks
        self.set_object_id = set_object_id

    def record(self, step: Step, writer: RecordingWriter | None = None) -> None:
        """Record a finished action as one undo step, with the label edits ``writer`` made (a step
        that changed neither labels nor prompts is not recorded)."""
        edits = tuple(writer.edits) if writer is not None else step.edits
        if edits or step.prompts_before is not step.prompts_after:
            self.session.record(replace(step, edits=edits))
        if step.prompts_after is not None:
            self.prompts.last = step.prompts_after

    def next_object(self) -> int:
        """Finish the current object: its prompts leave the layers, the next free id becomes current."""
        old = self.session.object_id
        labels = self.labels()
        top = int(np.max(labels.data)) if labels is not None and labels.data.size else 0
        new = max(old + 1, top + 1)
        before = self.prompts.snapshot()
        after = self.prompts.without_object(before, old)
        if self.prompts.points is not None:
            self.prompts.restore(after)
        self.record(
            Step(
                StepKind.NEXT_OBJECT,
                old,
                next_id=new,
                prompts_before=before,
                prompts_after=after,
                object_after=new,
            )
        )
        self.set_object_id(new)
        return new

    def clear_prompts(self) -> None:
        """Remove the current object's clicks and boxes (its labels stay)."""
        if self.prompts.points is None:
            return
        obj = self.session.object_id
        before = self.prompts.snapshot()
        after = self.prompts.without_object(before, obj)
        self.prompts.restore(after)
        self.record(Step(StepKind.CLEAR_PROMPTS, obj, prompts_before=before, prompts_after=after))

    def undo(self) -> None:
        self._move("Undo", self.session.undo)

    def redo(self) -> None:
        self._move("Redo", self.session.redo)

    def _move(self, what: str, move) -> None:
        if self.tasks.busy:
            self.tasks.info(f"{what}: wait for {self.tasks.label} to finish (or Cancel it) first")
            return
        try:
            labels = self.labels()
            step = move(LayerLabelWriter(labels) if labels is not None else None)
        except USER_ERRORS as err:
            self.tasks.error(what, err)
            return
        if step is None:
            self.tasks.info(f"nothing to {what.lower()}")
            return
        if step.prompts_after is not None and self.prompts.points is not None:
            self.prompts.restore(step.prompts_after)
            self.prompts.last = step.prompts_after
        self.set_object_id(step.object_after)  # the labels redrew the reverted boxes as they were written
        self.tasks.status(f"{what}: {step.description}")
