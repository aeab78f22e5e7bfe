"""DICOM series (pydicom): a folder or a list of single-frame files -> one volume with its geometry.

Headers are read first (no pixels). Files are grouped by SeriesInstanceUID; a folder with several
series is refused with the list of them. Slices are sorted by the position of ImagePositionPatient
along the slice normal (row direction x column direction), not by file name or InstanceNumber, and
must be evenly spaced. Pixels are read slice by slice on demand and rescaled (RescaleSlope,
RescaleIntercept) into the modality's units: Hounsfield units for CT.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._medical_files import require
from ._medical_geometry import MedicalError

_SPACING_TOLERANCE = 0.01  # relative spread of slice gaps allowed (1 %)


@dataclass(frozen=True)
class _Slice:
    path: Path
    position: float
    slope: float
    intercept: float


def looks_like_dicom(path: Path) -> bool:
    """The DICOM preamble's "DICM" marker at byte 128 (files without a preamble are not recognised)."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder`` (by their "DICM" marker), sorted by name."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and looks_like_dicom(p)
    )


class DicomVolume:
    """A sorted, single-series stack as a lazy array in (column, row, slice) order, in modality units.

    Indexing takes ints and slices; only the slices asked for are read.
    """

    def __init__(self, slices: Sequence[_Slice], rows: int, cols: int, dtype: np.dtype) -> None:
        self.slices, self.dtype = list(slices), np.dtype(dtype)
        self.shape = (cols, rows, len(self.slices))

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (3 - len(key))
        kc, kr, ks = key
        picked = [self.slices[ks]] if isinstance(ks, (int, np.integer)) else self.slices[ks]
        planes = [self._plane(s)[kr, kc] for s in picked]  # (rows, cols) indexing -> transpose below
        if isinstance(ks, (int, np.integer)):
            return np.asarray(planes[0]).T
        n_r = len(range(*kr.indices(self.shape[1]))) if isinstance(kr, slice) else None
        n_c = len(range(*kc.indices(self.shape[0]))) if isinstance(kc, slice) else None
        shape = (*(n for n in (n_c, n_r) if n is not None), len(planes))
        if not planes:
            return np.zeros(shape, self.dtype)
        return np.stack([np.asarray(p).T for p in planes], axis=-1).reshape(shape)

    def _plane(self, s: _Slice) -> np.ndarray:
        pydicom = require("pydicom", "pydicom", "reading DICOM")
        try:
            ds = pydicom.dcmread(str(s.path))
            pixels = ds.pixel_array
        except Exception as err:  # pydicom raises many types for broken or compressed pixel data
            raise MedicalError(
                f"could not read the pixels of {s.path.name}: {err}; compressed transfer syntaxes need "
                "pylibjpeg or gdcm (pip install pylibjpeg pylibjpeg-libjpeg)"
            ) from err
        if pixels.ndim != 2:
            raise MedicalError(
                f"{s.path.name} holds pixels of shape {pixels.shape}; one grey plane per file is read"
            )
        out = pixels.astype(np.float64) * s.slope + s.intercept
        return out.astype(self.dtype) if self.dtype.kind == "f" else np.rint(out).astype(self.dtype)


def read_series(
    files: Path | Sequence[str | os.PathLike], series: str | None = None
) -> tuple[DicomVolume, np.ndarray, dict[str, Any]]:
    """-> (lazy (column, row, slice) array, 4 x 4 voxel -> RAS affine, info: modality, series_uid, name)."""
    pydicom = require("pydicom", "pydicom", "reading DICOM")
    if isinstance(files, Path):
        name = files.name
        paths = dicom_files(files)
        if not paths:
            raise MedicalError(f"{files} holds no DICOM files (none with the 'DICM' marker)")
    else:
        paths = [Path(p) for p in files]
        name = f"{len(paths)} DICOM files"
    headers = []
    for p in paths:
        try:
            headers.append((p, pydicom.dcmread(str(p), stop_before_pixels=True)))
        except (OSError, pydicom.errors.InvalidDicomError, ValueError, EOFError) as err:
            raise MedicalError(f"could not read {p.name} as DICOM: {err}") from err
    groups: dict[str, list] = {}
    for p, ds in headers:
        groups.setdefault(str(getattr(ds, "SeriesInstanceUID", "?")), []).append((p, ds))
    if series is not None:
        if series not in groups:
            raise MedicalError(f"series {series!r} is not in {name}; it holds {', '.join(groups)}")
        groups = {series: groups[series]}
    if len(groups) > 1:
        listing = "; ".join(
            f"{uid} ({getattr(g[0][1], 'Modality', '?')}, {len(g)} files, "
            f"{str(getattr(g[0][1], 'SeriesDescription', '')) or 'no description'!r})"
            for uid, g in groups.items()
        )
        raise MedicalError(
            f"{name} mixes {len(groups)} DICOM series: {listing}; pick one with series='UID' "
            "(read_medical/open_image), or give that series' files as a list, or put them in a folder of their own"
        )
    uid, members = next(iter(groups.items()))
    return _stack(members, name, uid)


