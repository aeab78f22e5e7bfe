"""Provenance of labels: what produced them, stored with them, and a script that makes them again.

Every labels file the scripting API or the command line writes carries a :class:`ProvenanceRecord`:
the image (path, shape, dtype, axes), the prompts, the model (source, name, SHA-256 of the
checkpoint file, weights fingerprint), the resolved intensity window, the tiling and propagation
settings, the package and torch versions, the device and thread count, and a SHA-256 of the labels.

Where it goes:

* zarr: the array's attributes, under ``"napari_sam2"``;
* TIFF: the JSON metadata tifffile writes into the ImageDescription, under ``"napari_sam2"``;
* NIfTI and NRRD (labels of a medical volume, in its geometry): a JSON sidecar ``<labels>.sam2.json``;
* anything else: a JSON sidecar ``<labels>.sam2.json`` (:func:`write_sidecar`).

:func:`read_record` finds it in any of these. ``napari-sam2 replay`` (:func:`napari_sam2.api.replay`)
re-runs the record; :func:`python_script` turns it into a runnable script for the public API.

The record and its entries live in :mod:`._provenance_record`, the script in
:mod:`._provenance_script`, prompt files in :mod:`.prompt_files`; this module reads and writes
records with labels and is where all of them are imported from.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from .outputs import OutputError, atomic_output, guard_output, temporary_path
from .prompt_files import prompts_from_table, read_prompts
from .record import (
    FORMAT_VERSION,
    PromptMap,
    ProvenanceError,
    ProvenanceRecord,
    image_entry,
    model_entry,
    options_entry,
    prompt_entries,
    prompts_from_entries,
    runtime_entry,
)
from .script import python_script

__all__ = [
    "ATTR",
    "FORMAT_VERSION",
    "SIDECAR_SUFFIX",
    "PromptMap",
    "ProvenanceError",
    "ProvenanceRecord",
    "prompt_entries",
    "prompts_from_entries",
    "prompts_from_table",
    "read_prompts",
    "image_entry",
    "model_entry",
    "options_entry",
    "runtime_entry",
    "labels_digest",
    "file_sha256",
    "write_labels",
    "read_labels",
    "read_record",
    "write_sidecar",
    "OutputError",
    "guard_output",
    "temporary_path",
    "python_script",
]

ATTR = "napari_sam2"
"""Key of the record in zarr attributes and TIFF metadata."""
SIDECAR_SUFFIX = ".sam2.json"
_TIFF = (".tif", ".tiff")
_MEDICAL = (".nii", ".nii.gz", ".nrrd")


def labels_digest(labels: Any) -> str:
    """SHA-256 of a labels array's shape, dtype and values (C order), read one plane at a time."""
    h = hashlib.sha256()
    shape = tuple(int(s) for s in labels.shape)
    h.update(f"{shape}|{np.dtype(labels.dtype).str}|".encode())
    frames = shape[:-2]
    for index in np.ndindex(*frames) if frames else [()]:
        h.update(np.ascontiguousarray(np.asarray(labels[index])).tobytes())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_TIFF):
        return "tiff"
    if name.endswith(".zarr"):
        return "zarr"
    if name.endswith(_MEDICAL):
        return "medical"
    raise ProvenanceError(
        f"{path.name}: labels are written as TIFF (.tif, .tiff), zarr (.zarr), or for a medical volume "
        "NIfTI (.nii, .nii.gz) or NRRD (.nrrd)"
    )


