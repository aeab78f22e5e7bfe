"""Which intensity window a run uses when none is asked for, and why: one rule for the scripting
API, the command line, batch runs and the widget.

:func:`choose_window` takes, in this order: the window the caller asked for; else the convention of
the model's authors (:func:`model_window`; MedSAM2's, below, and the shipped demo model's); else a
medical volume's preset (a CT volume: ``ct:soft_tissue``, :mod:`.medical`); else robust percentiles
of a sample of the data. It returns a :class:`WindowChoice`: the window, the rule that chose it and
one line saying why, which the provenance record keeps (``options["window_rule"]``,
``options["window_from"]``) and the widget shows.

The demo model (``napari_sam2/data/demo_sam2.pt``) takes :func:`.intensity.foreground_window` on
microscopy (anything but a medical volume): the top of the window is the 80th percentile of the
values above Otsu's threshold. With the robust 0.5-99.5 % window, a few bright nuclei among dim ones
put the dim ones low in the window and the demo model then finds nothing where the user clicks: on
the 2018 Data Science Bowl image (``napari-sam2 evaluate --data dsb2018``, 125 nuclei) one click
gave a mean IoU of 0.23 with it, 0.08 with :func:`.intensity.dataset_window` and 0.67 with the
foreground window. The percentile (70, 75, 80, 85 or 90) was chosen on that image and on the
PlantSeg crops, with held-out generated data as a check; docs/quality.md has the table and the
commands. Medical volumes (a NIfTI, NRRD or DICOM input, or CT told by its values) keep their preset
or robust percentiles: on the brain MRI the foreground window saturates the bright tumour together
with the tissue around it (1-click 0.568 in the robust window, 0.072 in the foreground one).

MedSAM2's intensity conventions (Ma et al. 2025, github.com/bowang-lab/MedSAM2), as read in the
authors' scripts (facts taken over, not their code):

* ``medsam2_infer_3D_CT.py`` (the README's command for 3D CT; bowang-lab/MedSAM2 at commit 56a9df6,
  identical in the mirror soumickmj/MedSAM2 at 4d4f591) windows each DeepLesion lesion with its own
  ``DICOM_windows`` (lower, upper HU) from the dataset's ``DeepLesion_Dataset_Info.csv``: the volume
  is clipped to it, min-max scaled to 0..255 and cast to uint8, each slice made RGB and resized to
  512 x 512 with PIL, divided by 255 and normalised with the ImageNet mean (0.485, 0.456, 0.406)
  and std (0.229, 0.224, 0.225). Those per-lesion windows come with the dataset, not the model.
* ``medsam2_infer_general.py`` (bowang-lab/MedSAM2 at 56a9df6; its default input is a
  CT_DeepLesion-MedSAM2 volume; its comments and paths suggest a contributor's version) uses one
  fixed CT window, -150..250 HU (level 50, width 400: abdominal soft tissue), then the same steps
  (min-max to 0..255, uint8, PIL bilinear resize to 512, /255, ImageNet mean/std).
* ``examples/infer_CT_LUNA25.py`` (lung nodules; read in soumickmj/MedSAM2 at 8f160bc) has a
  ``preprocess`` for both cases: CT clipped to a level/width window (its default -750/1500 for the
  lung), any other modality clipped to the 0.5th and 99.5th percentiles of the voxels above 0, then
  min-max scaled to 0..255 (voxels that were 0 stay 0).
* MedSAM's data preparation for fine-tuning SAM2 (bowang-lab/MedSAM, MedSAM2 branch, README,
  ``pre_CT_MR.py``) windows CT at level 40, width 400.

So a MedSAM2 model gets :data:`MEDSAM2_CT_WINDOW` on CT (the fixed window of the authors'
single-volume script) and :data:`MEDSAM2_PERCENTILES` of the values above 0 on anything else.
The min-max scaling after clipping is kept exactly: the window's ends are the clipped volume's
minimum and maximum (:func:`medsam2_ct_window`). What is not copied is the uint8 cast before the
resize: it rounds the windowed value down to a multiple of 1/255 (under 0.4 % of the window,
1.6 HU for a 400 HU window, below CT noise), and the authors' LUNA25 script skips it for 512 x 512
slices; we resize the float plane (antialiased bilinear) and normalise with the same ImageNet mean
and std (:func:`.intensity.to_model_input`). Planes up to the model input are resized whole, as
the authors do; larger ones are tiled unless ``tile_size`` covers the plane.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..model.weights import FAMILIES, family_of
from .intensity import (
    FOREGROUND_PERCENTILE,
    IntensityWindow,
    WindowError,
    foreground_window,
    resolve_window,
    robust_window,
)
from .medical import looks_like_ct

__all__ = [
    "MEDSAM2_CT_WINDOW",
    "MEDSAM2_PERCENTILES",
    "WindowChoice",
    "choose_window",
    "medsam2_ct_window",
    "medsam2_percentile_window",
    "modality_reason",
    "model_window",
    "window_convention",
]

MEDSAM2_CT_WINDOW = (-150.0, 250.0)
"""MedSAM2's CT window in HU (level 50, width 400), from the authors' ``medsam2_infer_general.py``."""
MEDSAM2_PERCENTILES = (0.5, 99.5)
"""MedSAM2's window for other modalities: these percentiles of the values above 0
(``examples/infer_CT_LUNA25.py``)."""

DEMO_NAME = "demo"
"""The config name of the shipped demo model, whose window is :func:`.intensity.foreground_window`."""

RULES = ("asked", "medsam2_ct", "medsam2_percentiles", "demo_foreground", "preset", "auto")
"""The values of :attr:`WindowChoice.rule`."""

Sample = Callable[[], np.ndarray]


@dataclass(frozen=True)
class WindowChoice:
    """A window and why it was taken.

    Attributes:
        window: the intensity window in data units.
        rule: one of :data:`RULES`: asked by the caller, MedSAM2's CT window, MedSAM2's
            percentiles, the demo model's foreground window, a medical volume's preset, robust
            percentiles.
        text: one line for people, e.g. "MedSAM2's CT window -150..250 HU (CT from the values)".
    """

    window: IntensityWindow
    rule: str
    text: str

    def entry(self) -> dict[str, str]:
        """The provenance record's ``options`` entries: ``window_rule`` and ``window_from``."""
        return {"window_rule": self.rule, "window_from": self.text}


