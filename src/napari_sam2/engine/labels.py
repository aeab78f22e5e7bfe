"""Writing object masks into an integer labels volume without losing the user's work.

Labels are a numpy array or a ``zarr.Array`` (in memory or on disk) of an integer dtype, 0 meaning
background, shaped ``frame_shape + (H, W)``: ``(y, x)``, ``(z, y, x)``, ``(t, z, y, x)``... An index
over the frame axes (``()``, ``(z,)``, ``(t, z)``) selects one ``(H, W)`` plane. :class:`LabelWriter`
edits one plane at a time and only the part of it that can change: the box (row0, col0, row1, col1)
of the written masks and of the written objects' old voxels. It computes that region in memory,
writes back the box of the voxels that changed with a single assignment, and returns a
:class:`PlaneEdit` holding that box before and after, so a small object on a huge plane costs a
small edit and a small undo record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

__all__ = ["LabelError", "LabelWriter", "MaskPatch", "PlaneEdit", "create_labels", "seed_objects"]

LabelArray = np.ndarray | zarr.Array


class LabelError(ValueError):
    """Labels, ids, masks or an index that cannot be used; the message says what to change."""


@dataclass(frozen=True, eq=False)
class MaskPatch:
    """Mask logits over a window of a plane, so a small object on a huge plane stays small.

    Attributes:
        logits: (h, w) real logits, > 0 inside; may be (0, 0) for "the object is absent here".
        origin: plane (row, col) of ``logits[0, 0]``; the window may reach past the plane's border,
            the part outside is ignored.
    """

    logits: np.ndarray
    origin: tuple[int, int] = (0, 0)

    @classmethod
    def empty(cls) -> MaskPatch:
        """An object absent from the plane (its voxels there are cleared when written)."""
        return cls(np.zeros((0, 0), np.float32))

    def full(self, plane_shape: tuple[int, int], fill: float = -np.inf) -> np.ndarray:
        """The logits pasted into an (H, W) float32 array, ``fill`` outside the window."""
        out = np.full(plane_shape, fill, np.float32)
        _paste(out, self, plane_shape)
        return out


@dataclass(frozen=True, eq=False)
class PlaneEdit:
    """One edit of one plane, enough to undo it: the box of the voxels that changed.

    Attributes:
        index: the plane's index over the frame axes, e.g. ``(z,)``; ``()`` for 2D labels.
        before: the box before the edit, (h, w), labels dtype, a read-only copy.
        after: the box after the edit, (h, w), labels dtype, a read-only copy.
        changed: number of voxels that changed (0: nothing was written, the box is empty).
        origin: plane (row, col) of ``before[0, 0]``.
    """

    index: tuple[int, ...]
    before: np.ndarray
    after: np.ndarray
    changed: int
    origin: tuple[int, int] = (0, 0)

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(row0, col0, row1, col1) of the edited box in the plane (ends exclusive)."""
        (r0, c0), (h, w) = self.origin, self.after.shape
        return r0, c0, r0 + h, c0 + w

    @property
    def nbytes(self) -> int:
        """Memory the record holds (both boxes)."""
        return self.before.nbytes + self.after.nbytes

    def undo(self, writer: LabelWriter) -> PlaneEdit:
        """Restore ``before``; same as ``writer.revert(self)``."""
        return writer.revert(self)