def write_labels(
    path: str | os.PathLike,
    labels: Any,
    record: ProvenanceRecord,
    *,
    overwrite: bool = False,
    geometry: Any = None,
) -> Path:
    """Write ``labels`` with ``record`` (its ``labels`` entry filled in here) to TIFF or zarr, or to
    NIfTI/NRRD in the ``geometry`` of the medical volume they were made on (record in a sidecar).

    The file appears under its final name only when complete (written beside it, then renamed;
    :func:`.outputs.atomic_output`), so an interrupted run never leaves a finished-looking output
    and an existing one (``overwrite=True``) stays as it was if writing fails. A zarr ``labels``
    array that already lives at ``path``'s temporary name is moved, not copied (the API's ``out=``).

    Raises:
        ProvenanceError: an unknown suffix, ``path`` exists and ``overwrite`` is False, or a
            NIfTI/NRRD output without the geometry of a medical input.
    """
    path = Path(path)
    kind = _format(path)
    if path.exists() and not overwrite:
        raise ProvenanceError(f"{path} already exists; choose another output or allow overwriting")
    if kind == "medical" and geometry is None:
        raise ProvenanceError(
            f"{path.name}: NIfTI/NRRD labels are written in the geometry of a NIfTI, NRRD or DICOM input; "
            "this image has none, so write .tif or .zarr"
        )
    record.labels = {
        "shape": [int(s) for s in labels.shape],
        "dtype": str(np.dtype(labels.dtype)),
        "sha256": labels_digest(labels),
    }
    meta = record.to_dict()
    if kind == "medical":
        from ..medical import write_labels_like

        write_labels_like(path, labels, geometry, overwrite=overwrite)
        write_sidecar(path, record)
        return path
    tmp = temporary_path(path)
    root = getattr(getattr(labels, "store", None), "root", None)
    streamed = kind == "zarr" and isinstance(labels, zarr.Array) and root is not None and Path(root) == tmp
    if not streamed:
        _remove(tmp)
    with atomic_output(path) as tmp:
        if kind == "tiff":
            tifffile.imwrite(
                tmp, np.asarray(labels), photometric="minisblack", metadata={ATTR: meta}, compression="zlib"
            )
        else:
            if not streamed:
                plane = (1,) * (labels.ndim - 2) + tuple(labels.shape[-2:])
                out = zarr.create_array(
                    store=str(tmp), shape=labels.shape, chunks=plane, dtype=labels.dtype, fill_value=0
                )
                for index in np.ndindex(*labels.shape[:-2]) if labels.ndim > 2 else [()]:
                    out[index] = np.asarray(labels[index])
            zarr.open_array(str(tmp), mode="r+").attrs[ATTR] = meta
    return path


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def read_labels(path: str | os.PathLike) -> np.ndarray | zarr.Array:
    """The labels of a TIFF (as numpy), zarr (as a read-only zarr array) or NIfTI/NRRD output (as
    numpy, in the engine's (z, y, x) order)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"labels not found: {path}")
    try:
        if _format(path) == "medical":
            from ..medical import read_labels_medical

            return read_labels_medical(path)
        if _format(path) == "tiff":
            return tifffile.imread(path)
        return zarr.open_array(str(path), mode="r")
    except (OSError, ValueError, tifffile.TiffFileError, zarr.errors.BaseZarrError) as err:
        raise ProvenanceError(f"cannot read labels from {path}: {err}") from err


def write_sidecar(labels_path: str | os.PathLike, record: ProvenanceRecord) -> Path:
    """Write ``record`` as ``<labels_path>.sam2.json`` (for labels saved in other formats)."""
    side = Path(str(labels_path) + SIDECAR_SUFFIX)
    side.write_text(json.dumps(record.to_dict(), indent=1))
    return side


def read_record(path: str | os.PathLike) -> ProvenanceRecord:
    """The record of a labels output (TIFF, zarr, or any file with a sidecar) or of a JSON file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ProvenanceError: there is no record, or it cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"not found: {path}")
    side = Path(str(path) + SIDECAR_SUFFIX)
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
        elif side.is_file():
            data = json.loads(side.read_text())
        elif path.name.lower().endswith(_TIFF):
            with tifffile.TiffFile(path) as tif:
                data = (tif.shaped_metadata or ({},))[0].get(ATTR)
        elif path.is_dir():
            data = zarr.open_array(str(path), mode="r").attrs.get(ATTR)
        else:
            data = None
    except (OSError, ValueError, tifffile.TiffFileError, zarr.errors.BaseZarrError) as err:
        raise ProvenanceError(f"cannot read the provenance of {path}: {err}") from err
    if data is None:
        raise ProvenanceError(
            f"{path} carries no napari-sam2 provenance (no {ATTR!r} metadata and no {side.name}); "
            "only labels written by napari-sam2 can be replayed"
        )
    return ProvenanceRecord.from_dict(data)
