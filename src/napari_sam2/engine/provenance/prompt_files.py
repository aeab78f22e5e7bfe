"""Prompts from files and napari-style tables: JSON, CSV, and Points/Shapes layers saved by napari.

Every reader returns prompts keyed by ``(frame, obj_id)``: ``frame`` a tuple of indices over the
image's t/z axes (``()`` for a plane), coordinates in image pixels (row, col). Errors are
:class:`~.provenance.ProvenanceError` naming the file and the row that is wrong.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..prompts import Prompt
from .record import ProvenanceError, prompts_from_entries

__all__ = ["merge_prompts", "prompts_from_table", "read_prompts"]

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


def merge_prompts(*maps: Mapping) -> dict:
    """Prompt maps combined: an object's clicks on one frame are concatenated; two boxes of one
    object on one frame are an error."""
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
        np.array([c for c, _ in point_rows], dtype=np.float64).reshape(len(point_rows), len(frame_cols) + 2),
        {"obj_id": [f["obj_id"] for _, f in point_rows], "label": [f["label"] for _, f in point_rows]},
        False,
        name,
    )
    boxes = prompts_from_table(
        [c for c, _ in box_rows], {"obj_id": [f["obj_id"] for _, f in box_rows]}, True, name
    )
    out = merge_prompts(pts, boxes)
    if not out:
        raise ProvenanceError(f"{name} has no clicks or boxes")
    return out
