"""Geometry of medical volumes: from a file's voxel axes to the engine's (z, y, x), and back.

A file's voxel-to-world affine (RAS+ millimetres, as NIfTI stores it) decides how its axes are
reordered and flipped so that the engine always sees the same anatomical layout:

* z (axis 0) runs towards the patient's head (S), one slice per plane;
* y (axis 1, rows) runs towards the back (P), so an axial plane shows anterior at the top;
* x (axis 2, columns) runs towards the patient's left (L), the radiological convention (patient's
  right on the left of the screen).

This is the LPS layout of DICOM. Each engine axis takes the file axis closest to its world axis; a
tilted (oblique) acquisition keeps its tilt in the affine, it is not resampled. The reordering is a
transpose plus flips, so labels in engine order go back to the file's own layout exactly
(:meth:`MedicalGeometry.to_file_order`). A 4th file axis (time, or several volumes) becomes a leading
``t`` axis: ``(t, z, y, x)``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import SourceError

__all__ = ["MedicalError", "MedicalGeometry", "OrientedArray", "axis_codes", "reorient"]

# engine axis -> (RAS world axis, sign): z -> +S, y -> -A (= P), x -> -R (= L)
_TARGET = ((2, 1.0), (1, -1.0), (0, -1.0))
_CODES = (("L", "R"), ("P", "A"), ("I", "S"))  # (negative, positive) per RAS world axis


class MedicalError(SourceError):
    """A medical volume that cannot be read or written as asked; the message says what to do."""


def axis_codes(affine: np.ndarray) -> str:
    """The world direction each voxel axis runs towards, e.g. "RAS" or "LPS" (closest axis)."""
    a = np.asarray(affine, dtype=float)[:3, :3]
    world = _closest_world_axes(a)
    return "".join(_CODES[w][int(a[w, r] > 0)] for r, w in enumerate(world))


def _closest_world_axes(a: np.ndarray) -> list[int]:
    """For each voxel axis (column of ``a``), the RAS world axis it is closest to; a permutation."""
    cols = a / np.maximum(np.linalg.norm(a, axis=0, keepdims=True), 1e-12)
    weight = np.abs(cols).copy()
    out = [-1] * a.shape[1]
    for _ in range(a.shape[1]):  # greedy: the strongest remaining (world, voxel) pair first
        w, r = np.unravel_index(int(np.argmax(weight)), weight.shape)
        out[int(r)] = int(w)
        weight[w, :] = -1
        weight[:, r] = -1
    return out


def reorient(affine: np.ndarray, file_shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """-> (perm, flip): engine axis ``e`` is file axis ``perm[e]``, reversed where ``flip[e]``.

    ``affine`` maps the first three file axes to RAS millimetres; a 4th file axis leads as ``t``.
    """
    a = np.asarray(affine, dtype=float)[:3, :3]
    if not np.all(np.isfinite(a)) or abs(np.linalg.det(a)) < 1e-12:
        raise MedicalError(
            f"the voxel-to-world matrix {a.tolist()} is singular; the file's geometry is broken"
        )
    world = _closest_world_axes(a)
    perm, flip = [], []
    for w, sign in _TARGET:
        r = world.index(w)
        perm.append(r)
        flip.append(bool(np.sign(a[w, r]) != sign))
    if len(file_shape) == 4:
        return (3, *perm), (False, *flip)
    return tuple(perm), tuple(flip)


@dataclass(frozen=True)
class MedicalGeometry:
    """Where a medical volume's voxels are, and how it was read.

    Attributes:
        format: "nifti", "nrrd" or "dicom".
        path: the file or folder read.
        file_shape: the array's shape in the file's own axis order (3 or 4 axes).
        perm, flip: engine axis ``e`` is file axis ``perm[e]``, reversed where ``flip[e]``.
        affine: 4 x 4, file voxel index (first three axes) -> RAS+ millimetres.
        modality: "CT", "MR", or None when neither the header nor the values say.
        modality_from: "header" or "values" (how ``modality`` was decided).
        preset: the intensity window used by default: a CT preset ("ct:soft_tissue") or "auto"
            (robust percentiles, the engine's default).
        volume: the 4D volume picked (None: the file is 3D, or all volumes are kept as ``t``).
        series_uid: the DICOM SeriesInstanceUID (None for files).
        header: the file's header (nibabel header or NRRD dict) used to write labels alike; not
            part of comparisons or provenance.
    """

    format: str
    path: str
    file_shape: tuple[int, ...]
    perm: tuple[int, ...]
    flip: tuple[bool, ...]
    affine: np.ndarray
    modality: str | None = None
    modality_from: str | None = None
    preset: str = "auto"
    volume: int | None = None
    series_uid: str | None = None
    header: Any = field(default=None, compare=False, repr=False)

    @property
    def spatial(self) -> tuple[tuple[int, ...], tuple[bool, ...]]:
        """(perm, flip) of the three spatial engine axes (z, y, x)."""
        return self.perm[-3:], self.flip[-3:]

    @property
    def shape(self) -> tuple[int, ...]:
        """The engine's shape: (z, y, x) or (t, z, y, x)."""
        return tuple(self.file_shape[p] for p in self.perm)

    @property
    def engine_affine(self) -> np.ndarray:
        """4 x 4, engine index (z, y, x) -> RAS+ millimetres."""
        perm, flip = self.spatial
        a = np.asarray(self.affine, dtype=float)
        out = np.eye(4)
        origin = np.zeros(4)
        origin[3] = 1.0
        for e, (r, f) in enumerate(zip(perm, flip)):
            out[:3, e] = -a[:3, r] if f else a[:3, r]
            origin[r] = self.file_shape[r] - 1 if f else 0
        out[:3, 3] = (a @ origin)[:3]
        return out

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (z, y, x) in millimetres."""
        e = self.engine_affine
        return tuple(float(np.linalg.norm(e[:3, i])) for i in range(3))

    @property
    def origin(self) -> tuple[float, float, float]:
        """Centre of engine voxel (0, 0, 0) in (S, P, L) millimetres: napari's ``translate``."""
        x = self.engine_affine[:3, 3]
        return (float(x[2]), float(-x[1]), float(-x[0]))

    @property
    def orientation(self) -> str:
        """World direction of the engine's (z, y, x) axes, "SPL" unless the file is oblique."""
        return axis_codes(self.engine_affine)

    @property
    def file_orientation(self) -> str:
        return axis_codes(self.affine)

    def to_file_order(self, labels: np.ndarray) -> np.ndarray:
        """Engine-ordered ``labels`` ((z, y, x) or (t, z, y, x)) -> the file's own axis order."""
        labels = np.asarray(labels)
        if labels.shape != self.shape:
            raise MedicalError(f"labels of shape {labels.shape} do not fit the volume's {self.shape}")
        flipped = labels[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]
        return np.ascontiguousarray(np.transpose(flipped, np.argsort(self.perm)))

    def to_engine_order(self, data: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_file_order`."""
        return np.asarray(OrientedArray(np.asarray(data), self.perm, self.flip)[...])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for provenance and napari metadata (no header)."""
        return {
            "format": self.format,
            "spacing_mm": [round(s, 6) for s in self.spacing],
            "orientation": self.orientation,
            "file_orientation": self.file_orientation,
            "origin_mm": [round(o, 6) for o in self.origin],
            "affine_ras": np.round(np.asarray(self.affine, dtype=float), 6).tolist(),
            "engine_affine_ras": np.round(self.engine_affine, 6).tolist(),
            "file_shape": list(self.file_shape),
            "modality": self.modality,
            "modality_from": self.modality_from,
            "preset": self.preset,
            "volume": self.volume,
            "series_uid": self.series_uid,
        }


class OrientedArray:
    """A lazy view of a file's array in engine order: axes permuted and flipped, no copy until read.

    Indexing takes ints and slices (any step) in engine order and reads only that part of ``raw``
    (which must take ints and slices: a numpy array, a nibabel proxy, a DICOM series).
    """

    def __init__(self, raw: Any, perm: tuple[int, ...], flip: tuple[bool, ...], dtype: Any = None) -> None:
        self.raw, self.perm, self.flip = raw, tuple(perm), tuple(flip)
        self.shape = tuple(int(raw.shape[p]) for p in self.perm)
        self.dtype = np.dtype(dtype if dtype is not None else raw.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _expand(key, self.ndim)
        raw_key: list[Any] = [slice(None)] * self.ndim
        fix: list[Any] = [None] * self.ndim  # per raw axis: an index array into the read block
        for e, (k, r, f) in enumerate(zip(key, self.perm, self.flip)):
            n = self.shape[e]
            if isinstance(k, int):
                if not -n <= k < n:
                    raise IndexError(f"index {k} is out of range for axis {e} of size {n}")
                k %= n
                raw_key[r] = n - 1 - k if f else k
                continue
            idx = np.arange(n)[k]
            idx = n - 1 - idx if f else idx
            if idx.size == 0:
                raw_key[r] = slice(0, 0)
                continue
            lo, hi = int(idx.min()), int(idx.max())
            raw_key[r] = slice(lo, hi + 1)
            if not np.array_equal(idx, np.arange(lo, hi + 1)):
                fix[r] = idx - lo
        out = np.asarray(self.raw[tuple(raw_key)])
        kept = [r for r in range(self.ndim) if not isinstance(raw_key[r], int)]
        for pos, r in enumerate(kept):
            if fix[r] is not None:
                out = np.take(out, fix[r], axis=pos)
        order = [kept.index(r) for r, k in zip(self.perm, key) if not isinstance(k, int)]
        out = np.transpose(out, order)
        return out.astype(self.dtype, copy=False)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"OrientedArray(shape={self.shape}, dtype={self.dtype}, perm={self.perm}, flip={self.flip})"


def _expand(key: Any, ndim: int) -> tuple[int | slice, ...]:
    key = key if isinstance(key, tuple) else (key,)
    if sum(k is Ellipsis for k in key) > 1 or len(key) - (Ellipsis in key) > ndim:
        raise IndexError(f"too many indices for a {ndim}D volume: {key}")
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (ndim - len(key))
    return tuple(k if isinstance(k, slice) else operator.index(k) for k in key)
