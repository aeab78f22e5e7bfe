"""The widget's typed state: the current object, click polarity, and undo/redo over typed steps.

One user action (a click that re-segments, a propagation, "next object", "clear prompts") is one
:class:`Step`. A step says *what was done* in typed fields (its :class:`StepKind`, object id, frame,
axis, the prompts it used in image pixels, the intensity window, options), which *Copy as Python* and
the session's provenance read; its :attr:`Step.description` is derived from them, for messages
only. It also holds *what changed*: the boxes of changed voxels of each label plane
(:class:`~napari_sam2.engine.PlaneEdit`, enough to undo each) and the prompts and object id before and after. Undo reverts every plane of the
step or none: if any plane changed since (the user painted on it), nothing is touched and the
engine's :class:`~napari_sam2.engine.LabelError` says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import numpy as np

from ..engine import LabelError, LabelWriter, PlaneEdit, Prompt

__all__ = ["PromptSnapshot", "Step", "StepKind", "Session", "where"]

Frame = tuple[int, ...]


def where(frame_axes: str, frame: Frame) -> str:
    """ " at z=3" (or " at t=1 z=3"); "" for a 2D image."""
    return "".join(f" {a}={i}" for a, i in zip(frame_axes, frame)).replace(" ", " at ", 1)


class StepKind(str, Enum):
    """What a :class:`Step` did."""

    SEGMENT = "segment"
    """segment one object on one plane from its prompts there"""
    PROPAGATE = "propagate"
    """track one object along an axis from its prompted frames (or its labels on one frame)"""
    PROPAGATE_LABELS = "propagate labels"
    """track every object of one labels plane along an axis"""
    SEGMENT_EVERYTHING = "segment everything"
    """the automatic generator, on one plane or through the stack"""
    NEXT_OBJECT = "next object"
    """finish an object (its prompts leave the layers) and make another id current"""
    CLEAR_PROMPTS = "clear prompts"
    """remove an object's prompts (its labels stay)"""


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
    """One undoable action: what was done (typed) and what it changed.

    What was done (undo and redo keep these as they are):
        kind: the action.
        object_id: the object acted on (propagate labels, segment everything: the current id then;
            next object: the object finished).
        frame_axes: the image's frame axes then ("", "z", "t" or "tz"), naming the entries of ``frame``.
        frame: the frame the viewer showed: the plane segmented, or where the propagation's other
            frame axes were held (see :attr:`fixed`).
        axis: the axis propagated along ("z", "t" or "z+t"); None for steps on one plane.
        prompts: frame -> the :class:`~napari_sam2.engine.Prompt` used there, in image pixels (row, col)
            (segment: one plane; propagate: every keyframe; empty for a propagation seeded from the
            labels and for steps without prompts).
        window: the intensity window the step's model input used (None: no model ran).
        next_id: "next object": the id it made current.
        options: other settings of the action (segment everything: "whole_stack" and the generator's
            options).

    What it changed (undo and redo swap the before and after values):
        edits: the label planes changed, in the order they were written.
        prompts_before, prompts_after: the prompt layers around the action (None: unchanged).
        object_before, object_after: the current object id around the action (default: ``object_id``).
    """

    kind: StepKind
    object_id: int
    frame_axes: str = ""
    frame: Frame = ()
    axis: str | None = None
    prompts: Mapping[Frame, Prompt] = field(default_factory=dict)
    window: tuple[float, float] | None = None
    next_id: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    edits: tuple[PlaneEdit, ...] = ()
    prompts_before: PromptSnapshot | None = None
    prompts_after: PromptSnapshot | None = None
    object_before: int | None = None
    object_after: int | None = None

    def __post_init__(self) -> None:
        for name in ("object_before", "object_after"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.object_id)

    @property
    def fixed(self) -> dict[str, int]:
        """Frame axes held still by a propagation (axis -> index); {} for steps without an axis."""
        if self.axis is None:
            return {}
        along = self.axis.split("+")
        return {a: int(i) for a, i in zip(self.frame_axes, self.frame) if a not in along}

    @property
    def description(self) -> str:
        """What the user did, for messages ("propagate object 3 along z"); derived from the typed
        fields, and read by nothing but people."""
        obj, at, kind = self.object_id, where(self.frame_axes, self.frame), self.kind
        if kind is StepKind.SEGMENT:
            return f"segment object {obj}{at}"
        if kind is StepKind.PROPAGATE:
            seed = "" if self.prompts else " from its labels"
            return f"propagate object {obj}{seed} along {self.axis}"
        if kind is StepKind.PROPAGATE_LABELS:
            return f"propagate labels{at} along {self.axis}"
        if kind is StepKind.SEGMENT_EVERYTHING:
            return f"segment everything along {self.axis}" if self.axis else f"segment everything{at}"
        if kind is StepKind.NEXT_OBJECT:
            return f"next object {obj} -> {self.next_id}"
        return f"clear prompts of object {obj}"

    def typed(self) -> Step:
        """This step without what undo needs (label edits, prompt snapshots): what was done only."""
        return replace(self, edits=(), prompts_before=None, prompts_after=None)

    @property
    def voxels_changed(self) -> int:
        return sum(e.changed for e in self.edits)

    def to_dict(self) -> dict[str, Any]:
        """The typed fields as JSON-ready data (for a provenance record's ``extra``)."""
        return {
            "kind": self.kind.value,
            "object_id": int(self.object_id),
            "frame": {a: int(i) for a, i in zip(self.frame_axes, self.frame)},
            "axis": self.axis,
            "prompt_frames": [[int(i) for i in f] for f in self.prompts],
            "window": None if self.window is None else [float(v) for v in self.window],
            "next_id": self.next_id,
            "options": dict(self.options),
        }