class LabelWriter:
    """Writes per-plane object masks into ``labels``, one object per voxel.

    Args:
        labels: writable numpy ndarray or ``zarr.Array``, integer dtype (signed or unsigned), shape
            ``frame_shape + (H, W)`` with at least 2 dimensions; 0 is background.
        overwrite: False (default): a voxel that belongs to another object (a non-zero id that is not
            being written) is never changed. True: a written object takes such voxels where it wins.

    Raises:
        LabelError: not an array, a non-integer dtype, fewer than 2 dimensions, or read-only.
    """

    def __init__(self, labels: LabelArray, *, overwrite: bool = False) -> None:
        _check_labels(labels)
        if isinstance(labels, zarr.Array) and labels.read_only:
            raise LabelError(
                "the zarr labels array is read-only (opened with mode='r'); "
                "open it with zarr.open_array(path, mode='r+') to write masks into it"
            )
        if isinstance(labels, np.ndarray) and not labels.flags.writeable:
            raise LabelError(
                "the labels array is read-only (writeable=False); pass a writable copy, e.g. labels.copy()"
            )
        self.labels = labels
        self.overwrite = overwrite

    def write(self, index: tuple[int, ...], logits: Mapping[int, np.ndarray]) -> PlaneEdit:
        """Write the masks of some objects into one plane.

        Each voxel gets at most one object: among the given objects whose logit is > 0 there, the
        one with the highest logit wins (SAM2's non-overlap rule); ties go to the smaller id. Each
        written object's region on this plane is replaced, not accumulated: a voxel labelled with
        a written id that no written object wins now is cleared to 0. Voxels of ids not in
        ``logits`` are kept, unless ``overwrite=True`` and a written object wins them.

        Only the box that can change is touched: the written masks' windows and the written ids'
        voxels now (found by scanning the plane in strips of rows, without a plane-sized
        temporary; a zarr plane is read once). That box is edited in memory and the box of the
        voxels that changed is written back with one assignment, so an error during the edit
        leaves the labels untouched; nothing is written when nothing changes.

        Args:
            index: one int per frame axis (``len == labels.ndim - 2``), each in range.
            logits: object id (positive int that fits the labels dtype) -> (H, W) mask logits, any
                real dtype, > 0 meaning inside (NaN counts as outside); a bool mask counts as +1/-1.
                A :class:`MaskPatch` gives logits over a window only (outside it: outside).

        Returns:
            The :class:`PlaneEdit`, to undo with :meth:`revert`.

        Raises:
            LabelError: a bad index, id or mask shape/dtype.
        """
        index = _check_index(self.labels, index)
        ids = sorted(_check_id(self.labels.dtype, i) for i in logits)
        plane_shape = tuple(self.labels.shape[-2:])
        masks = {i: _as_patch(logits[i], i, plane_shape) for i in ids}
        region = _union_box(list(masks.values()), plane_shape)  # (r0, c0, r1, c1) or None
        plane = self._read_plane(index)  # numpy: a view; zarr: the one read
        held = _extent(plane, ids)  # where the written objects are now
        box = _union([b for b in (region, held) if b is not None])
        if box is None:
            return _edit(index, np.zeros((0, 0), self.labels.dtype), np.zeros((0, 0), self.labels.dtype), 0)

        r0, c0, r1, c1 = box
        dtype = self.labels.dtype
        before = np.array(plane[r0:r1, c0:c1], copy=True)  # (h, w), the only region read
        after = before.copy()
        if ids:
            after[np.isin(before, np.asarray(ids, dtype=dtype))] = 0  # each written object is replaced
        if region is not None:
            q0, p0, q1, p1 = region
            stack = np.full((len(ids), q1 - q0, p1 - p0), -np.inf, np.float32)  # (n_ids, h, w)
            for layer, i in zip(stack, ids):
                _paste(layer, masks[i], plane_shape, offset=(q0, p0))
            best = stack.argmax(axis=0)  # first maximum: the smaller id wins ties
            inside = np.take_along_axis(stack, best[None], axis=0)[0] > 0
            winner = np.where(inside, np.asarray(ids, dtype=dtype)[best], 0).astype(dtype)  # (h, w)
            new = after[q0 - r0 : q1 - r0, p0 - c0 : p1 - c0]  # a view: written objects already cleared
            claim = inside if self.overwrite else inside & (new == 0)
            new[claim] = winner[claim]

        diff = after != before
        changed = int(np.count_nonzero(diff))
        tight = _mask_box(diff)
        if tight is None:
            return _edit(index, before[:0, :0], after[:0, :0], 0, (r0, c0))
        t0, u0, t1, u1 = tight
        before, after = before[t0:t1, u0:u1], after[t0:t1, u0:u1]
        origin = (r0 + t0, c0 + u0)
        self._assign(index, origin, before, after)
        return _edit(index, before, after, changed, origin)

    def is_current(self, edit: PlaneEdit) -> bool:
        """Whether the edited box still holds ``edit.after`` (nothing changed it since)."""
        index = _check_index(self.labels, edit.index)
        r0, c0, r1, c1 = edit.box
        if r1 > self.labels.shape[-2] or c1 > self.labels.shape[-1]:
            return False
        return bool(
            np.array_equal(np.asarray(self.labels[(*index, slice(r0, r1), slice(c0, c1))]), edit.after)
        )

    def revert(self, edit: PlaneEdit) -> PlaneEdit:
        """Restore ``edit.before``, if the edited box still equals ``edit.after``.

        Returns:
            The inverse edit (reverting it redoes ``edit``).

        Raises:
            LabelError: the box changed since the edit (undoing would lose newer work), or the edit
                does not fit these labels.
        """
        index = _check_index(self.labels, edit.index)
        if not self.is_current(edit):
            raise LabelError(
                f"cannot undo the edit of plane {index}: the plane changed since (a later edit or the "
                "user painted on it), so undoing would lose newer work; undo the later edits first"
            )
        if edit.changed:
            self._assign(index, edit.origin, edit.after, edit.before)
        return _edit(index, edit.after, edit.before, edit.changed, edit.origin)

    def _read_plane(self, index: tuple[int, ...]) -> np.ndarray:
        """The (H, W) plane to edit: a view of numpy labels, one read of a zarr array's plane."""
        if isinstance(self.labels, np.ndarray):
            return self.labels[_plane(index)]
        return np.asarray(self.labels[_plane(index)])

    def _assign(
        self, index: tuple[int, ...], origin: tuple[int, int], old: np.ndarray, new: np.ndarray
    ) -> None:
        """The single write of a box: ``new`` (h, w) at plane (row, col) ``origin``, which holds ``old``
        now (a subclass may write only the voxels that differ)."""
        (r0, c0), (h, w) = origin, new.shape
        self.labels[(*index, slice(r0, r0 + h), slice(c0, c0 + w))] = new


