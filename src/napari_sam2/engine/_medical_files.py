"""NIfTI (nibabel) and NRRD (pynrrd) files: read with their geometry, write labels alike.

NIfTI is read lazily through nibabel's array proxy: a plane of an uncompressed ``.nii`` reads only
its bytes; a ``.nii.gz`` decompresses up to that plane (gzip has no random access). NRRD is read whole
by pynrrd when opened (its gzip and detached-header variants give no cheaper way).
"""

from __future__ import annotations

import gzip
import importlib
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ._medical_geometry import MedicalError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
_EXTRA = "pip install 'napari-sam2[medical]'"
# NRRD spaces -> the sign flips that take their coordinates to RAS
_NRRD_SPACES = {
    "right-anterior-superior": (1, 1, 1),
    "ras": (1, 1, 1),
    "left-posterior-superior": (-1, -1, 1),
    "lps": (-1, -1, 1),
    "left-anterior-superior": (-1, 1, 1),
    "las": (-1, 1, 1),
    "scanner-xyz": (1, 1, 1),
}
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, struct.error, KeyError, IndexError, TypeError)


def require(module: str, package: str, what: str) -> Any:
    """Import an optional library, or fail with one line that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MedicalError(
            f"{what} needs the optional package {package}, which is not installed; install it with: {_EXTRA}"
        ) from None


def suffix_of(path: str | os.PathLike) -> str | None:
    """ ".nii", ".nii.gz", ".nrrd" or ".nhdr" when ``path`` names one (any case), else None."""
    name = Path(path).name.lower()
    for s in (".nii.gz", ".nii", ".nrrd", ".nhdr"):
        if name.endswith(s):
            return s
    return None


# ---------------------------------------------------------------------------------------------- NIfTI
class _ScaledProxy:
    """nibabel's array proxy with a fixed dtype: the file's type, or float32 when it has a scale."""

    def __init__(self, proxy: Any, dtype: np.dtype, path: Path) -> None:
        self.proxy, self.dtype, self.path = proxy, dtype, path
        self.shape = tuple(int(s) for s in proxy.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            out = np.asarray(self.proxy[key])
        except _READ_ERRORS as err:
            raise MedicalError(f"could not read the voxels of {self.path.name}: {_why(err)}") from err
        return out.astype(self.dtype, copy=False)


class _Picked:
    """One volume of a 4D array-like: ``raw[..., index]`` read lazily."""

    def __init__(self, raw: Any, index: int) -> None:
        self.raw, self.index = raw, index
        self.shape, self.dtype = tuple(raw.shape[:3]), raw.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (4 - len(key)) + key[i + 1 :]
        return self.raw[(*key, *(slice(None),) * (3 - len(key)), self.index)]


def _why(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, (EOFError, zlib.error)) or "ended before" in text or "truncated" in text.lower():
        return f"the file is truncated or corrupt ({text}); copy or download it again"
    return text


def _check_gzip_size(path: Path, expected: int) -> None:
    """A truncated ``.gz`` fails here, before any plane is read: gzip's last 4 bytes hold the
    uncompressed size (mod 2**32). When they disagree (also for multi-member files) the stream is
    read to its end, which tells a truncated file from an unusual but complete one."""
    size = path.stat().st_size
    if size >= 18:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            if struct.unpack("<I", f.read(4))[0] == expected % 2**32:
                return
    try:
        with gzip.open(path, "rb") as f:
            total = 0
            while chunk := f.read(1 << 22):
                total += len(chunk)
    except _READ_ERRORS as err:
        raise MedicalError(f"could not read {path.name}: {_why(err)}") from err
    if total < expected:
        raise MedicalError(
            f"could not read {path.name}: the file is truncated (it holds {total} bytes of the "
            f"{expected} its header announces); copy or download it again"
        )


def read_nifti(path: Path) -> tuple[Any, np.ndarray, Any]:
    """-> (array-like in the file's axis order, 4 x 4 voxel -> RAS affine, the header)."""
    nib = require("nibabel", "nibabel", f"reading {path.name} (NIfTI)")
    try:
        img = nib.load(str(path))
    except (*_READ_ERRORS, nib.filebasedimages.ImageFileError) as err:
        raise MedicalError(f"could not read {path.name} as NIfTI: {_why(err)}") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise MedicalError(f"{path.name} is a {type(img).__name__}, not a NIfTI-1/2 image")
    hdr = img.header
    disk = np.dtype(hdr.get_data_dtype())
    if disk.kind not in "uif" or disk.fields is not None:
        raise MedicalError(
            f"{path.name} holds {disk} voxels (RGB or complex); only grey-value volumes are read"
        )
    if path.name.lower().endswith(".gz"):
        _check_gzip_size(path, int(hdr.get_data_offset()) + int(np.prod(img.shape)) * disk.itemsize)
    slope, inter = img.dataobj.slope, img.dataobj.inter
    scaled = not (slope in (1, None) or np.isnan(slope)) or not (inter in (0, None) or np.isnan(inter))
    dtype = np.dtype(np.float32) if scaled or disk.kind == "f" else disk
    return _ScaledProxy(img.dataobj, dtype, path), np.asarray(img.affine, dtype=float), hdr.copy()


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, header: Any = None) -> None:
    """Labels in the file's axis order -> NIfTI with ``affine`` (and the input's header fields)."""
    nib = require("nibabel", "nibabel", f"writing {path.name} (NIfTI)")
    hdr = header.copy() if isinstance(header, nib.Nifti1Header) else None
    img = nib.Nifti1Image(data, affine, header=hdr)
    img.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0, int(data.max(initial=0))
    if hdr is None:
        img.header.set_xyzt_units("mm")
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
    img.header["descrip"] = b"napari-sam2 labels"
    nib.save(img, str(path))


