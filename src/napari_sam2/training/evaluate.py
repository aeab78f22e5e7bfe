"""Honest accuracy figures for a SAM2 model on images with instance labels.

For every object of a labelled plane, volume or time series, :func:`evaluate` asks the model the
questions a user asks, with prompts computed from the truth, never tuned per object:

* **1-click IoU.** The frame (z-slice or time point) where the object has the most pixels (ties:
  the one nearest the middle of its range). On it, one positive click at the object's interior
  point farthest from its boundary (maximum of the Euclidean distance transform; the image border
  counts as boundary; ties: the maximum nearest to the maxima's mean). The predictor returns three
  candidate masks (``multimask=True``); the one with the highest *predicted* IoU is kept -- the
  rule an interactive tool applies without knowing the truth. The score is the IoU of that mask
  with the object on that frame.
* **Box IoU.** The object's tight bounding box on the same frame, corners on the outermost object
  pixels (row0, col0, row1, col1 inclusive), one mask (``multimask=False``; a box is not ambiguous).
* **Propagation IoU** (stacks only). The same click, then the :class:`~.tracker.Tracker` runs from
  that frame to both ends of the stack. ``volume_iou`` is the IoU of the predicted and true volumes
  over the whole stack (every false positive far from the object counts); ``slice_iou`` is the mean
  per-frame IoU over the frames where the truth or the prediction is non-empty.

Each object is tracked on its own (a fresh tracker per object), as a user segments one object at a
time; images are windowed once for the whole stack by the rule the plugin and the API use
(:func:`~napari_sam2.engine.window_choice.choose_window`: the model's own convention -- the demo
model's foreground window, MedSAM2's percentiles --, else robust percentiles), and the model runs
in its own dtype. Planes larger than the model input are tiled at native resolution by the image
predictor, as in the plugin; the tracker sees each frame resized to the model input. Objects are
taken in ascending id order (``max_objects`` keeps the first ones).

The datasets (generated, cells3d's nuclei, dsb2018, files) are in :mod:`.datasets`. Command line::

    napari-sam2 evaluate --model sam2.1_hiera_tiny --data generated nuclei
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy import ndimage

from ..engine.frames import FrameSequence
from ..engine.intensity import IntensityWindow
from ..engine.predictor import ImagePredictor
from ..engine.prompts import Prompt
from ..engine.sources import open_image
from ..engine.tracker import Tracker
from ..engine.window_choice import choose_window

__all__ = [
    "EvaluationError",
    "ObjectScore",
    "EvaluationReport",
    "evaluate",
    "iou",
    "click_point",
    "bounding_box",
    "largest_frame",
    "summary_table",
]

Progress = Callable[[int, int], None]


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated (shapes, axes, no objects); the message says what to pass."""


# ---------------------------------------------------------------------------------------------- metrics


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape; 1.0 when both are empty."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise EvaluationError(f"masks differ in shape: {pred.shape} vs {truth.shape}")
    union = np.count_nonzero(pred | truth)
    return 1.0 if union == 0 else np.count_nonzero(pred & truth) / union


def click_point(mask: np.ndarray) -> tuple[int, int]:
    """The (row, col) of a 2D mask's interior point farthest from its boundary.

    The distance transform treats everything outside the mask, including beyond the image border,
    as boundary. Among equally deep pixels the one nearest to their mean position wins, so a
    ridge gives its middle.

    Raises:
        EvaluationError: the mask is empty or not 2D.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or not mask.any():
        raise EvaluationError(
            f"click_point needs a non-empty 2D mask, got shape {mask.shape} with {mask.sum()} pixels"
        )
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    best = np.argwhere(depth == depth.max())
    pick = best[np.argmin(((best - best.mean(axis=0)) ** 2).sum(axis=1))]
    return int(pick[0]), int(pick[1])


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of a non-empty 2D mask, inclusive (the outermost object pixels)."""
    rows, cols = np.nonzero(np.asarray(mask, dtype=bool))
    if not rows.size:
        raise EvaluationError("bounding_box needs a non-empty mask")
    return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())


def largest_frame(areas: Sequence[int] | np.ndarray) -> int:
    """Index of the largest of per-frame areas; ties go to the one nearest the middle of the
    frames where the object is present."""
    areas = np.asarray(areas)
    present = np.nonzero(areas)[0]
    if not present.size:
        raise EvaluationError("the object is empty on every frame")
    middle = (present[0] + present[-1]) / 2
    best = np.nonzero(areas == areas.max())[0]
    return int(best[np.argmin(np.abs(best - middle))])


