"""The provenance record itself: :class:`ProvenanceRecord`, its prompt entries, and the entries
that describe an image, a model and the runtime (see :mod:`.provenance` for where it is stored)."""

from __future__ import annotations

import dataclasses
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import torch

from ...model import Sam2Model
from ...model.weights import family_of
from ..cache import weights_fingerprint
from ..prompts import Prompt

FORMAT_VERSION = 1
KINDS = {"segment": "segment", "propagate": "propagate", "auto": "segment_everything"}
"""Record kinds and the public API function (``napari_sam2.<name>``) each one replays."""

PromptMap = Mapping[tuple[tuple[int, ...], int], Prompt]
"""Prompts keyed by (frame index over the image's t/z axes, object id)."""


class ProvenanceError(ValueError):
    """A record that is missing, unreadable or does not fit; the message says what to do."""


@dataclass
class ProvenanceRecord:
    """Everything that determines a labels output.

    Attributes:
        kind: "segment" (each prompted plane on its own), "propagate" (through z or t) or "auto"
            (automatic instance segmentation, no prompts).
        image: path (None for in-memory data), identity, shape, dtype, axes, axes_guessed (None, or
            the sentence saying the t/z axes were guessed from the shape); for a medical volume
            also ``medical``: spacing_mm, orientation, affine, modality and the intensity preset.
        prompts: one entry per (frame, object): frame (list of ints over the t/z axes), obj_id,
            points ([[row, col], ...]), labels (1/0), box ([row0, col0, row1, col1] or None).
        model: source (name or path as given, None if unknown), name (config), family ("sam2",
            "edgetam", "efficienttam" or "medsam2"; None for a stand-in backend), sha256 of the
            checkpoint file (None if unknown), fingerprint of the weights.
        window: the resolved intensity window [low, high] in data units.
        tiling: tile_size, overlap, max_tiles, edge_margin (resolved values; "auto": tile_size and
            overlap).
        propagation: axis, fixed, crop, max_crop, stop_after_absent; None for "segment".
            For "auto" on a stack: axis, fixed, tracker_crop, stop_after_absent, seed_frames (as
            processed) and seed_spacing; None on a plane.
        options: the other keyword arguments (axes, channel, multimask, overwrite, window as asked;
            "auto": min_area and every generator parameter under "generator"); from the API also
            ``window_rule`` and ``window_from``: which rule chose ``window`` ("asked",
            "medsam2_ct", "medsam2_percentiles", "demo_foreground", "preset", "auto") and one line
            saying why
            (:class:`~napari_sam2.engine.window_choice.WindowChoice`).
        runtime: napari_sam2, torch and numpy versions, device, threads.
        labels: shape, dtype, sha256 (see :func:`~.provenance.labels_digest`) of the result.
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

    def api_call(self) -> tuple[str, dict[str, Any]]:
        """The public API function that makes these labels, and its keyword arguments other than
        the image, prompts, model, ``out`` and ``progress`` (what replay and the script pass).

        Raises:
            ProvenanceError: an unknown ``kind``.
        """
        if self.kind not in KINDS:
            raise ProvenanceError(
                f"unknown record kind {self.kind!r}; expected one of {', '.join(map(repr, KINDS))}"
            )
        opts = self.options
        kwargs: dict[str, Any] = {
            "window": tuple(self.window),
            "axes": opts.get("axes"),
            "channel": opts.get("channel"),
        }
        if self.kind == "auto":
            kwargs.update(self.tiling)
            kwargs["min_area"] = opts.get("min_area", 0)
            kwargs.update(_renamed(self.kind, self.propagation))
            kwargs.update(opts.get("generator") or {})
            return KINDS[self.kind], kwargs
        kwargs["overwrite"] = opts.get("overwrite", False)
        if self.kind == "segment":
            kwargs.update(self.tiling)
            kwargs["multimask"] = opts.get("multimask", False)
        else:
            kwargs.update(_renamed(self.kind, self.propagation))
        return KINDS[self.kind], kwargs


_OLD_NAMES = {
    "auto": {"tracker_window": "tracker_crop"},
    "propagate": {"tracker_window": "crop", "max_window": "max_crop"},
}
"""Propagation settings as older records wrote them, before the tracker's crop got its own name."""


def _renamed(kind: str, propagation: dict[str, Any] | None) -> dict[str, Any]:
    old = _OLD_NAMES.get(kind, {})
    return {old.get(k, k): v for k, v in (propagation or {}).items()}


# ---------------------------------------------------------------------------------------------- entries
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


def image_entry(source: Any, path: str | None) -> dict[str, Any]:
    """The record's ``image``: an opened :class:`~.sources.ImageSource` and its file (or None)."""
    shape = [*source.frame_shape, *source.plane_hw] + ([3] if source.rgb else [])
    entry = {
        "path": path,
        "identity": source.identity,
        "shape": shape,
        "dtype": str(source.dtype),
        "axes": source.axes,
        "axes_guessed": getattr(source, "axes_guessed", None),
    }
    medical = getattr(source, "medical", None)
    if medical is not None:  # spacing, orientation, affine, modality and intensity preset
        entry["medical"] = medical.to_dict()
    return entry


def model_entry(model: Any, name: str | None = None) -> dict[str, Any]:
    """The record's ``model``: where it came from (``model.napari_sam2_source``, set by
    :func:`napari_sam2.load_model`), its config name (else ``name``) and weights fingerprint
    (None for a backend that is not a :class:`Sam2Model`, e.g. a test stand-in)."""
    known = getattr(model, "napari_sam2_source", None) or {"source": None, "sha256": None}
    config = getattr(model, "config", None)
    return {
        **known,
        "name": config.name if config is not None else name,
        "family": family_of(config.name) if config is not None else None,
        "fingerprint": weights_fingerprint(model) if isinstance(model, Sam2Model) else None,
    }


def runtime_entry(model: Any) -> dict[str, Any]:
    """The record's ``runtime``: versions, the model's device and torch's thread count."""
    try:
        ours = version("napari-sam2")
    except PackageNotFoundError:
        ours = "0+unknown"
    return {
        "napari_sam2": ours,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": str(getattr(model, "device", "cpu")),
        "threads": torch.get_num_threads(),
    }


def options_entry(window: Any, axes: Any, channel: Any, **more: Any) -> dict[str, Any]:
    """The record's ``options``: the window as asked (JSON-able), axes, channel and ``more``."""
    asked = window.as_tuple() if hasattr(window, "as_tuple") else window
    asked = list(asked) if isinstance(asked, (tuple, list, np.ndarray)) else asked
    return {"window_asked": asked, "axes": axes, "channel": channel, **more}
