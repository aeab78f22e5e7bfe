"""Label edits through a napari Labels layer: only the voxels that change are written and redrawn.

:class:`LayerLabelWriter` is the engine's :class:`~napari_sam2.engine.LabelWriter` (same rules:
one object per voxel, other objects kept unless overwriting, undo refused when the box changed
since) whose single write goes through :meth:`napari.layers.Labels.data_setitem` with the changed
voxels only, so napari redraws just their box (a partial refresh) instead of the whole plane.
:func:`write_patch` (a click) and the undo history (:mod:`._history`) use it, in the GUI thread. Labels data that is not a numpy array (a zarr array) is written as a box and the layer
refreshed whole.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Labels

from ..api.session import RecordingWriter
from ..engine import LabelWriter, MaskPatch

__all__ = ["LayerLabelWriter", "write_patch"]


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