# ---------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class ObjectScore:
    """One object's results.

    Attributes:
        label: the object's id in the labels.
        frame: the frame (z or t index; 0 for a 2D image) clicked on, where the object is largest.
        area: the object's pixels on that frame.
        click: the (row, col) clicked.
        click_iou: IoU of the 1-click mask with the object on ``frame``.
        click_score: the model's predicted IoU of that mask.
        box_iou: IoU of the box-prompt mask on ``frame``.
        volume_iou: IoU of the propagated volume with the object's volume (None: not propagated).
        slice_iou: mean per-frame IoU over frames where truth or prediction is non-empty (None: not
            propagated).
        frames: number of frames that contain the object.
    """

    label: int
    frame: int
    area: int
    click: tuple[int, int]
    click_iou: float
    click_score: float
    box_iou: float
    volume_iou: float | None = None
    slice_iou: float | None = None
    frames: int = 1


_METRICS = ("click_iou", "box_iou", "volume_iou", "slice_iou")
_HEADERS = {
    "click_iou": "1-click IoU",
    "box_iou": "box IoU",
    "volume_iou": "3D IoU",
    "slice_iou": "slice IoU",
}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@dataclass
class EvaluationReport:
    """Per-object scores of one model on one dataset, and their means.

    Attributes:
        rows: one :class:`ObjectScore` per evaluated object, in ascending id order.
        model: the model's name. data: the dataset's name. axes, shape: of the image.
        seconds: wall time of the evaluation.
    """

    rows: list[ObjectScore]
    model: str = ""
    data: str = ""
    axes: str = ""
    shape: tuple[int, ...] = ()
    seconds: float = 0.0

    def mean(self, metric: str) -> float | None:
        """Mean of ``metric`` ("click_iou", "box_iou", "volume_iou", "slice_iou" or "click_score")
        over the objects that have it; None if none has it."""
        if metric not in (*_METRICS, "click_score"):
            raise EvaluationError(f"unknown metric {metric!r}; metrics: {', '.join(_METRICS)}, click_score")
        values = [getattr(r, metric) for r in self.rows if getattr(r, metric) is not None]
        return float(np.mean(values)) if values else None

    def means(self) -> dict[str, float | None]:
        """{metric: mean} for the four IoU metrics."""
        return {m: self.mean(m) for m in _METRICS}

    def as_markdown(self, per_object: bool = True) -> str:
        """A Markdown block: a title line, then one row per object (if ``per_object``) and the means."""
        title = (
            f"**{self.data or 'data'}** ({'x'.join(map(str, self.shape))} {self.axes}), model "
            f"**{self.model or 'model'}**: {len(self.rows)} objects, {self.seconds:.1f} s"
        )
        head = ["object", "frame", "area", "click (row, col)", "pred. IoU", *(_HEADERS[m] for m in _METRICS)]
        lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        if per_object:
            for r in self.rows:
                cells = [
                    str(r.label),
                    str(r.frame),
                    str(r.area),
                    f"({r.click[0]}, {r.click[1]})",
                    f"{r.click_score:.3f}",
                ]
                cells += [_fmt(getattr(r, m)) for m in _METRICS]
                lines.append("| " + " | ".join(cells) + " |")
        means = self.means()
        lines.append("| **mean** | | | | | " + " | ".join(f"**{_fmt(means[m])}**" for m in _METRICS) + " |")
        return "\n".join(lines)


