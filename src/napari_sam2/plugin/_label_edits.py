"""Label edits through a napari Labels layer: only the voxels that change are written and redrawn.

:class:`LayerLabelWriter` is the engine's :class:`~napari_sam2.engine.LabelWriter` (same rules:
one object per voxel, other objects kept unless overwriting, undo refused when the box changed
since) whose single write goes through :meth:`napari.layers.Labels.data_setitem` with the changed
voxels only, so napari redraws just their box (a partial refresh) instead of the whole plane.
:func:`write_patch` (a click) and the undo history (:mod:`._history`) use it, in the GUI thread. Labels data that is not a numpy array (a zarr array) is written as a box and the layer
refreshed whole.

Work that writes from the task runner's thread (propagation, segment everything) writes the
labels array directly; :func:`show_edits` then redraws, in the GUI thread, only the boxes of the
new edits that lie on the plane in view (or all of them in a 3D view), not the whole layer.

New labels layers are uint16 (:data:`LABELS_DTYPE`): napari shows uint8/uint16 labels without
converting them, while every (re)draw of uint32 labels hashes the whole plane in the GUI thread
(about 2 s per 6000 x 6000 plane here). :func:`fit_ids` widens a layer to uint32 before an object
id above 65,535 is written.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Labels

from ..api.session import RecordingWriter
from ..engine import LabelWriter, MaskPatch, PlaneEdit

__all__ = ["LABELS_DTYPE", "LayerLabelWriter", "fit_ids", "show_edits", "show_thumbnail", "write_patch"]

LABELS_DTYPE = np.dtype(np.uint16)
"""dtype of the labels layers the widget creates (65,535 objects; widened by :func:`fit_ids`)."""


class LayerLabelWriter(LabelWriter):
    """A :class:`LabelWriter` over ``layer.data`` that writes through the layer.

    Args:
        layer: the output Labels layer (single scale, writable data of the image's shape).
        overwrite: a written object may take other objects' voxels.
    """

    def __init__(self, layer: Labels, *, overwrite: bool = False) -> None:
        super().__init__(layer.data, overwrite=overwrite)
        self.layer = layer

    def _assign(
        self, index: tuple[int, ...], origin: tuple[int, int], old: np.ndarray, new: np.ndarray
    ) -> None:
        if not isinstance(self.layer.data, np.ndarray):
            super()._assign(index, origin, old, new)
            self.layer.refresh()
            return
        rows, cols = np.nonzero(old != new)  # (n,) each: the voxels that change, in the box
        coords = (*(np.full(rows.shape, i, np.intp) for i in index), rows + origin[0], cols + origin[1])
        self.layer.data_setitem(coords, new[rows, cols], refresh=True)


def write_patch(
    layer: Labels, frame: tuple[int, ...], obj_id: int, patch: MaskPatch, *, overwrite: bool = False
) -> RecordingWriter:
    """Write one object's mask patch into the plane ``frame`` of ``layer``; the recorded edit (the
    box of changed voxels, for undo) is in the returned writer's ``edits``."""
    writer = RecordingWriter(LayerLabelWriter(layer, overwrite=overwrite))
    writer.write(frame, {obj_id: patch})
    return writer


def fit_ids(layer: Labels, top: int) -> str:
    """Make ``layer`` hold object ids up to ``top``: an unsigned layer too narrow becomes uint32
    (its data replaced by a widened copy; napari's own undo of the layer starts afresh).

    Returns:
        A message for the user when the layer was widened, else "".
    """
    dtype = np.dtype(layer.data.dtype)
    if dtype.kind != "u" or top <= np.iinfo(dtype).max or dtype.itemsize >= 4:
        return ""
    layer.data = np.asarray(layer.data).astype(np.uint32)
    return f"labels layer {layer.name!r} widened from {dtype} to uint32 to hold object id {top}"


def show_edits(layer: Labels, edits: list[PlaneEdit]) -> None:
    """Redraw the boxes of ``edits`` (already written into ``layer.data``) that can be seen.

    In a 2D view only the edits of the plane in view are drawn (the others show when the user
    moves there, since napari slices the data afresh); in a 3D view all of them. Without napari's
    partial refresh (a layer that is not a numpy array, or a napari without it) the layer is
    refreshed whole, once.
    """
    if not edits:
        return
    layer = getattr(layer, "__wrapped__", layer)  # napari hands plugins a public-only proxy
    partial = (
        isinstance(layer.data, np.ndarray)
        and hasattr(layer, "_accumulate_updated_slice")
        and hasattr(layer, "_partial_labels_refresh")
        and hasattr(layer, "_get_pt_not_disp")
    )
    if not partial:
        layer.refresh()
        return
    n_frames = layer.data.ndim - 2
    in_view = layer._get_pt_not_disp()  # {axis: index} of the axes not displayed
    shown = False
    for edit in edits:
        if any(in_view.get(a, i) != i for a, i in enumerate(edit.index[:n_frames])):
            continue  # another plane: nothing on screen changed
        r0, c0, r1, c1 = edit.box
        box = (*(slice(i, i + 1) for i in edit.index), slice(r0, r1), slice(c0, c1))
        layer._accumulate_updated_slice(box)
        shown = True
    if shown:
        layer._partial_labels_refresh()


def show_thumbnail(layer: Labels) -> None:
    """Redraw the layer-list thumbnail of ``layer`` from the slice in view (not the whole layer)."""
    layer = getattr(layer, "__wrapped__", layer)
    if hasattr(layer, "_update_thumbnail"):
        layer._update_thumbnail()
    else:
        layer.refresh()
