"""The widget's session as a :class:`~napari_sam2.engine.provenance.ProvenanceRecord`, for *Copy as Python*.

A record describes one call of the public API (:func:`napari_sam2.segment` or
:func:`napari_sam2.propagate`) with a prompt map; the widget's session is a sequence of clicks,
propagations and other steps. :func:`session_record` maps the session to the call that makes the
same labels:

* the prompts are every object's latest clicks and boxes (in the prompt layers, or in the undo
  history for objects finished with "Next object"), in image pixels, on the frames where they
  make a prompt (a positive click or a box), keyed (frame, object id);
* the kind is "propagate" (along the axis of the latest "propagate object" step still done) if
  every prompted object was propagated, else "segment" (each prompted plane on its own);
* window = the image layer's contrast limits, tiling = the widget's predictor's, device, thread
  count, model source and checksum as loaded (:func:`napari_sam2.api.load_model` records them).

What a record cannot say comes back as caveats, which the widget shows: steps the API has no call
for (segment everything, propagate labels, 3D-through-time), painting, an image that is not a file,
a model that is not a name or a file. Where the session has none of these, the script makes the
widget's labels bit for bit on the same machine (single object propagation; for several objects
propagated one by one the API propagates them together, which can differ where they touch).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..engine.provenance import (
    ProvenanceError,
    ProvenanceRecord,
    labels_digest,
    model_entry,
    prompt_entries,
    runtime_entry,
)
from ._layers import prompted_frames
from ._session import PromptSnapshot

if TYPE_CHECKING:
    from ._widget import Sam2Widget

__all__ = ["session_record"]

NOT_IN_SCRIPTS = ("segment everything", "propagate labels")
"""Undo-step descriptions starting with these wrote labels the script does not redo."""


def _latest_prompts(widget: Sam2Widget) -> dict[int, PromptSnapshot]:
    """Object id -> the latest snapshot of the prompt layers that has its clicks or boxes.

    "Next object" and "Clear prompts" take an object's prompts off the layers but keep its labels,
    so the prompts that made them are found in the undo history (steps still done, oldest first,
    then the layers now).
    """
    snaps = [s for step in widget.session.undo_stack for s in (step.prompts_before, step.prompts_after)]
    latest = {}
    for snap in [*snaps, widget.snapshot()]:
        if snap is not None:
            for obj in {int(i) for i in snap.point_ids} | {int(i) for i in snap.box_ids}:
                latest[obj] = snap
    return dict(sorted(latest.items()))


def session_record(widget: Sam2Widget) -> tuple[ProvenanceRecord, list[str]]:
    """The API call that makes the widget's labels again, and what it leaves out (caveats).

    Raises:
        LayerError: no image layer. ProvenanceError: no model, or no click or box to replay.
    """
    image, geometry = widget.data.require_image(), widget.geometry()
    if widget.model is None:
        raise ProvenanceError("no model yet: load one (Model > Load) and segment, then Copy as Python")
    source = widget.data.source(image, geometry)
    fa, frame = geometry.frame_axes, widget.current_frame()
    caveats: list[str] = []
    pmap = {}
    for obj, snap in _latest_prompts(widget).items():
        for f, prompt in prompted_frames(*widget.prompts.object_prompts(obj, snap), len(fa)).items():
            pmap[(f, obj)] = prompt
    if not pmap:
        raise ProvenanceError("no click or box to replay: click on an object first, then Copy as Python")

    steps = [s.description for s in widget.session.undo_stack]
    skipped = sorted({d for d in steps if d.startswith(NOT_IN_SCRIPTS)})
    if skipped:
        caveats.append(f"the script does not redo {', '.join(skipped)}")
    propagated = [d for d in steps if d.startswith("propagate object")]  # "propagate object 3 along z"
    axis = propagated[-1].rsplit(" along ", 1)[-1] if propagated else None
    objects = {int(d.split()[2]) for d in propagated}
    if axis == "z+t":
        caveats.append("3D propagation through time is not in the script (it segments each prompted slice)")
        axis = None
    elif propagated and objects != {obj for _, obj in pmap}:
        caveats.append(
            f"the script segments each prompted slice: objects {sorted(objects)} were propagated but not every "
            "prompted object was (the API propagates all or none)"
        )
        axis = None
    propagation, tiling, options = None, {}, {}
    if axis is not None:
        fixed = {a: frame[i] for i, a in enumerate(fa) if a != axis}
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
        pred = widget.predictor
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
    model = model_entry(widget.model, widget.model_name)
    if model["source"] is None:
        caveats.append("the model was not loaded by name or file: set MODEL in the script")
    window = [float(v) for v in image.contrast_limits]
    labels = widget.data.existing_labels()
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
            "overwrite": widget.overwrite,
            **options,
        },
        runtime=runtime_entry(widget.model),
        labels={}
        if labels is None
        else {
            "shape": [int(s) for s in labels.data.shape],
            "dtype": str(np.dtype(labels.data.dtype)),
            "sha256": labels_digest(labels.data),
        },
        extra={"made_by": "napari-sam2 widget", "steps": steps, "caveats": caveats},
    )
    return record, caveats