def _span(window: IntensityWindow) -> str:
    return f"{window.low:g}..{window.high:g}"


def window_convention(model: Any, geometry: Any = None) -> str | None:
    """The display name of the model whose authors fix an intensity convention that ``model``
    follows ("MedSAM2", "the demo model"), or None (SAM 2/2.1, EdgeTAM, EfficientTAM, a stand-in
    backend, and the demo model on a medical volume: ``geometry`` not None)."""
    name = getattr(getattr(model, "config", None), "name", None)
    if name == DEMO_NAME:
        return "the demo model" if geometry is None else None
    if not isinstance(name, str) or family_of(name) != "medsam2":
        return None
    return FAMILIES["medsam2"][0]


def modality_reason(geometry: Any, values: np.ndarray | None = None) -> tuple[bool, str]:
    """(is CT, why) for a medical volume's geometry, or by the values when there is none.

    Args:
        geometry: a :class:`~.medical.MedicalGeometry` (its modality comes from the DICOM header or
            the values), or None for other images.
        values: a sample of the data, used only without a geometry (:func:`.medical.looks_like_ct`).
    """
    if geometry is not None:
        modality = getattr(geometry, "modality", None)
        if modality:
            return (
                modality == "CT",
                f"{modality} from the {getattr(geometry, 'modality_from', None) or 'file'}",
            )
        return False, "not CT by its values"
    if values is not None and looks_like_ct(values):
        return True, "CT by its values"
    return False, "not CT by its values"


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        raise WindowError(
            "cannot compute an intensity window: the data has no finite values; give an explicit window"
        )
    return values


