"""Batch runs: one segment or propagate call per image, resumable, on local processes or a cluster.

:func:`plan` turns inputs (files, folders, glob patterns) into :class:`BatchJob` objects, each with
its output path and a key: a hash of everything that determines the output (image path and size,
prompts file content, model, options). TIFF and zarr images give ``<out_dir>/<stem>_labels.tif``
(or ``.zarr``); medical volumes are written as the single-file API writes them, in their own
geometry: a NIfTI (``scan.nii.gz`` or ``scan.nii``) or a DICOM series folder (``scan/``) as
``scan_labels.nii.gz`` with the input's affine, an NRRD (``scan.nrrd``, ``scan.nhdr``) as
``scan_labels.nrrd`` with its space and origin (provenance in the ``.sam2.json`` sidecar).

:func:`run_batch` skips a job whose output exists *and verifies*: its provenance carries the job's
key and the SHA-256 of the labels equals the recorded one. Outputs appear under their final name
only when complete (:func:`~.engine.provenance.write_labels`), so after an interrupted run the finished
images are skipped and the rest are computed. Any other existing output (another job's, a damaged
or hand-edited file) is never replaced unless ``force`` is given: :func:`plan` refuses it first.

Where jobs run: in this process (``workers=0``), on local processes (default; ``spawn`` start so
torch threads are safe), or on a ``dask.distributed`` cluster (``scheduler=`` an address or a
``Client``). Each worker process loads the model once and keeps it for all its jobs.

The runner drives the scripting API (:mod:`napari_sam2.api`), so it sits beside it, above the engine.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.medical import is_medical
from ..engine.provenance import (
    OutputError,
    ProvenanceError,
    guard_output,
    labels_digest,
    read_labels,
    read_record,
)
from . import core as api
from ._inputs import LOADS, resolve_model

__all__ = [
    "BatchError",
    "BatchJob",
    "BatchReport",
    "is_done",
    "output_suffix",
    "plan",
    "run_batch",
    "run_job",
]

IMAGE_SUFFIXES = (".tif", ".tiff", ".zarr")
MEDICAL_OUTPUTS = {".nii.gz": ".nii.gz", ".nii": ".nii.gz", ".nrrd": ".nrrd", ".nhdr": ".nrrd"}
"""Medical input suffix -> labels suffix (a DICOM series folder gives ``.nii.gz``)."""
INPUT_SUFFIXES = (*IMAGE_SUFFIXES, *MEDICAL_OUTPUTS)
STEM_FIELD = "{stem}"


class BatchError(ValueError):
    """Inputs or options that do not make a batch (no images, a prompts file missing)."""


@dataclass(frozen=True)
class BatchJob:
    """One image to segment or propagate.

    Attributes:
        image, prompts, out: absolute paths of the image, its prompts file and the labels to write.
        mode: "segment" or "propagate".
        model: model name or checkpoint path (None: the best model available offline).
        device: where to run ("cpu" for results that replay bit for bit).
        threads: torch threads per job (results are reproducible for a given count).
        options: further keyword arguments of the API call (window, axes, axis, ...).
    """

    image: str
    prompts: str
    out: str
    mode: str = "segment"
    model: str | None = None
    device: str = "cpu"
    threads: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Hash of what determines the output: the job and the image's and prompts' contents."""
        img, prm = Path(self.image), Path(self.prompts)
        data = {**asdict(self), "out": None}
        data["image_stat"] = _stat(img)
        data["prompts_sha256"] = hashlib.sha256(prm.read_bytes()).hexdigest() if prm.is_file() else None
        if self.model and Path(self.model).is_file():
            data["model_stat"] = _stat(Path(self.model))
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class BatchReport:
    """Outputs written, skipped as verified, and failed with their messages; per worker process
    (pid) the number of models it loaded."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    loads: dict[int, int] = field(default_factory=dict)


def _stat(path: Path) -> list[int]:
    """Size and mtime of a file, of a zarr folder's metadata files, or of a DICOM folder's files."""
    if path.is_file():
        files = [path]
    elif path.name.lower().endswith(".zarr"):
        files = sorted(path.glob("**/zarr.json")) + sorted(path.glob("**/.zarray"))
    else:
        files = sorted(p for p in path.iterdir() if p.is_file())
    return [int(v) for f in files for v in (f.stat().st_size, f.stat().st_mtime_ns)]


def _is_image(path: Path) -> bool:
    """A TIFF, zarr, NIfTI or NRRD by its name, or a folder holding a DICOM series."""
    if path.name.lower().endswith(INPUT_SUFFIXES):
        return True
    return path.is_dir() and is_medical(path)


def _expand(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    found: list[Path] = []
    for item in inputs:
        text = str(item)
        path = Path(text).expanduser()
        if any(c in text for c in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            if not matches:
                raise BatchError(f"the pattern {text!r} matches no file")
            found += matches
        elif path.is_dir() and not _is_image(path):  # a folder of images (DICOM series as subfolders)
            found += sorted(p for p in path.iterdir() if _is_image(p))
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"input not found: {path}")
    images = [p.resolve() for p in found if _is_image(p)]
    if not images:
        raise BatchError(
            f"no TIFF, zarr, NIfTI, NRRD or DICOM images among the inputs {[str(i) for i in inputs]}"
        )
    return list(dict.fromkeys(images))


def _stem(path: Path) -> str:
    """The name without its image suffix: ``scan.nii.gz`` -> ``scan``, ``cells.ome.tif`` -> ``cells``,
    a DICOM folder ``series1/`` -> ``series1``."""
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", *INPUT_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name if path.is_dir() else path.stem


def output_suffix(image: Path, suffix: str) -> str:
    """The labels suffix for ``image``: a medical volume's own (``.nii.gz`` for NIfTI and DICOM,
    ``.nrrd`` for NRRD, in its geometry), else ``suffix`` (``.tif`` or ``.zarr``)."""
    name = image.name.lower()
    for medical, out in MEDICAL_OUTPUTS.items():
        if name.endswith(medical):
            return out
    if image.is_dir() and not name.endswith(".zarr"):  # a DICOM series folder
        return ".nii.gz"
    return suffix


def plan(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    prompts: str,
    mode: str = "segment",
    model: str | None = None,
    suffix: str = ".tif",
    device: str = "cpu",
    threads: int = 1,
    options: dict[str, Any] | None = None,
    force: bool = False,
) -> list[BatchJob]:
    """One job per image. ``prompts`` is a file used for every image, or a pattern with
    ``{stem}`` (the image's name without suffix), e.g. ``"prompts/{stem}.csv"``.

    ``out_dir`` is created if needed and checked for writing here, before any work; leftovers of
    interrupted runs in it are removed (with a warning).

    Args:
        suffix: ``.tif`` or ``.zarr``, for TIFF and zarr images; medical volumes keep their
            format (:func:`output_suffix`).
        force: replace existing outputs that are not this batch's verified results.

    Raises:
        BatchError: no images, an unknown mode, or two images with the same stem.
        FileNotFoundError: an input or a prompts file does not exist.
        OutputError: ``out_dir`` cannot be created or written (the message names it), or outputs
            exist that this batch did not make (another job's, damaged, hand-edited) and ``force``
            is False; the message names them.
    """
    if mode not in ("segment", "propagate"):
        raise BatchError(f"mode must be 'segment' or 'propagate', got {mode!r}")
    out_dir = Path(out_dir).expanduser().resolve()
    model = str(Path(model).resolve()) if model is not None and Path(model).is_file() else model
    jobs, stems = [], {}
    for image in _expand(inputs):
        stem = _stem(image)
        if stem in stems:
            raise BatchError(f"{image} and {stems[stem]} would both write {stem}_labels; rename one")
        stems[stem] = image
        prm = Path(prompts.replace(STEM_FIELD, stem)).expanduser()
        if not prm.is_file():
            raise FileNotFoundError(f"prompts file not found for {image.name}: {prm}")
        out = out_dir / f"{stem}_labels{output_suffix(image, suffix)}"
        for stale in guard_output(out, force=True, create_folder=True):  # before any work
            warnings.warn(
                f"removed {stale.name}, left by an interrupted run, from {stale.parent}", stacklevel=2
            )
        jobs.append(
            BatchJob(
                str(image), str(prm.resolve()), str(out), mode, model, device, threads, dict(options or {})
            )
        )
    foreign = [Path(j.out).name for j in jobs if not force and Path(j.out).exists() and not is_done(j)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        one = len(foreign) == 1
        raise OutputError(
            f"{shown} already exist{'s' if one else ''} in {out_dir} and {'is' if one else 'are'} not this "
            f"batch's verified result{'' if one else 's'} (another job's, damaged or edited); pass --force "
            "(force=True) to replace, or choose another output folder"
        )
    return jobs


def is_done(job: BatchJob) -> bool:
    """True if the job's output exists, was made by this very job, and its labels verify."""
    out = Path(job.out)
    if not out.exists():
        return False
    try:
        record = read_record(out)
        if record.extra.get("batch_job") != job.key:
            return False
        labels = read_labels(out)
        dtype = record.labels.get("dtype")
        if dtype and str(labels.dtype) != dtype:  # NIfTI/NRRD store the smallest type that holds the ids
            labels = np.asarray(labels).astype(dtype)
        return labels_digest(labels) == record.labels.get("sha256")
    except (ProvenanceError, OSError, ValueError, KeyError, TypeError):
        return False


def run_job(job: BatchJob) -> dict[str, Any]:
    """Run one job in this process (the model is loaded once per process and reused).

    Returns {"out", "pid", "loads"} or, if the job failed, {"out", "pid", "loads", "error"}: one bad
    image must not stop the others, so every error is caught here and reported by message.
    """
    try:
        with api._threads(job.threads):
            model = resolve_model(job.model, job.device)
            call = api.segment if job.mode == "segment" else api.propagate
            result = call(job.image, job.prompts, model=model, **job.options)
        result.record.extra["batch_job"] = job.key
        Path(job.out).parent.mkdir(parents=True, exist_ok=True)
        result.save(job.out, overwrite=True)
        error = None
    except Exception as err:  # reported per job (see the docstring)
        error = f"{type(err).__name__}: {err}"
    out = {"out": job.out, "pid": os.getpid(), "loads": LOADS[0]}
    return out if error is None else {**out, "error": error}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_batch(
    jobs: Sequence[BatchJob],
    *,
    scheduler: Any = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BatchReport:
    """Run every job whose output is not done yet (see :func:`is_done`).

    Args:
        scheduler: a dask.distributed scheduler address (``"tcp://host:8786"``) or ``Client``.
        workers: without a scheduler, the number of local processes (default: CPU cores, at most
            the number of jobs); 0 runs the jobs in this process, one after another.
        progress: ``progress(jobs_finished, jobs_total)`` including skipped ones.
    """
    report = BatchReport()
    todo = []
    for job in jobs:
        if is_done(job):
            report.skipped.append(job.out)
        else:
            todo.append(job)
    total, finished = len(jobs), len(report.skipped)
    if progress is not None and finished:
        progress(finished, total)

    def collect(result: dict[str, Any]) -> None:
        nonlocal finished
        report.loads[result["pid"]] = max(report.loads.get(result["pid"], 0), result["loads"])
        if "error" in result:
            report.failed.append((result["out"], result["error"]))
        else:
            report.done.append(result["out"])
        finished += 1
        if progress is not None:
            progress(finished, total)

    if not todo:
        return report
    if scheduler is not None:
        from distributed import Client
        from distributed import as_completed as dask_completed

        client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
        try:
            futures = client.map(run_job, todo, pure=False)
            for future in dask_completed(futures):
                collect(future.result())
        finally:
            if client is not scheduler:
                client.close()
    elif workers == 0:
        for job in todo:
            collect(run_job(job))
    else:
        n = min(workers or os.cpu_count() or 1, len(todo))
        with ProcessPoolExecutor(n, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
            for future in as_completed([pool.submit(run_job, job) for job in todo]):
                collect(future.result())
    return report
