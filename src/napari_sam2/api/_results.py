"""What the scripting API returns: labels with the record of how they were made, and cancellation."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..engine.provenance import ProvenanceRecord, python_script, read_labels, write_labels

__all__ = ["Cancel", "Cancelled", "Progress", "SegmentationResult", "finish"]

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class Cancelled(RuntimeError):
    """``cancel()`` returned True; ``labels`` holds what was finished (whole planes only), or None
    when the run streamed into a ``.zarr`` ``out`` (its unfinished folder is removed)."""

    def __init__(self, message: str, labels: Any = None) -> None:
        super().__init__(message)
        self.labels = labels


@dataclass
class SegmentationResult:
    """Labels and the record of how they were made.

    Attributes:
        labels: integer labels shaped like the image's frames + (H, W), 0 = background (numpy,
            or zarr when written to a ``.zarr`` ``out``).
        record: the :class:`~napari_sam2.engine.provenance.ProvenanceRecord`.
        path: where the labels were saved, if they were.
        geometry: the :class:`~napari_sam2.engine.medical.MedicalGeometry` of a NIfTI, NRRD or
            DICOM input (spacing, affine, ...), which ``.nii.gz``/``.nrrd`` outputs are written in.
        axes_guessed: None when the image's t/z axes were given or read from its metadata; else
            a sentence saying which axes were guessed from the shape (pass ``axes=`` to be sure).
            The record's ``image["axes_guessed"]`` holds the same.
        messages: what the user should know, one line each, e.g. "object 2 on frame 5: the
            model found no object at the click; try a box, more clicks or an official model"
            (nothing was written for that object there); empty when all went as asked.
    """

    labels: np.ndarray | zarr.Array
    record: ProvenanceRecord
    path: Path | None = None
    geometry: Any = None
    messages: list[str] = field(default_factory=list)

    @property
    def axes_guessed(self) -> str | None:
        return self.record.image.get("axes_guessed")

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the labels with their provenance to TIFF (``.tif``) or zarr (``.zarr``), or for a
        medical input to NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``) with the input's affine
        (provenance in ``<path>.sam2.json``)."""
        self.path = write_labels(path, self.labels, self.record, overwrite=overwrite, geometry=self.geometry)
        return self.path

    def script(self) -> str:
        """A runnable Python script that makes these labels again (``python_script(record)``)."""
        return python_script(self.record)


def finish(
    target, layer, record, out, geometry=None, force: bool = False, messages: list[str] | None = None
) -> SegmentationResult:
    if layer is not None and callable(getattr(layer, "refresh", None)):
        layer.refresh()
    result = SegmentationResult(target, record, geometry=geometry, messages=list(messages or []))
    if out is not None:
        result.save(out, overwrite=force)
        if isinstance(target, zarr.Array):
            result.labels = read_labels(out)
    return result