# ---------------------------------------------------------------------------------------------- NRRD
def read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """-> (array in the file's axis order, spatial axes first; 4 x 4 voxel -> RAS affine; header)."""
    nrrd = require("nrrd", "pynrrd", f"reading {path.name} (NRRD)")
    try:
        data, header = nrrd.read(str(path))
    except (*_READ_ERRORS, nrrd.NRRDError) as err:
        raise MedicalError(f"could not read {path.name} as NRRD: {_why(err)}") from err
    if np.dtype(data.dtype).kind not in "uif":
        raise MedicalError(f"{path.name} holds {data.dtype} voxels; only grey-value volumes are read")
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space not in _NRRD_SPACES:
        raise MedicalError(
            f"{path.name} uses the NRRD space {header.get('space')!r}; readable spaces: "
            "right-anterior-superior, left-posterior-superior, left-anterior-superior, scanner-xyz"
        )
    directions = header.get("space directions")
    if directions is None:  # no world geometry: spacings (default 1) along LPS
        spacings = np.nan_to_num(np.asarray(header.get("spacings", [1.0] * data.ndim), dtype=float), nan=1.0)
        directions = np.diag(spacings)
    directions = np.asarray(directions, dtype=float)  # (axes, 3), NaN rows for non-spatial axes
    spatial = [i for i in range(data.ndim) if np.all(np.isfinite(directions[i]))]
    other = [i for i in range(data.ndim) if i not in spatial]
    if len(spatial) != 3 or len(other) > 1:
        raise MedicalError(
            f"{path.name} has {len(spatial)} spatial and {len(other)} other axes (kinds "
            f"{header.get('kinds')}); a 3D volume, or 3D plus one time/list axis, is read"
        )
    data = np.moveaxis(data, spatial + other, range(data.ndim)) if other and other[0] != 3 else data
    flips = np.asarray(_NRRD_SPACES[space], dtype=float)[:, None]
    affine = np.eye(4)
    affine[:3, :3] = flips * directions[spatial].T  # columns: one per voxel axis, in RAS
    origin = np.nan_to_num(np.asarray(header.get("space origin", [0.0, 0.0, 0.0]), dtype=float))
    affine[:3, 3] = flips[:, 0] * origin
    return data, affine, dict(header)


def write_nrrd(path: Path, data: np.ndarray, affine: np.ndarray, header: dict | None = None) -> None:
    """Labels in the file's axis order -> gzip NRRD with ``affine`` (LPS space unless the input had
    another), keeping the input header's other fields."""
    nrrd = require("nrrd", "pynrrd", f"writing {path.name} (NRRD)")
    space = str((header or {}).get("space", "left-posterior-superior")).lower()
    space = space if space in _NRRD_SPACES else "left-posterior-superior"
    flips = np.asarray(_NRRD_SPACES[space], dtype=float)
    out = {
        k: v
        for k, v in (header or {}).items()
        if k not in ("type", "encoding", "endian", "sizes", "data file")
    }
    out["space"] = space
    dirs = (flips[:, None] * np.asarray(affine, dtype=float)[:3, :3]).T
    if data.ndim == 4:
        dirs = np.vstack([dirs, np.full((1, 3), np.nan)])
        kinds = ["domain"] * 3 + ["list"]
    else:
        kinds = ["domain"] * 3
    out["space directions"] = dirs
    out["space origin"] = flips * np.asarray(affine, dtype=float)[:3, 3]
    out["kinds"] = kinds
    out["encoding"] = "gzip"
    out.pop("dimension", None)
    out.pop("space dimension", None)
    nrrd.write(str(path), data, out)