def medsam2_ct_window(values: np.ndarray) -> IntensityWindow:
    """MedSAM2's CT window as its scripts apply it: clip to :data:`MEDSAM2_CT_WINDOW`, then min-max.

    The min-max of the clipped volume maps its minimum to 0 and maximum to 1, so the window is
    [max(-150, min), min(250, max)] of ``values`` (the whole volume, or a sample of a large one);
    a volume entirely above 250 (or below -150) HU gets a zero-width window at that end.

    Raises:
        WindowError: no finite value.
    """
    values = _finite(values)
    low, high = MEDSAM2_CT_WINDOW
    lo = min(max(low, float(values.min())), high)
    hi = max(min(high, float(values.max())), lo)
    return IntensityWindow(lo, hi)


def medsam2_percentile_window(values: np.ndarray) -> IntensityWindow:
    """MedSAM2's window for MR and other modalities: the 0.5th and 99.5th percentiles of the values
    above 0 (of all finite values when none is above 0).

    Clipping to these and then min-max scaling is this window: the 0.5th percentile is at or above
    the volume's minimum (0 or below for a volume with background) and the 99.5th at or below its
    maximum. Voxels at 0, which the authors set back to 0, map to 0 here too.

    Raises:
        WindowError: no finite value.
    """
    values = _finite(values)
    positive = values[values > 0]
    return robust_window(positive if positive.size else values, MEDSAM2_PERCENTILES)


def model_window(model: Any, geometry: Any, sample: Sample) -> WindowChoice | None:
    """The window the authors of ``model`` use for this data, or None when they fix none.

    Args:
        model: the model in use (a ``Sam2Model``; anything without a config gives None).
        geometry: the medical geometry of a NIfTI/NRRD/DICOM input (its modality decides CT), or None
            (then CT is told by the values).
        sample: returns values of the whole dataset (``ImageSource.sample_values``); called once,
            only for a model with a convention.
    """
    name = window_convention(model, geometry)
    if name is None:
        return None
    values = np.asarray(sample())
    is_ct, why = modality_reason(geometry, values)
    if name == "the demo model":
        if is_ct:  # CT by its values keeps robust percentiles, as a medical volume keeps its preset
            return None
        window = foreground_window(values)
        text = (
            f"the demo model's window, 0.5 % of the values to the {FOREGROUND_PERCENTILE:g}th percentile "
            f"of those above Otsu's threshold: {_span(window)} ({why})"
        )
        return WindowChoice(window, "demo_foreground", text)
    if is_ct:
        window = medsam2_ct_window(values)
        return WindowChoice(window, "medsam2_ct", f"{name}'s CT window {_span(window)} HU ({why})")
    window = medsam2_percentile_window(values)
    lo, hi = MEDSAM2_PERCENTILES
    text = f"{name}'s window, {lo:g}-{hi:g} % of the values above 0: {_span(window)} ({why})"
    return WindowChoice(window, "medsam2_percentiles", text)


def choose_window(window: Any, *, model: Any, geometry: Any, sample: Sample) -> WindowChoice:
    """The window of a run: asked, else the model's convention, else the medical preset, else auto.

    Args:
        window: what the caller asked for: None (choose), or anything
            :func:`.intensity.resolve_window` takes ("auto", (low, high), a CT preset name, ...).
        model, geometry, sample: as in :func:`model_window`.

    Raises:
        WindowError: an unusable window, or data without finite values.
    """
    if window is not None:
        resolved = resolve_window(window, sample)
        named = f" ({window})" if isinstance(window, str) else ""
        return WindowChoice(resolved, "asked", f"as asked{named}: {_span(resolved)}")
    choice = model_window(model, geometry, sample)
    if choice is not None:
        return choice
    preset = getattr(geometry, "preset", "auto") if geometry is not None else "auto"
    if preset != "auto":
        resolved = resolve_window(preset, sample)
        why = modality_reason(geometry)[1]
        return WindowChoice(resolved, "preset", f"{preset}: {_span(resolved)} ({why})")
    resolved = robust_window(sample())
    return WindowChoice(resolved, "auto", f"robust percentiles (0.5-99.5 %): {_span(resolved)}")
