"""Provenance of labels: what produced them, stored with them, and a script that makes them again.

Every labels file the scripting API or the command line writes carries a :class:`ProvenanceRecord`:
the image (path, shape, dtype, axes), the prompts, the model (source, name, SHA-256 of the
checkpoint file, weights fingerprint), the resolved intensity window, the tiling and propagation
settings, the package and torch versions, the device and thread count, and a SHA-256 of the labels.

Where it goes:

* zarr: the array's attributes, under ``"napari_sam2"``;
* TIFF: the JSON metadata tifffile writes into the ImageDescription, under ``"napari_sam2"``;
* anything else: a JSON sidecar ``<labels>.sam2.json`` (:func:`write_sidecar`).

:func:`read_record` finds it in any of these. ``napari-sam2 replay`` (:func:`napari_sam2.api.replay`)
re-runs the record; :func:`python_script` turns it into a runnable script for the public API.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from .prompts import Prompt

__all__ = [
    "ATTR",
    "SIDECAR_SUFFIX",
    "ProvenanceError",
    "ProvenanceRecord",
    "prompt_entries",
    "prompts_from_entries",
    "prompts_from_table",
    "read_prompts",
    "labels_digest",
    "file_sha256",
    "write_labels",
    "read_labels",
    "read_record",
    "write_sidecar",
    "python_script",
]

FORMAT_VERSION = 1
ATTR = "napari_sam2"
"""Key of the record in zarr attributes and TIFF metadata."""
SIDECAR_SUFFIX = ".sam2.json"
_TIFF = (".tif", ".tiff")

PromptMap = Mapping[tuple[tuple[int, ...], int], Prompt]
"""Prompts keyed by (frame index over the image's t/z axes, object id)."""


class ProvenanceError(ValueError):
    """A record that is missing, unreadable or does not fit; the message says what to do."""


@dataclass
class ProvenanceRecord:
    """Everything that determines a labels output.

    Attributes:
        kind: "segment" (each prompted plane on its own) or "propagate" (through z or t).
        image: path (None for in-memory data), identity, shape, dtype, axes, channel.
        prompts: one entry per (frame, object): frame (list of ints over the t/z axes), obj_id,
            points ([[row, col], ...]), labels (1/0), box ([row0, col0, row1, col1] or None).
        model: source (name or path as given, None if unknown), name (config), sha256 of the
            checkpoint file (None if unknown), fingerprint of the weights.
        window: the resolved intensity window [low, high] in data units.
        tiling: tile_size, overlap, max_tiles, edge_margin (resolved values).
        propagation: axis, fixed, tracker_window, max_window, stop_after_absent; None for "segment".
        options: the other keyword arguments (axes, channel, multimask, overwrite, window as asked).
        runtime: napari_sam2, torch and numpy versions, device, threads.
        labels: shape, dtype, sha256 (see :func:`labels_digest`) of the result.
        extra: free-form data of the caller (the batch runner stores its job key here).
    """

    kind: str
    image: dict[str, Any]
    prompts: list[dict[str, Any]]
    model: dict[str, Any]
    window: list[float]
    tiling: dict[str, Any]
    propagation: dict[str, Any] | None
    options: dict[str, Any]
    runtime: dict[str, Any]
    labels: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProvenanceRecord:
        if not isinstance(data, Mapping):
            raise ProvenanceError(f"a provenance record is a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT_VERSION:
            raise ProvenanceError(
                f"provenance format {data.get('format')!r} is not {FORMAT_VERSION}; "
                "it was written by another version of napari-sam2"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in names - set(data) if n not in ("labels", "extra"))
        if missing:
            raise ProvenanceError(f"the provenance record lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def prompt_map(self) -> dict[tuple[tuple[int, ...], int], Prompt]:
        return prompts_from_entries(self.prompts)


def prompt_entries(prompts: PromptMap) -> list[dict[str, Any]]:
    """Prompts keyed by (frame, obj_id) -> JSON-able entries, sorted by frame then object."""
    out = []
    for (frame, obj_id), p in sorted(prompts.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        out.append(
            {
                "frame": [int(i) for i in frame],
                "obj_id": int(obj_id),
                "points": p.points.tolist(),
                "labels": p.labels.tolist(),
                "box": None if p.box is None else list(p.box),
            }
        )
    return out


def prompts_from_entries(entries: Any) -> dict[tuple[tuple[int, ...], int], Prompt]:
    """The inverse of :func:`prompt_entries` (also reads hand-written JSON: ``frame`` may be an
    int or missing, ``obj_id`` defaults to 1, ``labels`` to all positive)."""
    if not isinstance(entries, list):
        raise ProvenanceError("prompts must be a JSON list of objects with points/labels/box")
    out: dict[tuple[tuple[int, ...], int], Prompt] = {}
    for i, e in enumerate(entries):
        if not isinstance(e, Mapping):
            raise ProvenanceError(f"prompt {i} is {e!r}, not an object with points/labels/box")
        frame = e.get("frame", [])
        frame = (int(frame),) if isinstance(frame, (int, float)) else tuple(int(f) for f in frame)
        obj_id = int(e.get("obj_id", 1))
        points = e.get("points") or []
        labels = e.get("labels")
        labels = [1] * len(points) if labels is None else labels
        key = (frame, obj_id)
        if key in out:
            raise ProvenanceError(f"prompt {i}: object {obj_id} on frame {list(frame)} is given twice")
        out[key] = Prompt(points=points, labels=labels, box=e.get("box"))
    return out


_OBJ_COLUMNS = ("obj_id", "object_id", "object", "id")
_TRUE = {"1", "1.0", "true", "positive", "pos", "yes", "+"}
_FALSE = {"0", "0.0", "false", "negative", "neg", "no", "-"}


def _label_value(value: Any, where: str) -> int:
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise ProvenanceError(f"{where}: label {value!r} is neither positive (1) nor negative (0)")


def prompts_from_table(
    coords: np.ndarray, features: Mapping[str, Any], boxes: bool = False, where: str = "prompts"
) -> dict[tuple[tuple[int, ...], int], Prompt]:
    """Prompts from napari-style rows: ``coords`` (N, D) with the plane's (row, col) last and the
    frame index (rounded) before; ``features`` columns ``label``/``positive`` (1/0, default 1) and
    ``obj_id``/``object``/``id`` (default 1 for points, the row's number + 1 for boxes).

    With ``boxes=True`` each entry of ``coords`` is one rectangle's vertices (V, D) instead.
    """
    points: dict[tuple[tuple[int, ...], int], list[tuple[float, float, int]]] = {}
    box_of: dict[tuple[tuple[int, ...], int], tuple[float, ...]] = {}
    obj_col = next((c for c in _OBJ_COLUMNS if c in features), None)
    for i, c in enumerate(coords):
        c = np.asarray(c, dtype=np.float64)
        c = c[None] if c.ndim == 1 else c
        if c.shape[-1] < 2:
            raise ProvenanceError(f"{where}: row {i} has {c.shape[-1]} coordinates; need at least (row, col)")
        frame = tuple(round(v) for v in c[0, :-2])
        obj = int(float(features[obj_col][i])) if obj_col else (i + 1 if boxes else 1)
        if boxes:
            lo, hi = c[:, -2:].min(axis=0), c[:, -2:].max(axis=0)
            if (frame, obj) in box_of:
                raise ProvenanceError(f"{where}: object {obj} has two boxes on frame {list(frame)}")
            box_of[(frame, obj)] = (lo[0], lo[1], hi[0], hi[1])
            continue
        if "label" in features:
            label = _label_value(features["label"][i], f"{where} row {i}")
        elif "positive" in features:
            label = _label_value(features["positive"][i], f"{where} row {i}")
        else:
            label = 1
        points.setdefault((frame, obj), []).append((c[0, -2], c[0, -1], label))
    out = {}
    for key in sorted(set(points) | set(box_of)):
        rows = points.get(key, [])
        out[key] = Prompt(
            points=[(r, col) for r, col, _ in rows], labels=[lab for *_, lab in rows], box=box_of.get(key)
        )
    return out


def _merge(*maps: Mapping) -> dict:
    out: dict = {}
    for m in maps:
        for key, p in m.items():
            if key in out:
                old = out[key]
                if old.box is not None and p.box is not None:
                    raise ProvenanceError(f"object {key[1]} has two boxes on frame {list(key[0])}")
                p = Prompt(
                    points=np.concatenate([old.points, p.points]),
                    labels=np.concatenate([old.labels, p.labels]),
                    box=old.box if old.box is not None else p.box,
                )
            out[key] = p
    return out


def read_prompts(path: str | os.PathLike) -> dict[tuple[tuple[int, ...], int], Prompt]:
    """Read prompts, keyed by (frame, obj_id), from a file. Coordinates are image pixels.

    * JSON: a list of ``{"frame": [z], "obj_id": 1, "points": [[row, col]], "labels": [1],
      "box": [row0, col0, row1, col1]}`` (``frame`` may be an int or absent for 2D), or an object
      with such a list under ``"prompts"`` (so a provenance record's JSON works too).
    * CSV with columns ``row, col`` (points; ``label`` 1/0, default 1) and/or ``row0, col0, row1,
      col1`` (a box), optional ``obj_id`` (default 1) and frame columns ``t``, ``z`` (or ``frame``).
    * A Points layer saved by napari (``index, axis-0, ..., axis-N`` and its features, such as
      ``label`` and ``obj_id``), or a Shapes layer saved by napari (rectangles become boxes).

    Raises:
        FileNotFoundError: no such file.
        ProvenanceError: an unknown format or bad content, with the row that is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text())
            entries = data.get("prompts") if isinstance(data, Mapping) else data
            return prompts_from_entries(entries)
        if suffix != ".csv":
            raise ProvenanceError(f"{path.name}: prompts are read from .json or .csv files")
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise ProvenanceError(f"{path.name} has no prompt rows")
        header = list(rows[0])
        columns = {k: [r[k] for r in rows] for k in header}
        axis_cols = sorted((c for c in header if c.startswith("axis-")), key=lambda c: int(c[5:]))
        if axis_cols and "shape-type" in header:  # a napari Shapes layer: one row per vertex
            shapes: dict[int, list] = {}
            for r in rows:
                if r["shape-type"] != "rectangle":
                    raise ProvenanceError(
                        f"{path.name}: shape {r['index']} is a {r['shape-type']}, not a rectangle"
                    )
                shapes.setdefault(int(r["index"]), []).append([float(r[c]) for c in axis_cols])
            return prompts_from_table([np.array(v) for _, v in sorted(shapes.items())], {}, True, path.name)
        if axis_cols:  # a napari Points layer
            coords = np.array([[float(r[c]) for c in axis_cols] for r in rows])
            return prompts_from_table(coords, columns, False, path.name)
        return _read_plain_csv(rows, header, path.name)
    except (ValueError, KeyError, TypeError) as err:
        if isinstance(err, ProvenanceError):
            raise
        raise ProvenanceError(f"{path.name}: cannot read prompts ({type(err).__name__}: {err})") from None


def _read_plain_csv(rows: list[dict], header: list[str], name: str) -> dict:
    has_points, has_box = {"row", "col"} <= set(header), {"row0", "col0", "row1", "col1"} <= set(header)
    if not (has_points or has_box):
        raise ProvenanceError(
            f"{name}: expected columns row, col (and label) for clicks or row0, col0, row1, col1 for boxes, "
            f"optional obj_id and t/z; found {', '.join(header)}"
        )
    frame_cols = [c for c in ("t", "z") if c in header] or (["frame"] if "frame" in header else [])
    point_rows, box_rows = [], []
    for i, r in enumerate(rows, start=2):  # line numbers: the header is line 1
        frame = [float(r[c]) for c in frame_cols]
        obj = {"obj_id": r.get("obj_id") or 1}
        if has_box and (r.get("row0") or "").strip():
            box_rows.append(
                (
                    np.array(
                        [
                            [*frame, float(r["row0"]), float(r["col0"])],
                            [*frame, float(r["row1"]), float(r["col1"])],
                        ]
                    ),
                    obj,
                )
            )
        if has_points and (r.get("row") or "").strip():
            label = _label_value(r.get("label") or 1, f"{name} line {i}")
            point_rows.append(([*frame, float(r["row"]), float(r["col"])], {**obj, "label": label}))
    pts = prompts_from_table(
        np.array([c for c, _ in point_rows]).reshape(len(point_rows), -1),
        {"obj_id": [f["obj_id"] for _, f in point_rows], "label": [f["label"] for _, f in point_rows]},
        False,
        name,
    )
    boxes = prompts_from_table(
        [c for c, _ in box_rows], {"obj_id": [f["obj_id"] for _, f in box_rows]}, True, name
    )
    out = _merge(pts, boxes)
    if not out:
        raise ProvenanceError(f"{name} has no clicks or boxes")
    return out


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
    raise ProvenanceError(f"{path.name}: labels are written as TIFF (.tif, .tiff) or zarr (.zarr)")


def write_labels(
    path: str | os.PathLike, labels: Any, record: ProvenanceRecord, *, overwrite: bool = False
) -> Path:
    """Write ``labels`` with ``record`` (its ``labels`` entry filled in here) to TIFF or zarr.

    The file appears under its final name only when complete (written beside it, then renamed),
    so an interrupted run never leaves a finished-looking output. A zarr ``labels`` array that
    already lives at ``path``'s temporary name is moved, not copied (see the API's ``out=``).

    Raises:
        ProvenanceError: an unknown suffix, or ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    kind = _format(path)
    if path.exists() and not overwrite:
        raise ProvenanceError(f"{path} already exists; choose another output or allow overwriting")
    record.labels = {
        "shape": [int(s) for s in labels.shape],
        "dtype": str(np.dtype(labels.dtype)),
        "sha256": labels_digest(labels),
    }
    meta = record.to_dict()
    tmp = temporary_path(path)
    root = getattr(getattr(labels, "store", None), "root", None)
    streamed = kind == "zarr" and isinstance(labels, zarr.Array) and root is not None and Path(root) == tmp
    if not streamed:
        _remove(tmp)
    try:
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
        _remove(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
    return path


def temporary_path(path: str | os.PathLike) -> Path:
    """Where :func:`write_labels` builds ``path`` before renaming it (stream zarr labels here)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def read_labels(path: str | os.PathLike) -> np.ndarray | zarr.Array:
    """The labels of a TIFF (as numpy) or zarr (as a read-only zarr array) output."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"labels not found: {path}")
    try:
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


def python_script(record: ProvenanceRecord, out: str | None = None) -> str:
    """A runnable Python script that makes the record's labels again through the public API.

    The script takes the output path as its first argument (default ``out``, else
    ``labels_replay.tif``). For images that were in memory (no path) it stops with a message
    asking for one; for a model of unknown source likewise.
    """
    img, mdl = record.image, record.model
    kwargs = {
        "window": tuple(record.window),
        "axes": record.options.get("axes"),
        "channel": record.options.get("channel"),
        "overwrite": record.options.get("overwrite", False),
    }
    if record.kind == "segment":
        func = "segment"
        kwargs.update(record.tiling)
        kwargs["multimask"] = record.options.get("multimask", False)
    else:
        func = "propagate"
        kwargs.update(record.propagation or {})
    lines = [
        f'"""Makes the labels of a napari-sam2 {record.kind} run again '
        f'(napari-sam2 {record.runtime.get("napari_sam2")}, model {mdl.get("name")})."""',
        "",
        "import sys",
        "",
        "import torch",
        "",
        f"from napari_sam2 import Prompt, load_model, {func}",
        "",
        f"torch.set_num_threads({int(record.runtime.get('threads') or 1)})  # the thread count of the original run",
        f"IMAGE = {img.get('path')!r}",
        f"MODEL = {mdl.get('source')!r}  # sha256 {mdl.get('sha256')}",
        f"OUT = sys.argv[1] if len(sys.argv) > 1 else {out or 'labels_replay.tif'!r}",
        "if IMAGE is None:",
        "    sys.exit('the image was in memory when these labels were made: set IMAGE to its file')",
        "if MODEL is None:",
        "    sys.exit('the model is not known by name or file: set MODEL to its checkpoint')",
        "",
        f"model = load_model(MODEL, device={record.runtime.get('device', 'cpu')!r})",
        "prompts = {",
    ]
    for e in record.prompts:
        args = []
        if e["points"]:
            args += [f"points={e['points']!r}", f"labels={e['labels']!r}"]
        if e["box"] is not None:
            args.append(f"box={tuple(e['box'])!r}")
        lines.append(f"    {(*e['frame'], e['obj_id'])!r}: Prompt({', '.join(args)}),")
    lines.append("}  # (frame indices..., object id): clicks (row, col), 1 = positive")
    lines.append(f"result = {func}(")
    lines.append("    IMAGE,")
    lines.append("    prompts,")
    lines.append("    model=model,")
    lines += [f"    {k}={v!r}," for k, v in kwargs.items()]
    lines.append(")")
    lines.append("result.save(OUT)")
    lines.append("print('wrote', OUT)")
    return "\n".join(lines) + "\n"
