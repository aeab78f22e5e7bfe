"""The widget's "Actions" box and its viewer keys: one button (and maybe one key) per public method.

Every entry of :data:`ACTIONS` names a method of the widget; the button and the key call it with no
arguments, so a test or a script calling the method does exactly what the button does.
"""

from __future__ import annotations

from collections.abc import Callable

import napari.viewer
from qtpy.QtWidgets import QCheckBox, QComboBox, QGridLayout, QGroupBox, QLabel, QPushButton

__all__ = ["ACTIONS", "KEYS", "ActionPanel", "bind_keys", "unbind_keys"]

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
        axis_combo: the axis to propagate along ("z", "t" or "z+t"; empty for a 2D image).
        everything_stack_check: *Segment everything* runs through the whole stack (seed frames
            tracked along the axis) instead of on the current slice.
    """

    def __init__(self, handler: Callable[[str], None]) -> None:
        super().__init__("Actions")
        grid = QGridLayout(self)
        self.buttons: dict[str, QPushButton] = {}
        for i, (name, text) in enumerate(ACTIONS):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, n=name: handler(n))
            self.buttons[name] = button
            grid.addWidget(button, i // 2, i % 2)
        row = len(ACTIONS) // 2
        self.axis_combo = QComboBox()
        grid.addWidget(QLabel("Propagate along"), row, 0)
        grid.addWidget(self.axis_combo, row, 1)
        self.everything_stack_check = QCheckBox("Segment everything: whole stack (along the axis above)")
        grid.addWidget(self.everything_stack_check, row + 1, 0, 1, 2)

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
