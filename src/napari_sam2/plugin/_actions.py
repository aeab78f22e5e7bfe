"""The widget's "Actions" box and its viewer keys: one button (and maybe one key) per public method.

Every entry of :data:`ACTIONS` names a method of the widget; the button and the key call it with no
arguments, so a test or a script calling the method does exactly what the button does.
"""

from __future__ import annotations

from collections.abc import Callable

import napari.viewer
from qtpy.QtWidgets import QCheckBox, QComboBox, QGridLayout, QGroupBox, QLabel, QPushButton, QWidget

__all__ = ["ACTIONS", "ADVANCED", "KEYS", "TOOLTIPS", "ActionPanel", "bind_keys", "unbind_keys"]

ACTIONS = (
    ("segment", "Segment (Shift-S)"),
    ("propagate", "Propagate (Shift-F)"),
    ("next_object", "Next object (Shift-N)"),
    ("clear_prompts", "Clear prompts (Shift-X)"),
    ("undo", "Undo (Shift-Z)"),
    ("redo", "Redo (Shift-Y)"),
    ("propagate_all_labels", "Propagate labels on slice"),
    ("encode_current", "Encode slice"),
    ("segment_everything", "Segment everything"),
    ("copy_as_python", "Copy as Python"),
)
"""(method name, button text), in the order of the button grid."""

ADVANCED = ("propagate_all_labels", "encode_current", "segment_everything", "copy_as_python")
"""The actions in the widget's collapsible *Advanced* section (the others are the core flow)."""

TOOLTIPS = {
    "segment": "Segment the current object on this slice from its clicks and box (live mode does it per click)",
    "propagate": (
        "Track the current object through the stack from its prompted slices; after a correction click "
        "only the slices that click governs are redone"
    ),
    "next_object": "Finish this object: its clicks leave the prompts layer and the next free id becomes current",
    "clear_prompts": "Remove the current object's clicks and boxes (its labels stay)",
    "undo": "Undo the last segmentation, propagation, next object or clear",
    "redo": "Redo the last undone step",
    "propagate_all_labels": "Track every object of this labels slice through the stack",
    "encode_current": "Compute this slice's image embedding now, so the next click only decodes",
    "segment_everything": "Find every object on this slice (or through the stack, see the tick box) automatically",
    "copy_as_python": "Put a Python script that makes these labels again on the clipboard",
}
"""Method name -> the tooltip of its button."""

KEYS = {
    "Shift-S": "segment",
    "Shift-F": "propagate",
    "Shift-N": "next_object",
    "Shift-X": "clear_prompts",
    "Shift-Z": "undo",
    "Shift-Y": "redo",
    "Shift-T": "toggle_polarity",
    "Shift-C": "cancel",
}
"""Viewer key -> method name."""


class ActionPanel(QGroupBox):
    """The action buttons, the "Propagate along" axis picker and the whole-stack switch.

    Args:
        handler: ``handler(name)`` runs the method ``name`` of :data:`ACTIONS`.

    Attributes:
        buttons: method name -> its button.
        advanced: the advanced buttons and the whole-stack switch, for the widget to place.
        axis_combo: the axis to propagate along ("z", "t" or "z+t"; empty for a 2D image).
        everything_stack_check: *Segment everything* runs through the whole stack (seed frames
            tracked along the axis) instead of on the current slice.
    """

    def __init__(self, handler: Callable[[str], None]) -> None:
        super().__init__("Actions")
        grid = QGridLayout(self)
        self.advanced = QWidget()
        more = QGridLayout(self.advanced)
        more.setContentsMargins(0, 0, 0, 0)
        self.buttons: dict[str, QPushButton] = {}
        core = [a for a in ACTIONS if a[0] not in ADVANCED]
        extra = [a for a in ACTIONS if a[0] in ADVANCED]
        for layout, actions in ((grid, core), (more, extra)):
            for i, (name, text) in enumerate(actions):
                button = QPushButton(text)
                button.setToolTip(TOOLTIPS[name])
                button.clicked.connect(lambda _=False, n=name: handler(n))
                self.buttons[name] = button
                layout.addWidget(button, i // 2, i % 2)
        row = (len(core) + 1) // 2
        self.axis_combo = QComboBox()
        self.axis_combo.setToolTip("The axis Propagate tracks along: z, t, or z+t (3D objects through time)")
        grid.addWidget(QLabel("Propagate along"), row, 0)
        grid.addWidget(self.axis_combo, row, 1)
        self.everything_stack_check = QCheckBox("Segment everything: whole stack")
        self.everything_stack_check.setToolTip(
            "Segment everything through the stack (objects found on seed slices are tracked along the "
            "'Propagate along' axis) instead of on this slice"
        )
        more.addWidget(self.everything_stack_check, (len(extra) + 1) // 2, 0, 1, 2)

    def set_axes(self, frame_axes: str) -> None:
        """Offer the image's frame axes (and "z+t" for (t, z) data); keep the choice if possible."""
        current = self.axis_combo.currentText()
        choices = list(frame_axes) + (["z+t"] if frame_axes == "tz" else [])
        self.axis_combo.clear()
        self.axis_combo.addItems(choices)
        if current in choices:
            self.axis_combo.setCurrentText(current)
        elif "z" in choices:
            self.axis_combo.setCurrentText("z")


def bind_keys(viewer: napari.viewer.Viewer, handler: Callable[[str], None]) -> None:
    """Bind :data:`KEYS` on ``viewer`` to ``handler(method name)``."""
    for key, name in KEYS.items():
        viewer.bind_key(key, lambda v, n=name: handler(n), overwrite=True)


def unbind_keys(viewer: napari.viewer.Viewer) -> None:
    for key in KEYS:
        viewer.keymap.pop(key, None)
