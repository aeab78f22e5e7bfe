"""napari reader and writer for medical volumes: NIfTI, NRRD and DICOM folders in, labels out as NIfTI.

The reader gives one Image layer in the engine's (z, y, x) order (see
:mod:`napari_sam2.engine.medical`) with the physical voxel size as ``scale`` and the first voxel's
position as ``translate`` (millimetres, axes S, P, L), so anisotropic volumes look right in 3D. Its
contrast limits are the default intensity window (a CT preset for CT, robust percentiles otherwise),
which the widget uses as the model's window. ``metadata`` holds the geometry: ``napari_sam2_medical``
(JSON-able: spacing, orientation, affine, modality, preset) and ``napari_sam2_geometry`` (the object
the API and the writer use to write labels in the input's own geometry).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.intensity import resolve_window
from ..engine.medical import MEDICAL_SUFFIXES, MedicalGeometry, is_medical, open_medical, write_labels_like
from ..engine.window_choice import modality_reason

__all__ = ["get_reader", "read_medical_layers", "write_labels"]

PRESET_NAMES = {"auto": "robust percentiles (0.5-99.5 %)"}


def get_reader(path: str | list[str]):
    """napari's reader hook: a reader for a NIfTI/NRRD file, a DICOM folder or a list of DICOM
    files, else None (so napari asks the next plugin)."""
    if isinstance(path, (list, tuple)):
        from ..engine._medical_dicom import looks_like_dicom

        return read_medical_layers if path and all(looks_like_dicom(Path(p)) for p in path) else None
    lower = str(path).lower()
    if lower.endswith((*MEDICAL_SUFFIXES, ".dcm")) or (os.path.isdir(path) and is_medical(path)):
        return read_medical_layers
    return None


def describe_window(geometry: MedicalGeometry | None, window: tuple[float, float]) -> str:
    """One line for the widget: which intensity preset a medical layer got, and why."""
    if geometry is None:
        return f"contrast limits {window[0]:g}..{window[1]:g}"
    why = modality_reason(geometry)[1]
    name = PRESET_NAMES.get(geometry.preset, geometry.preset)
    return f"{name}: {window[0]:g}..{window[1]:g} ({why})"


def read_medical_layers(path: str | list[str]) -> list[tuple[Any, dict, str]]:
    """One Image layer (data, kwargs, "image") for a medical volume; one ``.dcm`` file opens its
    whole series from its folder."""
    if isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(".dcm") and os.path.isfile(path):
        import pydicom

        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)
        view, geometry = open_medical(Path(path).parent, series=uid)
    else:
        view, geometry = open_medical(path if isinstance(path, (str, os.PathLike)) else list(path))
    data = np.asarray(view)
    window = resolve_window(None if geometry.preset == "auto" else geometry.preset, lambda: data)
    lead = (1.0,) * (data.ndim - 3)
    name = Path(path if isinstance(path, (str, os.PathLike)) else path[0]).name
    for suffix in (*MEDICAL_SUFFIXES, ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    meta = geometry.to_dict()
    meta["window"] = list(window.as_tuple())
    meta["window_text"] = describe_window(geometry, window.as_tuple())
    kwargs = {
        "name": name,
        "scale": (*lead, *geometry.spacing),
        "translate": (*(0.0,) * len(lead), *geometry.origin),
        "contrast_limits": window.as_tuple(),
        "colormap": "gray",
        "metadata": {"napari_sam2_medical": meta, "napari_sam2_geometry": geometry},
    }
    return [(data, kwargs, "image")]


def _geometry_from_layer(data: Any, meta: dict) -> MedicalGeometry:
    """The input's geometry when the labels carry it, else one made from ``scale``/``translate``
    (engine axes (z, y, x) = S, P, L; written as NIfTI voxel axes x, y, z)."""
    geometry = (meta.get("metadata") or {}).get("napari_sam2_geometry")
    shape = tuple(int(s) for s in np.shape(data))
    if isinstance(geometry, MedicalGeometry) and geometry.shape == shape:
        return geometry
    if len(shape) != 3:
        raise ValueError(f"labels of shape {shape}: only 3D (z, y, x) labels are written as NIfTI")
    sz, sy, sx = (float(s) for s in np.asarray(meta.get("scale", (1, 1, 1)), dtype=float)[-3:])
    tz, ty, tx = (float(t) for t in np.asarray(meta.get("translate", (0, 0, 0)), dtype=float)[-3:])
    affine = np.array(  # file voxel (x, y, z) -> RAS: x -> L (= -R), y -> P (= -A), z -> S
        [[-sx, 0, 0, -tx], [0, -sy, 0, -ty], [0, 0, sz, tz], [0, 0, 0, 1]], dtype=float
    )
    return MedicalGeometry(
        format="nifti", path="", file_shape=shape[::-1], perm=(2, 1, 0), flip=(False,) * 3, affine=affine
    )


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """napari's writer hook for a Labels layer -> ``.nii.gz``/``.nii`` in the image's geometry."""
    geometry = _geometry_from_layer(data, meta)
    out = write_labels_like(path, np.asarray(data), geometry, overwrite=True)
    return [str(out)]
