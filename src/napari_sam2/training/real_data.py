"""Real 3D nuclei with instance labels for training: the PlantSeg test crops, with augmentation.

The two crops in ``../shared/data/plantseg-nuclei/`` (``1135_mini`` and ``1136_mini``: (100, 100,
100) uint8 confocal nuclei with uint16 instance labels, 54 and 32 nuclei, voxels about 0.28 x 0.127
x 0.127 um) come from kreshuklab/plant-seg at commit 9d74806 (``tests/resources/data/train/``),
MIT licence, (c) EMBL / Heidelberg Collaboratory for Image Processing.

:func:`augmented_stacks` turns them into seeded training stacks for
:func:`.finetune.train`: each is a random run of slices of one crop, zoomed (scale jitter in y/x
and in z, so objects cover other sizes and other anisotropies), laid as a mosaic of independently
flipped and turned copies over a plane of ``plane`` pixels (so the model sees them at native
resolution, as the predictor does with real images of that size), and given a new intensity
mapping (gain, dark level, gamma and bit depth). The labels go through exactly the same
geometric steps (nearest-neighbour zoom), so they stay aligned with the image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from .synthetic import SyntheticStack

__all__ = ["PLANTSEG_CROPS", "RealDataError", "plantseg_dir", "load_plantseg", "augment", "augmented_stacks"]

PLANTSEG_CROPS = ("1135_mini", "1136_mini")
PLANTSEG_ENV_VAR = "NAPARI_SAM2_PLANTSEG"


class RealDataError(ValueError):
    """Real data that cannot be found or used; the message says where to put it."""


def plantseg_dir() -> Path:
    """``$NAPARI_SAM2_PLANTSEG`` if set, else the first ``shared/data/plantseg-nuclei`` found in a
    folder above the project root (CI and the build machines keep it at ``../shared/data``)."""
    override = os.environ.get(PLANTSEG_ENV_VAR, "").strip()
    if override:
        return Path(override).expanduser()
    root = Path(__file__).resolve().parents[3]
    for above in root.parents:
        if (above / "shared" / "data" / "plantseg-nuclei").is_dir():
            return above / "shared" / "data" / "plantseg-nuclei"
    return root.parent / "shared" / "data" / "plantseg-nuclei"


def load_plantseg(
    folder: str | os.PathLike | None = None, crops: tuple[str, ...] = PLANTSEG_CROPS
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """-> [(name, raw (Z, Y, X), labels (Z, Y, X) uint16)] for ``crops`` (both by default), in that order.

    Raises:
        RealDataError: no crop or an unknown one is asked for, a file is missing or raw and labels
            differ in shape.
    """
    import tifffile

    crops = tuple(crops)
    unknown = [name for name in crops if name not in PLANTSEG_CROPS]
    if unknown or not crops:
        raise RealDataError(f"PlantSeg crops {list(crops)}: give one or more of {', '.join(PLANTSEG_CROPS)}")
    folder = Path(folder).expanduser() if folder is not None else plantseg_dir()
    out = []
    for name in crops:
        raw_path, lab_path = folder / f"{name}_raw.tif", folder / f"{name}_labels.tif"
        if not (raw_path.is_file() and lab_path.is_file()):
            raise RealDataError(
                f"{raw_path.name} or {lab_path.name} is missing in {folder}; copy the PlantSeg crops there "
                f"or set {PLANTSEG_ENV_VAR} to their folder"
            )
        raw, labels = tifffile.imread(raw_path), tifffile.imread(lab_path)
        if raw.shape != labels.shape:
            raise RealDataError(f"{name}: raw {raw.shape} and labels {labels.shape} differ in shape")
        out.append((name, raw, labels.astype(np.uint16)))
    return out


def augment(
    image: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    plane: int = 256,
    slices: tuple[int, int] = (16, 28),
    zoom_yx: tuple[float, float] = (1.4, 3.6),
    zoom_z: tuple[float, float] = (1.5, 4.0),
    anisotropy: float = 0.2837 / 0.127,
) -> SyntheticStack:
    """One augmented (Z, plane, plane) stack from a (Z, Y, X) image and its labels.

    Steps, each drawn from ``rng``: a run of ``slices`` consecutive slices; zoom by ``zoom_yx`` in
    y/x and ``zoom_z`` in z (linear for the image, nearest for the labels); a mosaic of copies, each
    with its own 90-degree turn and flips, covering ``plane`` x ``plane`` (each copy's ids are kept
    apart); a random flip of z; then intensities: gamma 0.6-1.6, a new dark level and gain, stored as
    8-, 12- or 16-bit data. ``anisotropy`` is the source's slice distance in y/x pixels (PlantSeg:
    0.2837 / 0.127 um); the result's ``scale`` gives it after the zoom. Returns a
    :class:`.synthetic.SyntheticStack` with axes "zyx".
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if image.shape != labels.shape or image.ndim != 3:
        raise RealDataError(
            f"image and labels must be (Z, Y, X) of one shape, got {image.shape}, {labels.shape}"
        )
    n = int(min(rng.integers(slices[0], slices[1] + 1), image.shape[0]))
    z0 = int(rng.integers(0, image.shape[0] - n + 1))
    img = image[z0 : z0 + n].astype(np.float32)
    lab = labels[z0 : z0 + n]
    zz, zy = float(rng.uniform(*zoom_z)), float(rng.uniform(*zoom_yx))
    img = ndimage.zoom(img, (zz, zy, zy), order=1, mode="nearest", grid_mode=True)
    lab = ndimage.zoom(lab, (zz, zy, zy), order=0, mode="nearest", grid_mode=True)
    tile = img.shape[1]
    reps = -(-plane // tile)
    big_img = np.zeros((img.shape[0], reps * tile, reps * tile), np.float32)
    big_lab = np.zeros(big_img.shape, np.uint16)
    step = int(lab.max()) + 1
    for k in range(reps * reps):
        turn = int(rng.integers(4))
        t_img, t_lab = np.rot90(img, turn, (1, 2)), np.rot90(lab, turn, (1, 2))
        for axis in (1, 2):
            if rng.random() < 0.5:
                t_img, t_lab = np.flip(t_img, axis), np.flip(t_lab, axis)
        r, c = divmod(k, reps)
        rows, cols = slice(r * tile, (r + 1) * tile), slice(c * tile, (c + 1) * tile)
        big_img[:, rows, cols] = t_img
        big_lab[:, rows, cols] = np.where(t_lab > 0, t_lab.astype(np.int64) + k * step, 0)
    r0, c0 = (int(rng.integers(0, big_img.shape[i] - plane + 1)) for i in (1, 2))
    img = big_img[:, r0 : r0 + plane, c0 : c0 + plane]
    lab = big_lab[:, r0 : r0 + plane, c0 : c0 + plane]
    if rng.random() < 0.5:
        img, lab = img[::-1], lab[::-1]
    lab = _renumber(lab)
    lo, hi = float(img.min()), float(img.max())
    norm = (img - lo) / max(hi - lo, 1e-6)
    norm = norm ** float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    bits = int(rng.choice((8, 12, 16)))
    top = (1 << bits) - 1
    offset = rng.uniform(0.0, 0.1) * top
    gain = rng.uniform(0.1, 0.9) * top
    out = np.clip(np.rint(offset + gain * norm), 0, top).astype(np.uint8 if bits == 8 else np.uint16)
    z_scale = anisotropy * zy / zz  # slice distance in y/x pixels after the zoom
    return SyntheticStack(np.ascontiguousarray(out), np.ascontiguousarray(lab), "zyx", (z_scale, 1.0, 1.0))


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Ids 1..n in order of first appearance of each old id (0 stays 0)."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.uint16)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.uint16)
    return lut[labels]


def augmented_stacks(
    n: int,
    seed: int,
    folder: str | os.PathLike | None = None,
    crops: tuple[str, ...] = PLANTSEG_CROPS,
    **kwargs,
) -> list[SyntheticStack]:
    """``n`` augmented stacks (:func:`augment`), alternating between ``crops`` (both by default; one
    crop left out is a held-out fold); stack ``i`` uses ``np.random.default_rng(seed + i)`` (drawing
    again from it while a stack holds no labelled object), so the same arguments give the same stacks."""
    crops = load_plantseg(folder, crops)
    out = []
    for i in range(n):
        _, raw, labels = crops[i % len(crops)]
        rng = np.random.default_rng(seed + i)
        for _ in range(20):
            stack = augment(raw, labels, rng, **kwargs)
            if stack.n_objects:
                break
        else:
            raise RealDataError(f"20 augmented stacks of {crops[i % len(crops)][0]} held no labelled object")
        out.append(stack)
    return out