def create_labels(
    shape: tuple[int, ...],
    *,
    path: str | Path | None = None,
    chunks: tuple[int, ...] | None = None,
    dtype: str | np.dtype = "uint32",
) -> LabelArray:
    """Create an all-zero labels array: in memory (numpy) or on disk (zarr v3).

    Args:
        shape: ``frame_shape + (H, W)``, at least 2 positive ints.
        path: where to create a zarr v3 array; None gives a numpy array. An existing path is
            never overwritten.
        chunks: zarr chunk shape; default one plane, ``(1, ..., 1, H, W)``, so that writing a plane
            touches only that plane's chunks. Ignored without ``path``.
        dtype: integer dtype.

    Raises:
        LabelError: bad shape or dtype, or ``path`` exists.
    """
    shape = tuple(shape)
    dtype = np.dtype(dtype)
    if len(shape) < 2 or not all(_is_int(n) and n > 0 for n in shape):
        raise LabelError(f"labels shape must be frame_shape + (H, W) with positive sizes; got {shape}")
    if not np.issubdtype(dtype, np.integer):
        raise LabelError(f"labels dtype must be an integer dtype such as 'uint32'; got {dtype}")
    shape = tuple(int(n) for n in shape)
    if path is None:
        return np.zeros(shape, dtype=dtype)
    path = Path(path)
    if path.exists():
        raise LabelError(f"{path} already exists; choose a new path (existing labels are never overwritten)")
    chunks = (1,) * (len(shape) - 2) + shape[-2:] if chunks is None else tuple(chunks)
    if len(chunks) != len(shape):
        raise LabelError(f"chunks {chunks} must have one entry per axis of shape {shape}")
    return zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype=dtype, fill_value=0)


def seed_objects(labels: LabelArray, index: tuple[int, ...]) -> dict[int, np.ndarray]:
    """The (H, W) bool mask of every positive id on one plane, to seed a tracker from labels.

    Negative ids (possible in signed dtypes) are not object ids and are left out.
    """
    _check_labels(labels)
    plane = np.asarray(labels[_plane(_check_index(labels, index))])
    return {int(i): plane == i for i in np.unique(plane) if i > 0}


def _edit(
    index: tuple[int, ...],
    before: np.ndarray,
    after: np.ndarray,
    changed: int,
    origin: tuple[int, int] = (0, 0),
) -> PlaneEdit:
    before, after = before.copy(), after.copy()
    before.flags.writeable = after.flags.writeable = False
    return PlaneEdit(index, before, after, changed, (int(origin[0]), int(origin[1])))


_STRIP = 256
"""Rows per strip when scanning a plane for an object's voxels (bounds the scratch memory)."""