def summary_table(reports: Sequence[EvaluationReport]) -> str:
    """One Markdown row per report: model, data, objects, the four mean IoUs, seconds."""
    head = ["model", "data", "objects", *(_HEADERS[m] for m in _METRICS), "seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rep in reports:
        means = rep.means()
        cells = [
            rep.model,
            rep.data,
            str(len(rep.rows)),
            *(_fmt(means[m]) for m in _METRICS),
            f"{rep.seconds:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- evaluation


def _model_name(model) -> str:
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "name", None):
        return str(config.name)
    return str(getattr(model, "model_id", type(model).__name__))


def _check_inputs(image, labels: np.ndarray, axes: str, max_objects: int | None) -> None:
    if axes not in ("yx", "zyx", "tyx"):
        raise EvaluationError(f"axes must be 'yx', 'zyx' or 'tyx', got {axes!r}")
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) != len(axes):
        hint = {2: "'yx'", 3: "'zyx' or 'tyx'"}.get(len(shape), "a 2D or 3D grayscale image")
        raise EvaluationError(f"the image has shape {shape} but axes={axes!r}; pass axes={hint}")
    if labels.shape != shape:
        raise EvaluationError(
            f"labels have shape {labels.shape} but the image has shape {shape}; give one label per pixel"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise EvaluationError(f"labels must be integers (0 = background), got dtype {labels.dtype}")
    if labels.dtype != bool and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise EvaluationError("labels must be >= 0 (0 = background, objects > 0)")
    if max_objects is not None and (
        isinstance(max_objects, bool) or not isinstance(max_objects, int) or max_objects < 1
    ):
        raise EvaluationError(f"max_objects must be a positive integer or None, got {max_objects!r}")


@torch.inference_mode()
def evaluate(
    model,
    image,
    labels: np.ndarray,
    *,
    axes: str = "zyx",
    max_objects: int | None = None,
    propagate: bool = True,
    progress: Progress | None = None,
    window: IntensityWindow | tuple[float, float] | str | None = None,
    data_name: str = "",
) -> EvaluationReport:
    """Score a SAM2 model on every labelled object (see the module docstring for the protocol).

    Args:
        model: a :class:`~napari_sam2.model.Sam2Model` (on its device, in eval mode). Any
            predictor :class:`~.predictor.Backend` works with ``propagate=False``.
        image: (H, W), (Z, H, W) or (T, H, W) grayscale array (numpy, dask, zarr), any real dtype.
        labels: integer array of the image's shape, 0 = background, one id per object.
        axes: "yx", "zyx" or "tyx"; the first axis of a stack is the one propagated along.
        max_objects: evaluate only the first objects in ascending id order.
        propagate: also run the tracker through the stack (ignored for 2D images).
        progress: ``progress(done, total)`` after each object's prompts and each tracked frame.
        window: intensity window for the whole image (default: the model's convention, else robust
            percentiles, as the plugin and the API choose it).
        data_name: the dataset's name, for the report.

    Raises:
        EvaluationError: mismatched shapes or axes, non-integer labels, or no object in the labels.
    """
    labels = np.asarray(labels)
    _check_inputs(image, labels, axes, max_objects)
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if not ids.size:
        raise EvaluationError("the labels contain no object (all 0); give labels with objects > 0")
    if max_objects is not None:
        ids = ids[:max_objects]
    start = time.perf_counter()
    stack = labels if labels.ndim == 3 else labels[None]
    propagate = propagate and labels.ndim == 3
    source = open_image(image, axes=axes)
    win = choose_window(window, model=model, geometry=None, sample=source.sample_values).window
    predictor = ImagePredictor(model)
    frames = None
    if propagate:
        size = model.config.image_size if hasattr(model, "config") else model.image_size
        frames = FrameSequence(source, axis=axes[0], window=win, image_size=size)
    total = len(ids) * (1 + (stack.shape[0] if propagate else 0))
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    rows = []
    for obj_id in ids:
        box = _bbox(stack, obj_id)
        areas = np.count_nonzero(stack[box] == obj_id, axis=(1, 2))
        frame = box[0].start + largest_frame(areas)
        truth = stack[frame] == obj_id
        click = click_point(truth)
        predictor.set_image(source, frame=(frame,) if labels.ndim == 3 else (), window=win)
        pred = predictor.predict(Prompt(points=[click], labels=[1]), multimask=True)
        best = pred.best
        boxed = predictor.predict(Prompt(box=bounding_box(truth)), multimask=False)
        score = ObjectScore(
            label=int(obj_id),
            frame=int(frame),
            area=int(truth.sum()),
            click=click,
            click_iou=iou(pred.full(best), truth),
            click_score=float(pred.scores[best]),
            box_iou=iou(boxed.full(0), truth),
            frames=int(np.count_nonzero(areas)),
        )
        step()
        if propagate:
            vol, per_slice = _propagate(model, frames, stack, obj_id, frame, click, step)
            score = replace(score, volume_iou=vol, slice_iou=per_slice)
        rows.append(score)
    if frames is not None:
        frames.close()
    return EvaluationReport(
        rows,
        model=_model_name(model),
        data=data_name,
        axes=axes,
        shape=tuple(labels.shape),
        seconds=time.perf_counter() - start,
    )


def _bbox(stack: np.ndarray, obj_id) -> tuple[slice, slice, slice]:
    """Bounding slices of one id in a (F, H, W) stack."""
    where = stack == obj_id
    out = []
    for axis in range(3):
        hit = np.nonzero(where.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def _propagate(
    model, frames: FrameSequence, stack: np.ndarray, obj_id, frame: int, click: tuple[int, int], step
) -> tuple[float, float]:
    """Click on ``frame``, track to both ends -> (volume IoU, mean per-slice IoU)."""
    tracker = Tracker(model, frames=frames, num_frames=len(frames), frame_hw=frames.frame_hw)
    tracker.add_prompt(frame, 1, Prompt(points=[click], labels=[1]))
    inter = union = 0
    per_slice = []
    seen: set[int] = set()
    for reverse in (False, True):
        for f, logits in tracker.propagate(frame, reverse=reverse):
            if f in seen:  # the clicked frame comes out of both passes
                continue
            seen.add(f)
            truth = stack[f] == obj_id
            pred = (logits[1] > 0).cpu().numpy() if 1 in logits else np.zeros_like(truth)
            i, u = np.count_nonzero(pred & truth), np.count_nonzero(pred | truth)
            inter, union = inter + i, union + u
            if u:
                per_slice.append(i / u)
            step()
    return (inter / union if union else 1.0), (float(np.mean(per_slice)) if per_slice else 1.0)