def _stack(members: list, name: str, uid: str) -> tuple[DicomVolume, np.ndarray, dict[str, Any]]:
    first = members[0][1]
    for p, ds in members:
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise MedicalError(
                f"{p.name} is a multi-frame (enhanced) DICOM; only single-frame series are read"
            )
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if getattr(ds, tag, None) is None:
                raise MedicalError(f"{p.name} has no {tag}; a DICOM volume needs the slice geometry")
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]  # along a row (column index grows), along a column (row index grows)
    normal = np.cross(row_dir, col_dir)
    shape = (int(first.Rows), int(first.Columns))
    slices = []
    for p, ds in members:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), iop, atol=1e-4):
            raise MedicalError(
                f"{p.name} is tilted differently from {members[0][0].name}; the series is not one stack"
            )
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise MedicalError(
                f"{p.name} is {ds.Rows} x {ds.Columns} but the series' slices are {shape[0]} x {shape[1]}"
            )
        pos = float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal))
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        slices.append(_Slice(p, pos, slope, float(getattr(ds, "RescaleIntercept", 0) or 0)))
    slices.sort(key=lambda s: s.position)
    gaps = np.diff([s.position for s in slices])
    if len(slices) > 1:
        if np.any(gaps < 1e-6):
            dup = next(i for i, g in enumerate(gaps) if g < 1e-6)
            raise MedicalError(
                f"{slices[dup].path.name} and {slices[dup + 1].path.name} lie at the same position; "
                "the folder holds one slice twice or two acquisitions of one series"
            )
        if np.ptp(gaps) > _SPACING_TOLERANCE * np.median(gaps):
            raise MedicalError(
                f"the slices of {name} are unevenly spaced (gaps {gaps.min():.3g} to {gaps.max():.3g} mm): "
                "slices are missing or the series is not one volume"
            )
    dz = float(np.median(gaps)) if len(slices) > 1 else float(getattr(first, "SliceThickness", 1) or 1)
    sr, sc = (float(v) for v in first.PixelSpacing)  # between rows, between columns (mm)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * sc  # voxel axis 0: column index
    lps[:3, 1] = col_dir * sr  # voxel axis 1: row index
    lps[:3, 2] = normal * dz  # voxel axis 2: slice
    lowest = min(
        members, key=lambda m: float(np.dot(np.asarray(m[1].ImagePositionPatient, dtype=float), normal))
    )
    lps[:3, 3] = np.asarray(lowest[1].ImagePositionPatient, dtype=float)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    volume = DicomVolume(slices, shape[0], shape[1], _dtype(first, slices))
    info = {"modality": str(getattr(first, "Modality", "") or "") or None, "series_uid": uid, "name": name}
    return volume, affine, info


def _dtype(ds: Any, slices: Sequence[_Slice]) -> np.dtype:
    """int16 when every rescaled value fits, int32 for wider integers, float32 for fractional scales."""
    if any(s.slope != int(s.slope) or s.intercept != int(s.intercept) for s in slices):
        return np.dtype(np.float32)
    bits = int(getattr(ds, "BitsStored", 16) or 16)
    signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    ends = [v * s.slope + s.intercept for s in slices for v in (lo, hi)]
    info = np.iinfo(np.int16)
    return np.dtype(np.int16 if info.min <= min(ends) and max(ends) <= info.max else np.int32)