def _extent(plane: np.ndarray, ids: list[int]) -> tuple[int, int, int, int] | None:
    """(row0, col0, row1, col1) of the voxels of ``plane`` that hold one of ``ids``; None if none.

    Scanned in strips of rows into one reused buffer, so a huge plane needs no plane-sized temporary.
    """
    if not ids:
        return None
    ids_arr = np.asarray(ids, dtype=plane.dtype)
    rows: list[int] = []
    col0, col1 = plane.shape[1], 0
    buf = np.empty((min(_STRIP, plane.shape[0]), plane.shape[1]), bool)
    for start in range(0, plane.shape[0], _STRIP):
        strip = plane[start : start + _STRIP]
        hit = buf[: strip.shape[0]]
        if len(ids) <= 4:
            np.equal(strip, ids_arr[0], out=hit)
            for i in ids_arr[1:]:
                hit |= strip == i
        else:
            hit[...] = np.isin(strip, ids_arr)
        if not hit.any():
            continue
        r = np.flatnonzero(hit.any(axis=1))
        c = np.flatnonzero(hit.any(axis=0))
        rows += [start + int(r[0]), start + int(r[-1]) + 1]
        col0, col1 = min(col0, int(c[0])), max(col1, int(c[-1]) + 1)
    return (min(rows), col0, max(rows), col1) if rows else None


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, col0, row1, col1) of the True pixels of a 2D mask (ends exclusive); None if none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _union(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    if not boxes:
        return None
    r0, c0, r1, c1 = zip(*boxes)
    return min(r0), min(c0), max(r1), max(c1)


def _plane(index: tuple[int, ...]) -> tuple[int | slice, ...]:
    return (*index, slice(None), slice(None))


def _check_labels(labels: object) -> None:
    if not isinstance(labels, np.ndarray | zarr.Array):
        raise LabelError(
            f"labels must be a numpy array or a zarr.Array; got {type(labels).__name__} "
            "(load it with np.asarray, or create one with create_labels)"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise LabelError(
            f"labels dtype must be an integer dtype (uint8/16/32/64 or int8/16/32/64); got {labels.dtype}; "
            "convert with labels.astype('uint32')"
        )
    if labels.ndim < 2:
        raise LabelError(f"labels must have at least 2 dimensions (..., H, W); got shape {labels.shape}")


def _check_index(labels: LabelArray, index: tuple[int, ...]) -> tuple[int, ...]:
    frames = tuple(labels.shape[:-2])
    if not isinstance(index, tuple | list) or not all(_is_int(i) for i in index):
        raise LabelError(f"index must be a tuple of ints, one per frame axis {frames}; got {index!r}")
    index = tuple(int(i) for i in index)
    if len(index) != len(frames) or any(not 0 <= i < n for i, n in zip(index, frames)):
        raise LabelError(
            f"index {index} does not address one plane: labels of shape {tuple(labels.shape)} need "
            f"{len(frames)} index value(s), each in 0..size-1 of the frame axes {frames}"
        )
    return index


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_id(dtype: np.dtype, obj_id: object) -> int:
    if not _is_int(obj_id):
        raise LabelError(f"object ids must be positive ints; got {obj_id!r}")
    obj_id = int(obj_id)
    top = int(np.iinfo(dtype).max)
    if not 0 < obj_id <= top:
        raise LabelError(
            f"object id {obj_id} does not fit labels of dtype {dtype} (ids must be 1..{top}); "
            "use a smaller id or labels with a wider dtype such as uint32"
        )
    return obj_id


def _as_patch(mask: object, obj_id: int, plane_shape: tuple[int, ...]) -> MaskPatch:
    if isinstance(mask, MaskPatch):
        logits = _as_logits(mask.logits, obj_id, None)
        if logits.ndim != 2:
            raise LabelError(f"the patch of object {obj_id} must be 2D (h, w); got shape {logits.shape}")
        return MaskPatch(logits, (int(mask.origin[0]), int(mask.origin[1])))
    return MaskPatch(_as_logits(mask, obj_id, plane_shape))


def _clipped(patch: MaskPatch, plane_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """The part of the patch's window inside the plane, (r0, c0, r1, c1), or None if empty."""
    (r0, c0), (h, w) = patch.origin, patch.logits.shape
    r0c, c0c = max(r0, 0), max(c0, 0)
    r1c, c1c = min(r0 + h, plane_shape[0]), min(c0 + w, plane_shape[1])
    return (r0c, c0c, r1c, c1c) if r1c > r0c and c1c > c0c else None


def _union_box(patches: list[MaskPatch], plane_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    return _union([b for b in (_clipped(p, plane_shape) for p in patches) if b is not None])


def _paste(
    out: np.ndarray, patch: MaskPatch, plane_shape: tuple[int, ...], offset: tuple[int, int] = (0, 0)
) -> None:
    """Copy the in-plane part of ``patch`` into ``out``, whose [0, 0] is plane pixel ``offset``."""
    box = _clipped(patch, plane_shape)
    if box is None:
        return
    r0, c0, r1, c1 = box
    (pr, pc), (orow, ocol) = patch.origin, offset
    out[r0 - orow : r1 - orow, c0 - ocol : c1 - ocol] = patch.logits[r0 - pr : r1 - pr, c0 - pc : c1 - pc]


def _as_logits(mask: object, obj_id: int, plane_shape: tuple[int, ...] | None) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        mask = np.where(mask, 1.0, -1.0)
    elif not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        raise LabelError(f"mask of object {obj_id} must hold real logits or bools; got dtype {mask.dtype}")
    if plane_shape is not None and mask.shape != plane_shape:
        raise LabelError(
            f"mask of object {obj_id} has shape {mask.shape} but the labels plane is {plane_shape}; "
            "resize the logits to the plane (H, W) first"
        )
    return np.where(np.isnan(mask), -np.inf, mask) if mask.dtype.kind == "f" else mask
