"""The widget's "Prompts" box: the current object id, the next click's polarity and the switches."""

from __future__ import annotations

from qtpy.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QPushButton, QSpinBox

from ._prompts import NEGATIVE_COLOR, POSITIVE_COLOR

__all__ = ["PromptPanel"]


class PromptPanel(QGroupBox):
    """Object id, polarity button, *Live* and *Overwrite* switches, and *Add prompt layers*."""

    def __init__(self) -> None:
        super().__init__("Prompts")
        form = QFormLayout(self)
        self.object_spin = QSpinBox()
        self.object_spin.setRange(1, 2**31 - 1)
        self.polarity_button = QPushButton()
        self.polarity_button.setCheckable(True)
        self.live_check = QCheckBox("Live: each click re-segments")
        self.live_check.setChecked(True)
        self.overwrite_check = QCheckBox("Overwrite other objects")
        self.prompt_layers_button = QPushButton("Add prompt layers")
        form.addRow("Object id", self.object_spin)
        form.addRow("Next click", self.polarity_button)
        form.addRow(self.live_check)
        form.addRow(self.overwrite_check)
        form.addRow(self.prompt_layers_button)
        self.show_polarity(True)

    def show_polarity(self, positive: bool) -> None:
        self.polarity_button.setChecked(not positive)
        self.polarity_button.setText("positive (T toggles)" if positive else "negative (T toggles)")
        color = POSITIVE_COLOR if positive else NEGATIVE_COLOR
        self.polarity_button.setStyleSheet(f"color: {color}; font-weight: bold")

    def show_object(self, obj_id: int) -> None:
        """Show ``obj_id`` without emitting ``object_spin.valueChanged``."""
        self.object_spin.blockSignals(True)
        self.object_spin.setValue(int(obj_id))
        self.object_spin.blockSignals(False)
