"""Medical volumes: NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``) and DICOM series.

:func:`read_medical` gives the volume in the engine's (z, y, x) order (z towards the head, rows towards
the back, columns towards the patient's left; see :mod:`._medical_geometry`) with a
:class:`MedicalGeometry`: voxel spacing in mm, the file's affine, orientation, origin, modality and the
default intensity preset. :func:`write_labels_like` writes engine-ordered labels back in the input's own
axis order with its affine (NIfTI) or header (NRRD); DICOM inputs are written as NIfTI (or NRRD).

Libraries: nibabel (NIfTI), pynrrd (NRRD) and pydicom (DICOM), the optional extra
``napari-sam2[medical]``. Each is the reference reader of its format, small and pure Python;
SimpleITK reads all three but is a 50 MB binary that resamples and reorients on its own terms.

Intensity: CT (by the DICOM Modality, or values reaching air at about -1000 HU) defaults to the
``ct:soft_tissue`` preset (W 400, L 40); anything else (MR) to robust percentiles ("auto").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._medical_dicom import dicom_files, read_series
from ._medical_files import (
    NIFTI_SUFFIXES,
    NRRD_SUFFIXES,
    read_nifti,
    read_nrrd,
    suffix_of,
    write_nifti,
    write_nrrd,
)
from ._medical_geometry import MedicalError, MedicalGeometry, OrientedArray, reorient

__all__ = [
    "CT_DEFAULT_PRESET",
    "MEDICAL_SUFFIXES",
    "MedicalError",
    "MedicalGeometry",
    "is_medical",
    "looks_like_ct",
    "open_medical",
    "read_labels_medical",
    "read_medical",
    "write_labels_like",
]

MEDICAL_SUFFIXES = (*NIFTI_SUFFIXES, *NRRD_SUFFIXES)
LABEL_SUFFIXES = (".nii", ".nii.gz", ".nrrd")
CT_DEFAULT_PRESET = "ct:soft_tissue"
_CT_AIR_HU = -500.0  # CT holds air (about -1000 HU) around the body; MR values are >= about 0
_CT_MAX_HU = 5000.0


def is_medical(path: str | os.PathLike) -> bool:
    """A NIfTI/NRRD file name, or a folder that holds DICOM files."""
    p = Path(path)
    if suffix_of(p) is not None:
        return True
    return p.is_dir() and bool(dicom_files(p))


def open_medical(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    volume: int | None = None,
    series: str | None = None,
) -> tuple[OrientedArray, MedicalGeometry]:
    """A lazy engine-ordered view ((z, y, x), or (t, z, y, x) for a 4D file) and its geometry.

    Args:
        path: a NIfTI or NRRD file, a folder with one DICOM series, or a list of DICOM files.
        volume: pick this volume of a 4D file (default: keep all as a leading t axis).
        series: the SeriesInstanceUID to read from a folder that holds several.

    Raises:
        MedicalError: an unreadable, truncated or unsupported file, a folder mixing series (the
            message lists them), a volume out of range, or a missing optional library.
    """
    if isinstance(path, (str, os.PathLike)):
        p = Path(path).expanduser()
        if not p.exists():
            raise MedicalError(f"{p} does not exist; check the path")
        kind = suffix_of(p)
        if p.is_dir():
            raw, affine, info = read_series(p, series)
            fmt, header, name = "dicom", None, p.name
        elif kind in NIFTI_SUFFIXES:
            raw, affine, header = read_nifti(p)
            fmt, info, name = "nifti", {}, p.name
        elif kind in NRRD_SUFFIXES:
            raw, affine, header = read_nrrd(p)
            fmt, info, name = "nrrd", {}, p.name
        else:
            raise MedicalError(
                f"{p.name}: not a NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) file or DICOM folder"
            )
        where = str(p.resolve())
    else:
        raw, affine, info = read_series(list(path), series)
        fmt, header, name = "dicom", None, info["name"]
        where = str(Path(next(iter(path))).resolve().parent)
    shape = tuple(int(s) for s in raw.shape)
    if len(shape) == 4 and shape[3] == 1:
        volume = 0 if volume is None else volume
    if len(shape) == 4 and volume is not None:
        if not 0 <= int(volume) < shape[3]:
            raise MedicalError(
                f"volume={volume} is out of range: {name} holds {shape[3]} volumes (0..{shape[3] - 1})"
            )
        from ._medical_files import _Picked

        raw, shape = _Picked(raw, int(volume)), shape[:3]
    elif volume is not None and len(shape) == 3:
        raise MedicalError(f"volume={volume} was given but {name} is a 3D volume; leave volume=None")
    if len(shape) not in (3, 4):
        raise MedicalError(
            f"{name} has {len(shape)} dimensions {shape}; a 3D volume or a 4D series of volumes is read"
        )
    perm, flip = reorient(affine, shape)
    view = OrientedArray(raw, perm, flip)
    modality, source = _modality(info.get("modality"), view)
    geometry = MedicalGeometry(
        format=fmt,
        path=where,
        file_shape=shape,
        perm=perm,
        flip=flip,
        affine=affine,
        modality=modality,
        modality_from=source,
        preset=CT_DEFAULT_PRESET if modality == "CT" else "auto",
        volume=None if volume is None else int(volume),
        series_uid=info.get("series_uid"),
        header=header,
    )
    return view, geometry


def read_medical(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    volume: int | None = None,
    series: str | None = None,
    lazy: bool = False,
) -> tuple[Any, MedicalGeometry]:
    """Read a medical volume in (z, y, x) order, with its geometry.

    Args:
        path, volume, series: as in :func:`open_medical`.
        lazy: return the lazy view (indexable, read on demand) instead of a numpy array.

    Returns:
        (volume, geometry): volume is (z, y, x) (or (t, z, y, x) for a 4D file without ``volume``)
        in the file's units (HU for CT; float32 when the file scales its values), z towards the
        head, rows towards the back, columns towards the patient's left; ``geometry.spacing`` is
        the (z, y, x) voxel size in mm and ``geometry.engine_affine`` maps (z, y, x) indices to RAS mm.
    """
    view, geometry = open_medical(path, volume=volume, series=series)
    return (view if lazy else np.asarray(view)), geometry


def looks_like_ct(values: np.ndarray) -> bool:
    """True for values in Hounsfield units: the 1st percentile of the finite values at air
    (<= -500 HU) and none above 5000 HU. MR, ultrasound and microscopy counts are >= about 0.

    Args:
        values: any-shape real array, e.g. a few planes or ``ImageSource.sample_values()``.
    """
    values = np.asarray(values)
    if values.dtype.kind not in "iuf":
        return False
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    return bool(values.size) and np.percentile(values, 1) <= _CT_AIR_HU and values.max() <= _CT_MAX_HU


def _modality(header: str | None, view: OrientedArray) -> tuple[str | None, str | None]:
    if header:
        return header, "header"
    if view.dtype.kind not in "if":
        return None, None
    n = view.shape[-3]
    planes = [view[(*(0,) * (view.ndim - 3), z)] for z in sorted({0, n // 2, n - 1})]
    values = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in planes])
    return ("CT", "values") if looks_like_ct(values) else (None, None)


def write_labels_like(
    path: str | os.PathLike, labels: Any, geometry: MedicalGeometry, *, overwrite: bool = False
) -> Path:
    """Write engine-ordered labels ((z, y, x) or (t, z, y, x)) as NIfTI or NRRD in the input's geometry.

    A NIfTI input gives a NIfTI with its affine and header (data type, scaling and description set
    for labels); an NRRD input an NRRD with its space, directions and origin; a DICOM series a
    NIfTI (or NRRD) with its affine. Labels are stored as uint8, uint16 or int32, the smallest that
    holds their ids. The file appears under its name only when complete.

    Raises:
        MedicalError: an output that is not .nii/.nii.gz/.nrrd, labels of another shape, or an
            existing ``path`` without ``overwrite``.
    """
    path = Path(path)
    kind = suffix_of(path)
    if kind not in LABEL_SUFFIXES:
        raise MedicalError(f"{path.name}: medical labels are written as .nii, .nii.gz or .nrrd")
    if path.exists() and not overwrite:
        raise MedicalError(f"{path} already exists; choose another output or allow overwriting")
    data = geometry.to_file_order(np.asarray(labels))
    top = int(data.max(initial=0))
    if int(data.min(initial=0)) < 0:
        raise MedicalError("labels must be >= 0 (0 = background)")
    data = data.astype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.int32)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{kind}")
    try:
        if kind == ".nrrd":
            header = geometry.header if geometry.format == "nrrd" else None
            write_nrrd(tmp, data, geometry.affine, header)
        else:
            header = geometry.header if geometry.format == "nifti" else None
            write_nifti(tmp, data, geometry.affine, header)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_labels_medical(path: str | os.PathLike) -> np.ndarray:
    """Labels written by :func:`write_labels_like` (or any NIfTI/NRRD), in engine order."""
    view, _ = open_medical(path)
    return np.asarray(view)
