"""The widget's typed state: the current object, click polarity, and undo/redo over label edits.

One user action (a click that re-segments, a propagation, "next object", "clear prompts") is one
:class:`Step`: the label planes it changed (:class:`~napari_sam2.engine.PlaneEdit`, enough to undo
each) and the prompts and object id before and after it. Undo reverts every plane of the step or
none: if any plane changed since (the user painted on it), nothing is touched and the engine's
:class:`~napari_sam2.engine.LabelError` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..engine import LabelError, LabelWriter, PlaneEdit

__all__ = ["PromptSnapshot", "Step", "Session"]


@dataclass(frozen=True, eq=False)
class PromptSnapshot:
    """The contents of the prompt layers at one moment (their own data coordinates).

    Attributes:
        points: (N, d) click coordinates.
        positive: (N,) bool polarity of each click.
        point_ids: (N,) object id of each click.
        boxes: box vertices, each (4, d).
        box_ids: object id of each box.
    """

    points: np.ndarray
    positive: np.ndarray
    point_ids: np.ndarray
    boxes: tuple[np.ndarray, ...] = ()
    box_ids: tuple[int, ...] = ()

    @classmethod
    def empty(cls, ndim: int) -> PromptSnapshot:
        return cls(np.zeros((0, ndim)), np.zeros(0, bool), np.zeros(0, np.int64))


@dataclass(frozen=True, eq=False)
class Step:
    """One undoable action.

    Attributes:
        description: what the user did, e.g. "segment object 3 at z=12".
        edits: the label planes changed, in the order they were written.
        prompts_before, prompts_after: the prompt layers around the action (None: unchanged).
        object_before, object_after: the current object id around the action.
    """

    description: str
    edits: tuple[PlaneEdit, ...] = ()
    prompts_before: PromptSnapshot | None = None
    prompts_after: PromptSnapshot | None = None
    object_before: int = 1
    object_after: int = 1

    @property
    def voxels_changed(self) -> int:
        return sum(e.changed for e in self.edits)


@dataclass
class Session:
    """State of one annotation session.

    Attributes:
        object_id: the id the next segmentation writes.
        positive: polarity of the next click.
        max_steps: how many steps undo keeps (each holds two copies of every plane it changed).
    """

    object_id: int = 1
    positive: bool = True
    max_steps: int = 30
    undo_stack: list[Step] = field(default_factory=list)
    redo_stack: list[Step] = field(default_factory=list)

    def record(self, step: Step) -> None:
        """Add a finished action; a new action clears the redo stack."""
        self.undo_stack.append(step)
        del self.undo_stack[: -self.max_steps]
        self.redo_stack.clear()

    def undo(self, writer: LabelWriter | None) -> Step | None:
        """Revert the last step's label edits; returns it (None if there is nothing to undo).

        Raises:
            LabelError: a plane of the step changed since (nothing is reverted then).
        """
        return self._move(self.undo_stack, self.redo_stack, writer)

    def redo(self, writer: LabelWriter | None) -> Step | None:
        """Re-apply the last undone step; returns the step as it now stands (None if none)."""
        return self._move(self.redo_stack, self.undo_stack, writer)

    def _move(self, source: list[Step], target: list[Step], writer: LabelWriter | None) -> Step | None:
        if not source:
            return None
        step = source[-1]
        if step.edits:
            if writer is None:
                raise LabelError(
                    f"cannot undo {step.description!r}: its labels layer is gone; add it back first"
                )
            for edit in step.edits:  # check every plane before touching any
                current = np.asarray(writer.labels[(*edit.index, slice(None), slice(None))])
                if not np.array_equal(current, edit.after):
                    raise LabelError(
                        f"cannot undo {step.description!r}: plane {edit.index} changed since (painted "
                        "or edited); undo the later edits first, or keep the labels as they are"
                    )
        inverse = tuple(writer.revert(e) for e in reversed(step.edits)) if step.edits else ()
        source.pop()
        flipped = replace(
            step,
            edits=inverse,
            prompts_before=step.prompts_after,
            prompts_after=step.prompts_before,
            object_before=step.object_after,
            object_after=step.object_before,
        )
        target.append(flipped)
        return flipped
