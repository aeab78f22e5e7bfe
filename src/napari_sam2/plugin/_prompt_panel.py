"""The widget's "Prompts" box: the current object id, the next click's polarity and the live switch.

The polarity button is drawn in the click's colour (:data:`POLARITY_STYLE`): dark text on green for
positive, on magenta for negative, both well above the WCAG 4.5:1 contrast for text.
"""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QPushButton, QSpinBox

from ._prompts import NEGATIVE_COLOR, POSITIVE_COLOR

__all__ = ["POLARITY_STYLE", "PromptPanel"]

TEXT_COLOR = "#000000"
POLARITY_STYLE = {True: (TEXT_COLOR, POSITIVE_COLOR), False: (TEXT_COLOR, NEGATIVE_COLOR)}
"""positive? -> (text colour, background colour) of the polarity button."""


class PromptPanel(QGroupBox):
    """Object id, polarity button, the *Live* switch and *Add prompt layers*.

    ``overwrite_check`` (*Overwrite other objects*) is made here and placed by the widget (in its
    advanced section).
    """

    def __init__(self) -> None:
        super().__init__("Prompts")
        form = QFormLayout(self)
        self.object_spin = QSpinBox()
        self.object_spin.setRange(1, 2**31 - 1)
        self.object_spin.setToolTip(
            "The id the next clicks segment and write into the labels (Shift-N: next)"
        )
        self.polarity_button = QPushButton()
        self.polarity_button.setCheckable(True)
        self.polarity_button.setToolTip(
            "Polarity of the next click: positive (inside the object) or negative (outside); T on the "
            "prompts layer or Shift-T toggles it"
        )
        self.live_check = QCheckBox("Live: each click re-segments")
        self.live_check.setToolTip(
            "Each click segments its slice at once; on a slice already propagated it re-propagates the "
            "slices that click now governs"
        )
        self.live_check.setChecked(True)
        self.overwrite_check = QCheckBox("Overwrite other objects")
        self.overwrite_check.setToolTip("Let new masks take voxels that already belong to another object")
        self.prompt_layers_button = QPushButton("Add prompt layers")
        self.prompt_layers_button.setToolTip(
            "Create (or find again) the 'SAM2 prompts' points layer and the 'SAM2 boxes' shapes layer, "
            "and select the prompts layer for clicking"
        )
        form.addRow("Object id", self.object_spin)
        form.addRow("Next click", self.polarity_button)
        form.addRow(self.live_check)
        form.addRow(self.prompt_layers_button)
        self.show_polarity(True)

    def show_polarity(self, positive: bool) -> None:
        self.polarity_button.setChecked(not positive)
        self.polarity_button.setText("positive (T toggles)" if positive else "negative (T toggles)")
        text, background = POLARITY_STYLE[bool(positive)]
        self.polarity_button.setStyleSheet(
            f"QPushButton {{ color: {text}; background-color: {background}; font-weight: bold; "
            "border-radius: 3px; padding: 3px; }"
        )

    def show_object(self, obj_id: int) -> None:
        """Show ``obj_id`` without emitting ``object_spin.valueChanged``."""
        self.object_spin.blockSignals(True)
        self.object_spin.setValue(int(obj_id))
        self.object_spin.blockSignals(False)
