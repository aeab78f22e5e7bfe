"""The "Model" box of the widget: which SAM2 to use, on which device, and the task that loads it.

The picker lists "demo", the official SAM 2/2.1 models, the other families (EdgeTAM, MedSAM2,
EfficientTAM; a one-line hint under the picker says what each family is good for) and local
checkpoint files. :meth:`ModelPicker.load_task`
returns the work for the widget's task runner: it downloads an official model once (with progress
in MiB and cancel) and loads it with :func:`napari_sam2.api.load_model`, which also remembers where
the model came from (name or file, and its SHA-256) for provenance (*Copy as Python*).
:class:`ModelSlot` holds the model in use for the widget's actions and loads the picked one on demand.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton

from ..api import load_model  # records the model's source and checksum, for provenance
from ..engine import ImagePredictor
from ..model.weights import (
    FAMILIES,
    FAMILY_WEIGHTS,
    OFFICIAL_WEIGHTS,
    cached_weights_path,
    download_weights,
    family_of,
)
from ._layers import LayerError
from ._ports import Tasks
from ._tasks import USER_ERRORS

__all__ = [
    "CHECKPOINT_FILE",
    "DEMO",
    "DEMO_NOTICE",
    "ModelPicker",
    "ModelSlot",
    "available_devices",
    "model_hint",
]

CHECKPOINT_FILE = "checkpoint file..."
DEMO = "demo"
DEMO_NOTICE = (
    "The 'demo' model is a tiny SAM2 trained mostly on generated nuclei like the sample (File > Open "
    "Sample > Nuclei 3D); on real fluorescence nuclei its masks reach about 0.7 IoU, on other objects "
    "they are poor. For your data pick an official model "
    "under Model (e.g. sam2.1_hiera_tiny; downloaded once) and press Load."
)
"""Said once per widget when the demo model is used on an image other than the sample."""


def model_hint(name: str) -> str:
    """One line about a picker entry: its family and what it is good for ("EdgeTAM: fast on CPU")."""
    if name == DEMO:
        return "demo: small model trained on nuclei (mostly synthetic), for trying the plugin"
    if name == CHECKPOINT_FILE:
        return "a SAM2-family checkpoint file on this computer"
    if name not in OFFICIAL_WEIGHTS and name not in FAMILY_WEIGHTS:
        return "checkpoint file"
    family, hint = FAMILIES[family_of(name)]
    return f"{family}: {hint}"


def available_devices() -> list[str]:
    """ "auto", "cpu", then "cuda" and "mps" where this torch build can use them."""
    devices = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


class ModelPicker(QGroupBox):
    """Model and device pickers, the Load button and a line saying which model is in use."""

    def __init__(self) -> None:
        super().__init__("Model")
        form = QFormLayout(self)
        self.model_combo = QComboBox()
        self.model_combo.addItems([DEMO, *OFFICIAL_WEIGHTS, *FAMILY_WEIGHTS, CHECKPOINT_FILE])
        for i in range(self.model_combo.count()):
            self.model_combo.setItemData(
                i, model_hint(self.model_combo.itemText(i)), Qt.ItemDataRole.ToolTipRole
            )
        self.model_combo.setToolTip(
            "demo: a tiny model for the generated sample only. sam2*/sam2.1*: Meta's official models "
            "(downloaded once; tiny is fastest, large most accurate); EdgeTAM, EfficientTAM, MedSAM2; "
            "or a checkpoint file. Each entry's tooltip says what it is for"
        )
        self.hint_label = QLabel(model_hint(DEMO))
        self.hint_label.setWordWrap(True)
        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())
        self.device_combo.setToolTip("Where the model runs: auto picks a GPU when there is one")
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip(
            "Load the picked model now (Segment and Propagate also load it when needed)"
        )
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.load_button)
        form.addRow("Model", row)
        form.addRow(self.hint_label)
        form.addRow("Device", self.device_combo)
        self.model_label = QLabel("no model loaded (Segment loads the selected one)")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        self.model_combo.activated.connect(self._on_choice)
        self.model_combo.currentTextChanged.connect(lambda text: self.hint_label.setText(model_hint(text)))

    def _on_choice(self, index: int) -> None:
        if self.model_combo.itemText(index) == CHECKPOINT_FILE:
            self.choose_checkpoint()

    def choose_checkpoint(self, path: str | None = None) -> str | None:
        """Add a local checkpoint file to the picker (a file dialog without ``path``)."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(
                self, "SAM2 checkpoint", "", "PyTorch checkpoints (*.pt *.pth)"
            )
        if not path:
            return None
        self.model_combo.insertItem(self.model_combo.count() - 1, path)
        self.model_combo.setCurrentText(path)
        return path

    def show_model(self, name: str, device: Any) -> None:
        note = " (for trying the plugin: see the tooltip)" if name == DEMO else ""
        self.model_label.setText(f"model: {name} on {device}{note}")
        self.model_label.setToolTip(DEMO_NOTICE if name == DEMO else "")

    def load_task(
        self, source: str | None = None, device: str | None = None
    ) -> tuple[str, Callable[[Callable, Callable], Any]]:
        """(the source to load, ``work(progress, cancel) -> Sam2Model``) for the picked or given model.

        Raises:
            LayerError: "checkpoint file..." is picked but no file was chosen.
        """
        source = source or self.model_combo.currentText()
        device = device or self.device_combo.currentText()
        if source == CHECKPOINT_FILE:
            raise LayerError("choose a checkpoint file first (Model > checkpoint file...)")

        def work(progress, cancel):
            if (source in OFFICIAL_WEIGHTS or source in FAMILY_WEIGHTS) and cached_weights_path(
                source
            ) is None:
                mib = 2**20
                download_weights(
                    source,
                    progress=lambda done, total: progress(done // mib, (total or 0) // mib),
                    cancel=cancel,
                )
            return load_model(source, device=device, download=False)

        return source, work


class ModelSlot:
    """The model the widget's actions use, its name and its image predictor.

    Args:
        picker: the Model box (what to load, and where it shows the model in use).
        tasks: runs the load (download with progress, Cancel) and shows its errors.
        on_change: called after the model in use changed.

    Attributes:
        model: a ``Sam2Model``, or any predictor ``Backend`` for segmentation only (None: none yet).
        name: its name or source ("demo", an official name, a checkpoint path).
        predictor: an :class:`~napari_sam2.engine.ImagePredictor` over it (its tiling and embeddings).
    """

    def __init__(
        self, picker: ModelPicker, tasks: Tasks, on_change: Callable[[], None] | None = None
    ) -> None:
        self.picker = picker
        self.tasks = tasks
        self.on_change = on_change
        self.model: Any = None
        self.name = ""
        self.predictor: ImagePredictor | None = None

    def set(self, model: Any, name: str | None = None) -> None:
        """Use ``model`` from now on."""
        self.model = model
        config = getattr(model, "config", None)
        self.name = name or (config.name if config is not None else type(model).__name__)
        self.predictor = ImagePredictor(model)
        self.picker.show_model(self.name, getattr(model, "device", "cpu"))
        if self.on_change is not None:  # e.g. the window line: MedSAM2 brings its own window
            self.on_change()

    def load(
        self, source: str | None = None, device: str | None = None, then: Callable | None = None
    ) -> None:
        """Load an official model (downloaded once, with progress), a checkpoint file or "demo"."""
        try:
            source, work = self.picker.load_task(source, device)
        except USER_ERRORS as err:
            self.tasks.error("Load model", err)
            return

        def done(model):
            self.set(model, source)
            if then is not None:
                then()

        self.tasks.start(f"load {source}", work, done, "Load model")

    def ready(self, then: Callable[[], None]) -> bool:
        """True if a model is in use; else load the picked one, call ``then()`` once it is, and
        return False (the caller stops and is called again)."""
        if self.model is not None:
            return True
        self.load(then=then)
        return False
