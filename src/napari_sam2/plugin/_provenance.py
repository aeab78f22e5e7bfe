"""The widget's session as a :class:`~napari_sam2.engine.provenance.ProvenanceRecord`, for *Copy as Python*.

A record describes one call of the public API (:func:`napari_sam2.segment` or
:func:`napari_sam2.propagate`) with a prompt map; the widget's session is a sequence of typed steps
(:class:`._session.Step`). :func:`session_record` maps the steps still done (``Session.done``, not limited to the undo stack's 30) to
the call that makes the same labels, reading only their typed fields (kind, object id, axis,
frame, prompts, window), never their descriptions:

* the prompts are, for each (frame, object), those of the latest step that wrote it: a segment
  step's prompt on its plane; a propagation replaces all of its object's earlier prompts by its
  keyframes (in image pixels, as the step used them);
* the kind is "propagate" (along the axis, and with the fixed frame axes, of the latest
  propagation) if every prompted object was propagated, else "segment" (each prompted plane on its
  own);
* window = the latest label-writing step's intensity window; tiling = the widget's predictor's,
  device, thread count, model source and checksum as loaded (:func:`napari_sam2.api.load_model`
  records them).

What a record cannot say comes back as caveats, which the widget shows: steps the API has no call
for (segment everything, propagate labels, 3D-through-time, a propagation seeded from painted
labels), painting, an image that is not a file, a model that is not a name or a file. Where the
session has none of these, the script makes the widget's labels bit for bit on the same machine
(single object propagation; for several objects propagated one by one the API propagates them
together, which can differ where they touch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine import Prompt
from ..engine.provenance import (
    ProvenanceError,
    ProvenanceRecord,
    labels_digest,
    model_entry,
    prompt_entries,
    runtime_entry,
)
from ._model_picker import ModelSlot
from ._ports import ImagePicker
from ._session import Session, Step, StepKind

__all__ = ["session_record", "replayed_prompts"]

NOT_IN_SCRIPTS = (StepKind.SEGMENT_EVERYTHING, StepKind.PROPAGATE_LABELS)
"""Kinds of steps that wrote labels the script does not redo."""


def replayed_prompts(steps: list[Step]) -> dict[tuple[tuple[int, ...], int], Prompt]:
    """(frame, object id) -> the prompt that last wrote that object there, from typed steps (oldest first).

    "Next object" and "Clear prompts" take prompts off the layers but keep the labels, so the
    prompts come from the steps that wrote labels, not from the layers.
    """
    pmap: dict[tuple[tuple[int, ...], int], Prompt] = {}
    for step in steps:
        if step.kind is StepKind.PROPAGATE:  # rewrites the object along the axis
            pmap = {k: p for k, p in pmap.items() if k[1] != step.object_id}
        if step.kind in (StepKind.SEGMENT, StepKind.PROPAGATE):
            pmap.update({(tuple(f), step.object_id): p for f, p in step.prompts.items()})
    return dict(sorted(pmap.items(), key=lambda kv: (kv[0][1], kv[0][0])))


def session_record(
    session: Session, data: ImagePicker, models: ModelSlot, overwrite: bool
) -> tuple[ProvenanceRecord, list[str]]:
    """The API call that makes the widget's labels again, and what it leaves out (caveats).

    Args:
        session: its ``done`` list holds the steps still done.
        data: the picked image and the output labels.
        models: the model in use and its predictor's tiling.
        overwrite: the widget's "Overwrite other objects" switch.

    Raises:
        LayerError: no image layer. ProvenanceError: no model, or no click or box to replay.
    """
    image, geometry = data.require_image(), data.geometry()
    if models.model is None:
        raise ProvenanceError("no model yet: load one (Model > Load) and segment, then Copy as Python")
    source = data.source(image, geometry)
    fa = geometry.frame_axes
    caveats: list[str] = []
    steps = list(session.done)  # every step still done, also those past the undo stack's limit
    pmap = replayed_prompts(steps)
    if not pmap:
        raise ProvenanceError("no click or box to replay: click on an object first, then Copy as Python")

    skipped = sorted({s.kind.value for s in steps if s.kind in NOT_IN_SCRIPTS})
    if skipped:
        caveats.append(f"the script does not redo {', '.join(skipped)}")
    propagations = [s for s in steps if s.kind is StepKind.PROPAGATE]
    seeded = sorted({s.object_id for s in propagations if not s.prompts})
    if seeded:
        caveats.append(f"objects {seeded} were propagated from painted labels, which the script cannot redo")
    last = propagations[-1] if propagations else None
    axis = last.axis if last is not None else None
    objects = {s.object_id for s in propagations}
    if propagations and objects != {obj for _, obj in pmap}:
        caveats.append(
            f"the script segments each prompted slice: objects {sorted(objects)} were propagated but not every "
            "prompted object was (the API propagates all or none)"
        )
        axis = None
    propagation, tiling, options = None, {}, {}
    if axis is not None:
        fixed = {} if axis == "z+t" else last.fixed  # z+t runs through every time point and slice
        if any((s.axis, s.fixed) != (axis, fixed) for s in propagations):
            caveats.append(
                f"objects were propagated along different axes or slices; the script uses {axis} at {fixed}"
            )
        off = [k for k in pmap if any(k[0][fa.index(a)] != v for a, v in fixed.items())]
        for k in off:
            del pmap[k]
        if off:
            caveats.append(f"prompts away from {fixed} are left out (propagation runs there)")
        if len({obj for _, obj in pmap}) > 1:
            caveats.append("the script propagates all objects together; where they touch it may differ")
        propagation = {
            "axis": axis,
            "fixed": fixed,
            "crop": "auto",
            "max_crop": None,
            "stop_after_absent": None,
        }  # the widget's tracker settings (the engine's defaults)
    else:
        pred = models.predictor
        tiling = {
            "tile_size": pred.tile_size,
            "overlap": pred.overlap,
            "max_tiles": pred.max_tiles,
            "edge_margin": pred.edge_margin,
        }
        single = {len(p.points) == 1 and p.box is None for p in pmap.values()}  # decoded with 3 candidates
        options["multimask"] = single == {True}
        if len(single) > 1:
            caveats.append(
                "objects with one click and with several share one multimask setting in the script"
            )
    path = getattr(image.source, "path", None)
    if path is None:
        caveats.append("the image is not from a file: set IMAGE in the script")
    model = model_entry(models.model, models.name)
    if model["source"] is None:
        caveats.append("the model was not loaded by name or file: set MODEL in the script")
    windows = [s.window for s in steps if s.window is not None]
    window = [float(v) for v in (windows[-1] if windows else image.contrast_limits)]
    if len(set(windows)) > 1:
        caveats.append(
            f"the steps used different intensity windows {sorted(set(windows))}; the script uses {window}"
        )
    labels = data.existing_labels()
    record = ProvenanceRecord(
        kind="segment" if axis is None else "propagate",
        image={
            "path": None if path is None else str(Path(path).resolve()),
            "identity": source.identity,
            "shape": [*source.frame_shape, *source.plane_hw] + ([3] if source.rgb else []),
            "dtype": str(source.dtype),
            "axes": source.axes,
        },
        prompts=prompt_entries(pmap),
        model=model,
        window=window,
        tiling=tiling,
        propagation=propagation,
        options={
            "window_asked": window,
            "axes": geometry.axes + ("c" if geometry.rgb else ""),
            "channel": None,
            "overwrite": overwrite,
            **options,
        },
        runtime=runtime_entry(models.model),
        labels={}
        if labels is None
        else {
            "shape": [int(s) for s in labels.data.shape],
            "dtype": str(np.dtype(labels.data.dtype)),
            "sha256": labels_digest(labels.data),
        },
        extra={"made_by": "napari-sam2 widget", "steps": [s.to_dict() for s in steps], "caveats": caveats},
    )
    return record, caveats