@dataclass
class Session:
    """State of one annotation session.

    Attributes:
        object_id: the id the next segmentation writes.
        positive: polarity of the next click.
        max_steps: how many steps undo keeps (each holds two copies of the box of changed voxels of
            every plane it changed: bytes for a click on a small object, see :meth:`undo_bytes`).
        undo_stack, redo_stack: the steps undo and redo can move (the last ``max_steps``).
        done: every step still done in the session, oldest first, as :meth:`Step.typed` (no label
            edits or prompt snapshots, so it costs little): what *Copy as Python* replays, also
            beyond the undo stack's ``max_steps``.
    """

    object_id: int = 1
    positive: bool = True
    max_steps: int = 30
    undo_stack: list[Step] = field(default_factory=list)
    redo_stack: list[Step] = field(default_factory=list)
    done: list[Step] = field(default_factory=list)

    def undo_bytes(self) -> int:
        """Memory the undo and redo stacks hold in label edits."""
        return sum(e.nbytes for s in (*self.undo_stack, *self.redo_stack) for e in s.edits)

    def record(self, step: Step) -> None:
        """Add a finished action; a new action clears the redo stack."""
        self.undo_stack.append(step)
        del self.undo_stack[: -self.max_steps]
        self.redo_stack.clear()
        self.done.append(step.typed())

    def undo(self, writer: LabelWriter | None) -> Step | None:
        """Revert the last step's label edits; returns it (None if there is nothing to undo).

        Raises:
            LabelError: a plane of the step changed since (nothing is reverted then).
        """
        step = self._move(self.undo_stack, self.redo_stack, writer)
        if step is not None:
            self.done.pop()
        return step

    def redo(self, writer: LabelWriter | None) -> Step | None:
        """Re-apply the last undone step; returns the step as it now stands (None if none)."""
        step = self._move(self.redo_stack, self.undo_stack, writer)
        if step is not None:
            self.done.append(step.typed())
        return step

    def _move(self, source: list[Step], target: list[Step], writer: LabelWriter | None) -> Step | None:
        if not source:
            return None
        step = source[-1]
        if step.edits:
            if writer is None:
                raise LabelError(
                    f"cannot undo {step.description!r}: its labels layer is gone; add it back first"
                )
            for edit in step.edits:  # check every edited box before touching any
                if not writer.is_current(edit):
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
