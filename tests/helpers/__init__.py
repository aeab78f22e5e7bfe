"""Builders the tests share: small volumes and files, random-weight models and checkpoints in the
official layout, and stand-ins for napari layers. Fixtures built on them live in ``conftest.py``.

Tests import from here, never from another test module.
"""

from .builders import (
    AUTO,
    CLICKS,
    P64,
    TINY,
    FakeLayer,
    H,
    W,
    auto_mask,
    make_model,
    make_volume,
    save_medsam2,
    save_sharp,
    save_tiny,
    square,
    write_tiff,
)
from .medical import write_series
from .parity import close, iou, same_masks
from .shared_data import shared_data_dir, shared_file

__all__ = [
    "AUTO",
    "CLICKS",
    "H",
    "P64",
    "TINY",
    "W",
    "FakeLayer",
    "auto_mask",
    "close",
    "iou",
    "make_model",
    "make_volume",
    "same_masks",
    "save_medsam2",
    "save_sharp",
    "save_tiny",
    "shared_data_dir",
    "shared_file",
    "square",
    "write_series",
    "write_tiff",
]
