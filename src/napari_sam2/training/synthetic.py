"""Synthetic fluorescence-microscopy images with instance labels, seeded and reproducible.

Three generators, each returning a :class:`SyntheticStack` (image, labels, axes):

* :func:`nuclei_2d`: a (H, W) plane of nuclei (``kind="nuclei"``) or of larger cells with bright
  cytoplasm and darker borders (``kind="cells"``).
* :func:`nuclei_3d`: a (Z, H, W) volume of ellipsoidal nuclei (or cells) spanning several slices.
* :func:`moving_blobs`: a (T, H, W) time series of nuclei that move smoothly, deform a little, and
  (optionally) appear after the first frame or vanish before the last.

How an image is made (all lengths in pixels of the y/x grid; z is stretched by ``z_scale``):

1. *Objects.* Each object is an ellipse/ellipsoid with random semi-axes inside ``radius``, a random
   orientation, and an irregular outline: its radius in direction ``u`` is multiplied by
   ``1 + sum_k a_k cos(f_k pi (u . n_k) + phi_k)`` (a few smooth random lobes). Inside, the
   brightness is the object's own level (0.6-1.0, varies per object) times a slight dome and a
   texture of random plane waves fixed to the object (so it moves and turns with it).
2. *Placement.* Objects never overlap in the labels: each voxel carries one id. Separate objects keep
   a gap of at least 2 pixels. A ``touching`` fraction of the objects is placed against an earlier
   one so that the two overlap a little; the shared voxels go to the object whose centre is nearer
   in its own normalised units, which leaves a flat shared border (the two labels are 4-adjacent).
   Each label is a single connected piece (stray fragments are dropped). In :func:`moving_blobs`
   objects start apart and turn back rather than run into each other, but one may appear on top
   of another: where two overlap, the object with the higher id is nearer to the viewer and wins
   the shared pixels, in the labels and in the image.
3. *Cells.* ``kind="cells"`` uses larger, more irregular objects that overlap more deeply where
   they touch (longer shared borders) and a uniform cytoplasm that darkens towards every border,
   including the border between two touching cells.
4. *Optics and camera.* The object signal is blurred with a Gaussian (``blur`` sigma; in z twice as
   wide in physical units, like a widefield PSF), added to a smooth uneven background (a gradient, a
   vignette and low-frequency mottling, mean level ``background``), dimmed with depth (3D) or by
   bleaching (time), then Poisson shot noise and Gaussian read noise are added (``noise`` is the
   relative noise at full object brightness), and the result is scaled to the dtype: 16-bit images
   span roughly 400..50,000 counts, 8-bit ones 6..240.

Every function takes ``seed`` and uses only ``np.random.default_rng(seed)``: the same arguments give
the same arrays on every run (with the same numpy and scipy).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries

__all__ = [
    "SyntheticError",
    "SyntheticStack",
    "nuclei_2d",
    "nuclei_3d",
    "moving_blobs",
    "sample_nuclei_3d",
    "MicroscopyLook",
    "random_look",
    "microscopy_2d",
    "microscopy_3d",
]

_GAP = 2  # pixels between objects that do not touch
_TOUCH_OVERLAP = {"nuclei": 0.82, "cells": 0.7}  # centre distance / sum of extents for touching pairs
_KEEP = 0.6  # every object keeps at least this fraction of its area as placed
_MAX_CONTACTS = 2  # an object is chosen as the neighbour of at most this many touching objects
_ATTEMPTS = 300
_OFFSET = {np.dtype(np.uint8): 6.0, np.dtype(np.uint16): 400.0}  # camera dark level in counts
_GAIN = {np.dtype(np.uint8): 180.0, np.dtype(np.uint16): 38000.0}  # counts per unit intensity
_DEFAULT_RADIUS = {"nuclei": (10.0, 22.0), "cells": (18.0, 34.0)}


class SyntheticError(ValueError):
    """Parameters that cannot make an image; the message says what to pass instead."""


@dataclass(frozen=True)
class SyntheticStack:
    """A synthetic image and its instance labels.

    Attributes:
        image: (H, W), (Z, H, W) or (T, H, W); uint8 or uint16.
        labels: same shape as ``image``, uint16; 0 is background, objects are 1..n.
        axes: "yx", "zyx" or "tyx".
        scale: pixel size per axis relative to y/x, e.g. ``(2.0, 1.0, 1.0)`` for z slices twice as far
            apart as pixels (napari's layer ``scale``).
    """

    image: np.ndarray
    labels: np.ndarray
    axes: str
    scale: tuple[float, ...] = ()

    @property
    def n_objects(self) -> int:
        """Number of distinct object ids in ``labels``."""
        return int(np.count_nonzero(np.bincount(self.labels.ravel())[1:]))


# ---------------------------------------------------------------------------------------------- checks


def _check_shape(shape, ndim: int, names: str) -> tuple[int, ...]:
    try:
        out = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise SyntheticError(f"shape must be {ndim} integers ({names}), got {shape!r}") from None
    if len(out) != ndim:
        raise SyntheticError(f"shape must have {ndim} dimensions ({names}), got {shape!r}")
    if min(out) < 1:
        raise SyntheticError(f"every size in shape must be >= 1, got {shape!r}")
    return out


def _check_range(name: str, value, low: float, *, strict: bool) -> tuple[float, float]:
    """A (min, max) pair (or one number for both) with low < (or <=) min <= max."""
    try:
        pair = (float(value), float(value)) if np.ndim(value) == 0 else tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise SyntheticError(f"{name} must be a number or a (min, max) pair, got {value!r}") from None
    if len(pair) != 2 or not all(math.isfinite(v) for v in pair):
        raise SyntheticError(f"{name} must be a (min, max) pair of finite numbers, got {value!r}")
    lo, hi = pair
    if (lo <= low if strict else lo < low) or lo > hi:
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise SyntheticError(f"{name} must satisfy {bound} and min <= max, got {value!r}; give (min, max)")
    return lo, hi


def _check_number(
    name: str, value, low: float, high: float | None = None, *, high_open: bool = False
) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SyntheticError(f"{name} must be a number, got {value!r}") from None
    too_high = high is not None and (v >= high if high_open else v > high)
    if not math.isfinite(v) or v < low or too_high:
        upper = "" if high is None else (f" and < {high:g}" if high_open else f" and <= {high:g}")
        raise SyntheticError(f"{name} must be >= {low:g}{upper}, got {value!r}")
    return v


def _check_common(n_objects, seed, dtype, kind: str = "nuclei") -> tuple[int, np.random.Generator, np.dtype]:
    if isinstance(n_objects, bool):
        raise SyntheticError(f"n_objects must be an integer >= 0, got {n_objects!r}")
    try:
        n = operator.index(n_objects)
    except TypeError:
        raise SyntheticError(f"n_objects must be an integer >= 0, got {n_objects!r}") from None
    if not 0 <= n <= np.iinfo(np.uint16).max:
        raise SyntheticError(f"n_objects must be an integer >= 0 (at most 65535), got {n_objects!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise SyntheticError(f"seed must be an integer >= 0 (or None for a fresh random image), got {seed!r}")
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in _GAIN:
        raise SyntheticError(f"dtype must be 'uint8' or 'uint16', got {dtype!r}")
    if kind not in _DEFAULT_RADIUS:
        raise SyntheticError(f"kind must be 'nuclei' or 'cells', got {kind!r}")
    return n, np.random.default_rng(seed), dt


def _check_fits(shape: tuple[int, ...], spacing: np.ndarray, r_max: float, names: str) -> None:
    """Every object must fit inside the image with its outline's wiggle room."""
    need = [math.ceil(2 * r_max * 1.25 / s) + 2 for s in spacing]
    if any(n > s for n, s in zip(need, shape)):
        sizes = ", ".join(f"{a} >= {n}" for a, n in zip(names.split(", "), need))
        raise SyntheticError(
            f"shape {shape} is too small for objects of radius up to {r_max:g}: it needs {sizes}; "
            "pass a larger shape or a smaller radius"
        )


# ---------------------------------------------------------------------------------------------- objects


@dataclass
class _Blob:
    """One object's geometry and appearance (lengths in y/x pixels, centre in physical units)."""

    centre: np.ndarray  # (D,)
    semi: np.ndarray  # (D,) semi-axes
    rot: np.ndarray  # (D, D) rows are the object's axes in image coordinates
    lobe_dir: np.ndarray  # (K, D) unit vectors
    lobe_amp: np.ndarray  # (K,)
    lobe_freq: np.ndarray  # (K,)
    lobe_phase: np.ndarray  # (K,)
    tex_dir: np.ndarray  # (M, D) unit vectors
    tex_wavelength: np.ndarray  # (M,)
    tex_phase: np.ndarray  # (M,)
    tex_amp: float
    brightness: float

    def half_extent(self) -> np.ndarray:
        """Half the bounding box along each image axis (physical units), outline wiggle included."""
        ext = np.sqrt(((self.rot * self.semi[:, None]) ** 2).sum(axis=0))
        return ext * (1.0 + self.lobe_amp.sum())


def _unit_vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.normal(size=(n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    if d == 2:
        a = rng.uniform(0, np.pi)
        return np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    w, x, y, z = _unit_vectors(rng, 1, 4)[0]  # a uniformly random unit quaternion
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _random_blob(
    rng: np.random.Generator,
    d: int,
    radius: tuple[float, float],
    kind: str,
    look: MicroscopyLook | None = None,
) -> _Blob:
    r = rng.uniform(*radius)
    semi = np.clip(r * rng.uniform(0.65, 1.0, size=d), radius[0], radius[1])
    semi[0] = r  # one axis has the drawn radius, the others are up to a third shorter
    k = 5 if kind == "cells" else 4
    amp = rng.uniform(0.04, 0.08, size=k) if kind == "cells" else rng.uniform(0.015, 0.045, size=k)
    m = 6
    return _Blob(
        centre=np.zeros(d),
        semi=rng.permutation(semi),
        rot=_rotation(rng, d),
        lobe_dir=_unit_vectors(rng, k, d),
        lobe_amp=amp,
        lobe_freq=rng.uniform(1.0, 3.0, size=k),
        lobe_phase=rng.uniform(0, 2 * np.pi, size=k),
        tex_dir=_unit_vectors(rng, m, d),
        tex_wavelength=rng.uniform(3.0, 8.0, size=m),
        tex_phase=rng.uniform(0, 2 * np.pi, size=m),
        tex_amp=(0.06 if kind == "cells" else 0.10) if look is None else look.texture,
        brightness=float(rng.uniform(*((0.6, 1.0) if look is None else look.brightness))),
    )


def _render(
    blob: _Blob, shape: tuple[int, ...], spacing: np.ndarray, phase_shift: float = 0.0, pad: int = 0
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, np.ndarray] | None:
    """The object in its bounding box (grown by ``pad`` pixels).

    Returns (slices of the image, inside (bool), depth s = normalised distance from the centre, 0 at
    the centre and 1 on the outline, appearance (float32 intensity inside)), or None when the box
    lies outside the image.
    """
    half = blob.half_extent() / spacing + 1 + pad
    lo = np.maximum(np.floor(blob.centre / spacing - half), 0).astype(int)
    hi = np.minimum(np.ceil(blob.centre / spacing + half) + 1, shape).astype(int)
    if np.any(hi <= lo):
        return None
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    grids = np.meshgrid(*[np.arange(a, b) * s for a, b, s in zip(lo, hi, spacing)], indexing="ij")
    p = np.stack(grids, axis=-1) - blob.centre  # (..., D) physical offsets from the centre
    local = p @ blob.rot.T  # (..., D) along the object's axes
    q = local / blob.semi
    d = np.linalg.norm(q, axis=-1)
    u = q / np.maximum(d, 1e-9)[..., None]
    lobes = np.cos(blob.lobe_freq * np.pi * (u @ blob.lobe_dir.T) + blob.lobe_phase + phase_shift)
    s = d / (1.0 + lobes @ blob.lobe_amp)
    inside = s < 1.0
    waves = np.cos(2 * np.pi * (local @ blob.tex_dir.T) / blob.tex_wavelength + blob.tex_phase)
    texture = 1.0 + blob.tex_amp * waves.sum(axis=-1) / math.sqrt(len(blob.tex_phase) / 2)
    dome = 0.88 + 0.12 * (1.0 - np.minimum(s, 1.0) ** 2)
    return sl, inside, s.astype(np.float32), (blob.brightness * dome * texture).astype(np.float32)


def _fits(blob: _Blob, shape: tuple[int, ...], spacing: np.ndarray) -> bool:
    half = blob.half_extent() + spacing  # one pixel of margin
    size = np.asarray(shape) * spacing
    return bool(np.all(blob.centre - half >= 0) and np.all(blob.centre + half <= size - spacing))


def _random_direction(rng: np.random.Generator, d: int) -> np.ndarray:
    v = rng.normal(size=d)
    if d == 3:
        v[0] *= 0.3  # neighbours in a volume sit mostly side by side, so the contact shows in slices
    return v / np.linalg.norm(v)


def _extent_along(blob: _Blob, u: np.ndarray) -> float:
    """Distance from the centre to the (smooth) ellipsoid's surface along unit vector ``u``."""
    q = (blob.rot @ u) / blob.semi
    return float(1.0 / np.linalg.norm(q))


def _place_static(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: np.ndarray,
    n: int,
    radius: tuple[float, float],
    touching: float,
    kind: str,
    appearance: MicroscopyLook | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Place ``n`` non-overlapping objects -> (labels uint16, object signal float32)."""
    d = len(shape)
    labels = np.zeros(shape, dtype=np.uint16)
    depth = np.full(shape, np.inf, dtype=np.float32)  # normalised depth of the owning object
    signal = np.zeros(shape, dtype=np.float32)
    area = np.zeros(n + 1, dtype=np.int64)  # current voxel count per id
    full_area = np.zeros(n + 1, dtype=np.int64)  # voxel count when placed
    contacts = np.zeros(n + 1, dtype=np.int64)  # times chosen as a neighbour
    blobs: list[_Blob] = []
    n_touch = round(touching * n) if n > 1 else 0
    touches = (
        set(rng.choice(np.arange(1, n), size=min(n_touch, n - 1), replace=False).tolist())
        if n_touch
        else set()
    )
    size = np.asarray(shape) * spacing
    cross = ndimage.generate_binary_structure(d, 1)
    for i in range(n):
        obj_id = i + 1
        for _ in range(_ATTEMPTS):
            blob = _random_blob(rng, d, radius, kind, appearance)
            neighbour = None
            free = np.nonzero(contacts[1 : len(blobs) + 1] < _MAX_CONTACTS)[0]
            if i in touches and free.size:
                neighbour = int(rng.choice(free))
                u = _random_direction(rng, d)
                nb = blobs[neighbour]
                reach = (_extent_along(nb, u) + _extent_along(blob, -u)) * _TOUCH_OVERLAP[kind]
                blob.centre = nb.centre + u * reach
            else:
                half = blob.half_extent() + spacing
                if np.any(2 * half >= size):
                    continue
                blob.centre = rng.uniform(half, size - half)
            if not _fits(blob, shape, spacing):
                continue
            rendered = _render(blob, shape, spacing, pad=_GAP)
            if rendered is None:
                continue
            sl, inside, s, look = rendered
            here = labels[sl]
            full = int(inside.sum())
            if full == 0:
                continue
            if neighbour is None:
                grown = ndimage.binary_dilation(inside, iterations=_GAP)
                if np.any(here[grown]):
                    continue
                claim = inside
            else:
                claim = inside & (s < depth[sl])
                lost = np.bincount(here[claim], minlength=n + 1)
                lost[0] = 0
                others = np.nonzero(lost)[0]
                if claim.sum() < _KEEP * full or np.any(
                    area[others] - lost[others] < _KEEP * full_area[others]
                ):
                    continue
                ring = ndimage.binary_dilation(claim, structure=cross) & ~claim
                if not np.any(here[ring] == neighbour + 1):
                    continue
                area[others] -= lost[others]
                contacts[neighbour + 1] += 1
            here[claim] = obj_id
            depth[sl][claim] = s[claim]
            signal[sl][claim] = look[claim]
            area[obj_id] = full_area[obj_id] = int(claim.sum())
            blobs.append(blob)
            break
        else:
            raise SyntheticError(
                f"could place only {i} of {n} objects of radius {radius[0]:g}-{radius[1]:g} in shape {shape}; "
                "pass fewer n_objects, a smaller radius or a larger shape"
            )
    _keep_largest_pieces(labels, signal)
    return labels, signal


def _keep_largest_pieces(labels: np.ndarray, signal: np.ndarray) -> None:
    """Drop every fragment of a label but its largest connected piece (in place)."""
    for obj_id, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        mask = labels[box] == obj_id
        pieces, count = ndimage.label(mask)
        if count > 1:
            sizes = np.bincount(pieces.ravel())
            sizes[0] = 0
            stray = mask & (pieces != np.argmax(sizes))
            labels[box][stray] = 0
            signal[box][stray] = 0.0


def _darken_borders(labels: np.ndarray, signal: np.ndarray, spacing: np.ndarray, width: float = 3.0) -> None:
    """Cells: cytoplasm falls to about half its brightness on every border (in place)."""
    edge = find_boundaries(labels, connectivity=1, mode="inner")
    dist = ndimage.distance_transform_edt(~edge, sampling=spacing)
    signal *= (0.45 + 0.55 * np.clip(dist / width, 0.0, 1.0)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- imaging


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int = 4) -> np.ndarray:
    """A smooth random field of unit-ish amplitude over a plane (bicubic zoom of a coarse grid)."""
    coarse = rng.normal(size=(cells + 1, cells + 1))
    zoom = ((shape[0] - 1) / cells + 1e-9, (shape[1] - 1) / cells + 1e-9)
    field = ndimage.zoom(coarse, zoom, order=3, mode="nearest", grid_mode=False)
    return field[: shape[0], : shape[1]]


def _background(rng: np.random.Generator, hw: tuple[int, int], level: float) -> np.ndarray:
    """Uneven illumination over one plane: a linear gradient, a vignette and mottling; mean ~``level``."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, hw[0]), np.linspace(-1, 1, hw[1]), indexing="ij")
    a = rng.uniform(0, 2 * np.pi)
    gradient = 1.0 + 0.25 * (np.cos(a) * yy + np.sin(a) * xx)
    cy, cx = rng.uniform(-0.3, 0.3, size=2)
    vignette = 1.0 - 0.1 * ((yy - cy) ** 2 + (xx - cx) ** 2)
    mottle = 1.0 + 0.08 * _smooth_noise(rng, hw)
    field = gradient * vignette * mottle
    return (level * field / field.mean()).astype(np.float32)


def _finish(
    rng: np.random.Generator,
    signal: np.ndarray,
    dtype: np.dtype,
    *,
    blur: tuple[float, ...],
    noise: float,
    background: float,
    falloff: np.ndarray | None,
) -> np.ndarray:
    """Blur, background, falloff along the first axis (depth or bleaching), noise, dtype."""
    if any(b > 0 for b in blur):
        signal = ndimage.gaussian_filter(signal, sigma=blur, mode="nearest")
    image = signal + _background(rng, signal.shape[-2:], background)
    if falloff is not None:
        image *= falloff.reshape(-1, 1, 1).astype(np.float32)
    if noise > 0:
        photons = 1.0 / noise**2  # photons at intensity 1: relative shot noise = noise
        image = rng.poisson(np.clip(image, 0, None) * photons).astype(np.float32) / photons
        image += rng.normal(0.0, noise / 3, size=image.shape).astype(np.float32)  # read noise
    info = np.iinfo(dtype)
    counts = _OFFSET[dtype] + _GAIN[dtype] * image
    return np.clip(np.rint(counts), info.min, info.max).astype(dtype)


# ---------------------------------------------------------------------------------------------- public


def nuclei_2d(
    shape: tuple[int, int] = (256, 256),
    n_objects: int = 12,
    *,
    seed: int | None = 0,
    dtype: str = "uint16",
    radius: tuple[float, float] | float | None = None,
    touching: float = 0.3,
    blur: float = 1.0,
    noise: float = 0.05,
    background: float = 0.2,
    kind: str = "nuclei",
) -> SyntheticStack:
    """A fluorescence image of nuclei (or cells) with instance labels.

    Args:
        shape: (H, W) in pixels.
        n_objects: number of objects (0 gives an image of background only).
        seed: random seed (the same seed gives the same image); None for a fresh one.
        dtype: "uint8" or "uint16".
        radius: (min, max) semi-axis length in pixels, or one number; default (10, 22) for nuclei
            and (18, 34) for cells.
        touching: fraction of objects (0..1) placed against another object, sharing a border.
        blur: Gaussian sigma of the optics in pixels (0: none).
        noise: relative noise (shot and read) at full object brightness (0: none).
        background: mean background level relative to a bright object (0..1).
        kind: "nuclei" (textured ellipses) or "cells" (larger irregular cells, bright cytoplasm
            that darkens towards every border).

    Returns:
        SyntheticStack with axes "yx".

    Raises:
        SyntheticError: a bad parameter, or objects that do not fit (the message says what to pass).
    """
    shape = _check_shape(shape, 2, "H, W")
    n, rng, dt = _check_common(n_objects, seed, dtype, kind)
    radius, touching, blur, noise, background = _check_look(radius, touching, blur, noise, background, kind)
    spacing = np.ones(2)
    if n:
        _check_fits(shape, spacing, radius[1], "H, W")
    labels, signal = _place_static(rng, shape, spacing, n, radius, touching, kind)
    if kind == "cells":
        _darken_borders(labels, signal, spacing)
    image = _finish(rng, signal, dt, blur=(blur, blur), noise=noise, background=background, falloff=None)
    return SyntheticStack(image, labels, "yx", (1.0, 1.0))


def nuclei_3d(
    shape: tuple[int, int, int] = (32, 256, 256),
    n_objects: int = 10,
    *,
    seed: int | None = 0,
    dtype: str = "uint16",
    radius: tuple[float, float] | float | None = None,
    touching: float = 0.3,
    blur: float = 1.0,
    noise: float = 0.05,
    background: float = 0.2,
    kind: str = "nuclei",
    z_scale: float = 2.0,
) -> SyntheticStack:
    """A fluorescence volume of ellipsoidal nuclei (or cells) with instance labels.

    Objects are ellipsoids with an irregular surface in random orientations; every object spans
    several slices, its label occupies one contiguous z range, and its largest cross-section lies
    near its centre slice. Deeper slices are a little dimmer (up to 15 % at the bottom).

    Args:
        shape: (Z, H, W).
        z_scale: distance between slices in pixel units (2.0: slices twice as far apart as pixels,
            so an object of radius r spans about r slices). Also the optics blur in z is
            ``2 * blur / z_scale`` slices.
        radius: (min, max) semi-axis length in y/x pixels, or one number; default (8, 18) for
            nuclei and (12, 22) for cells.
        n_objects, seed, dtype, touching, blur, noise, background, kind: as in :func:`nuclei_2d`.

    Returns:
        SyntheticStack with axes "zyx" and scale ``(z_scale, 1, 1)``.

    Raises:
        SyntheticError: a bad parameter, or objects that do not fit.
    """
    shape = _check_shape(shape, 3, "Z, H, W")
    n, rng, dt = _check_common(n_objects, seed, dtype, kind)
    if radius is None:
        radius = (8.0, 18.0) if kind == "nuclei" else (12.0, 22.0)
    radius, touching, blur, noise, background = _check_look(radius, touching, blur, noise, background, kind)
    z_scale = _check_number("z_scale", z_scale, 0.0)
    if z_scale == 0:
        raise SyntheticError("z_scale must be > 0 (the slice distance in pixel units, e.g. 2.0)")
    spacing = np.array([z_scale, 1.0, 1.0])
    if n:
        _check_fits(shape, spacing, radius[1], "Z, H, W")
    labels, signal = _place_static(rng, shape, spacing, n, radius, touching, kind)
    if kind == "cells":
        _darken_borders(labels, signal, spacing)
    falloff = 1.0 - 0.15 * np.arange(shape[0]) / max(shape[0] - 1, 1)
    sigma = (2 * blur / z_scale, blur, blur)
    image = _finish(rng, signal, dt, blur=sigma, noise=noise, background=background, falloff=falloff)
    return SyntheticStack(image, labels, "zyx", (z_scale, 1.0, 1.0))


def moving_blobs(
    shape: tuple[int, int, int] = (20, 256, 256),
    n_objects: int = 6,
    *,
    seed: int | None = 0,
    dtype: str = "uint16",
    speed: tuple[float, float] | float = (1.0, 4.0),
    appear_vanish: bool = True,
    radius: tuple[float, float] | float | None = (10.0, 18.0),
    blur: float = 1.0,
    noise: float = 0.05,
    background: float = 0.2,
) -> SyntheticStack:
    """A time series of nuclei moving smoothly over a (T, H, W) field of view.

    Each object keeps a constant speed (drawn from ``speed``, pixels per frame) while its heading
    turns slowly; it bounces off the image borders and stays fully inside. Its outline, size and
    orientation change a little from frame to frame. Objects start apart and turn back rather than
    run into another visible object, but one that appears may land on another: where two overlap,
    the one with the higher id is nearer to the viewer and wins the shared pixels in the labels and
    in the image. With ``appear_vanish`` (and at least 2 objects and 3 frames) at
    least a third of the objects appear after frame 0 and at least a third vanish before the last
    frame; each object is present on one contiguous range of frames. The signal bleaches by up to
    15 % over the series.

    Args:
        shape: (T, H, W).
        speed: (min, max) speed in pixels per frame, or one number.
        appear_vanish: let some objects appear late and others vanish early.
        radius: (min, max) semi-axis length in pixels (None: (10, 18)).
        n_objects, seed, dtype, blur, noise, background: as in :func:`nuclei_2d`.

    Returns:
        SyntheticStack with axes "tyx"; ids keep their identity across frames.

    Raises:
        SyntheticError: a bad parameter, or objects that do not fit.
    """
    shape = _check_shape(shape, 3, "T, H, W")
    n, rng, dt = _check_common(n_objects, seed, dtype)
    if radius is None:
        radius = (10.0, 18.0)
    radius, _, blur, noise, background = _check_look(radius, 0.0, blur, noise, background, "nuclei")
    speed = _check_range("speed", speed, 0.0, strict=False)
    t_count, hw = shape[0], shape[1:]
    spacing = np.ones(2)
    if n:
        _check_fits(hw, spacing, radius[1] * 1.08, "H, W")
    life = np.tile([0, t_count - 1], (n, 1))
    if appear_vanish and n >= 2 and t_count >= 3:
        order = rng.permutation(n)
        third = max(1, n // 3)
        for k in order[:third]:
            life[k, 0] = rng.integers(1, max(2, t_count // 2))
        for k in order[third : 2 * third]:
            life[k, 1] = rng.integers(max(1, t_count // 2), t_count - 1)
    size = np.asarray(hw, dtype=np.float64)
    start_masks = np.zeros(hw, dtype=bool)
    blobs: list[_Blob] = []
    for i in range(n):
        for _ in range(_ATTEMPTS):
            blob = _random_blob(rng, 2, radius, "nuclei")
            margin = blob.half_extent() * 1.08 + 1
            if np.any(2 * margin >= size):
                continue
            blob.centre = rng.uniform(margin, size - margin)
            rendered = _render(blob, hw, spacing, pad=_GAP)
            if rendered is None:
                continue
            sl, inside, _, _ = rendered
            if not np.any(start_masks[sl][ndimage.binary_dilation(inside, iterations=_GAP)]):
                start_masks[sl] |= inside
                blobs.append(blob)
                break
        else:
            raise SyntheticError(
                f"could place only {i} of {n} objects of radius {radius[0]:g}-{radius[1]:g} in a "
                f"{hw[0]} x {hw[1]} frame; pass fewer n_objects, a smaller radius or a larger shape"
            )
    paths = _trajectories(rng, blobs, life, speed, size, t_count)
    labels = np.zeros(shape, dtype=np.uint16)
    signal = np.zeros(shape, dtype=np.float32)
    for i, blob in enumerate(blobs):  # in id order: a higher id is drawn over a lower one
        _animate(rng, blob, i + 1, life[i], paths[i], labels, signal)
    falloff = 1.0 - 0.15 * np.arange(t_count) / max(t_count - 1, 1)
    image = _finish(
        rng, signal, dt, blur=(0.0, blur, blur), noise=noise, background=background, falloff=falloff
    )
    return SyntheticStack(image, labels, "tyx", (1.0, 1.0, 1.0))


def _trajectories(
    rng: np.random.Generator,
    blobs: list[_Blob],
    life: np.ndarray,
    speed: tuple[float, float],
    size: np.ndarray,
    t_count: int,
) -> np.ndarray:
    """Centres (n, T, 2) of objects moving at constant speed with a slowly turning heading.

    Objects bounce off the borders, and turn back instead of running into another visible object
    (each is seen as a circle around its outline); when both ways are blocked an object waits.
    Every step is at most the object's speed.
    """
    n = len(blobs)
    paths = np.zeros((n, t_count, 2))
    if not n:
        return paths
    paths[:, 0] = [b.centre for b in blobs]
    v = rng.uniform(*speed, size=n)
    heading = rng.uniform(0, 2 * np.pi, size=n)
    turn = rng.normal(0.0, 0.12, size=(t_count, n))
    reach = np.array([b.half_extent().max() * 1.06 for b in blobs])
    margin = np.array([b.half_extent() * 1.08 + 1 for b in blobs])
    for t in range(1, t_count):
        paths[:, t] = paths[:, t - 1]
        alive = (life[:, 0] <= t) & (t <= life[:, 1])
        for i in range(n):
            heading[i] += turn[t, i]
            others = np.nonzero(alive & (np.arange(n) != i))[0]
            for _ in range(2):  # ahead, else back the way it came
                pos = paths[i, t - 1] + v[i] * np.array([np.sin(heading[i]), np.cos(heading[i])])
                for a in range(2):  # reflect off the borders (a reflection never lengthens the step)
                    lo, hi = margin[i, a], size[a] - margin[i, a]
                    if pos[a] < lo or pos[a] > hi:
                        pos[a] = 2 * (lo if pos[a] < lo else hi) - pos[a]
                        heading[i] = -heading[i] if a == 0 else np.pi - heading[i]
                pos = np.clip(pos, margin[i], size - margin[i])
                if not alive[i] or not others.size:
                    break
                new = np.linalg.norm(paths[others, t] - pos, axis=1)
                old = np.linalg.norm(paths[others, t] - paths[i, t - 1], axis=1)
                if np.all((new >= reach[i] + reach[others] + _GAP) | (new >= old)):
                    break
                heading[i] += np.pi
            else:
                continue  # blocked both ways: stay
            paths[i, t] = pos
    return paths


def _animate(
    rng: np.random.Generator,
    blob: _Blob,
    obj_id: int,
    life: np.ndarray,
    path: np.ndarray,
    labels: np.ndarray,
    signal: np.ndarray,
) -> None:
    """Draw one object along ``path`` on every frame of its life, over lower ids (it is nearer)."""
    hw = labels.shape[1:]
    spin = rng.uniform(-0.04, 0.04)
    pulse, pulse_phase = rng.uniform(0.1, 0.3), rng.uniform(0, 2 * np.pi)
    semi0, rot0 = blob.semi.copy(), blob.rot.copy()
    spacing = np.ones(2)
    for t in range(life[0], life[1] + 1):
        a = spin * t
        blob.centre = path[t]
        blob.rot = rot0 @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
        blob.semi = semi0 * (1.0 + 0.06 * np.sin(pulse * t + pulse_phase + np.array([0.0, np.pi / 2])))
        rendered = _render(blob, hw, spacing, phase_shift=0.08 * t)
        if rendered is None:
            continue
        sl, inside, _, look = rendered
        labels[t][sl][inside] = obj_id
        signal[t][sl][inside] = look[inside]


def _check_look(radius, touching, blur, noise, background, kind):
    radius = _DEFAULT_RADIUS[kind] if radius is None else radius
    radius = _check_range("radius", radius, 0.0, strict=True)
    if radius[0] < 2:
        raise SyntheticError(f"radius must be at least 2 pixels, got {radius}; e.g. pass (6, 12)")
    touching = _check_number("touching", touching, 0.0, 1.0)
    blur = _check_number("blur", blur, 0.0)
    noise = _check_number("noise", noise, 0.0)
    background = _check_number("background", background, 0.0, 1.0, high_open=True)
    return radius, touching, blur, noise, background


def sample_nuclei_3d() -> SyntheticStack:
    """The plugin's sample volume: (32, 256, 256) uint16 nuclei, 10 objects, fixed seed."""
    return nuclei_3d((32, 256, 256), 10, seed=2024, dtype="uint16")


# ---------------------------------------------------------------------------------------------- widened looks
_BITS = (8, 12, 16)
_NOISE_MODELS = ("poisson-gaussian", "speckle")


@dataclass(frozen=True)
class MicroscopyLook:
    """How a :func:`microscopy_2d` / :func:`microscopy_3d` image looks; :func:`random_look` draws one.

    Attributes:
        bits: 8 (uint8, 0..255), 12 (uint16, 0..4095) or 16 (uint16, 0..65535).
        offset: camera dark level as a fraction of the bit depth's full range.
        fill: the brightest object (before noise) lands at ``offset + fill`` of the full range, so
            images use from a few percent (dim 16-bit data) to nearly all of it.
        gamma: the object signal is raised to this power (<1 lifts dim structure, >1 sinks it),
            which changes the intensity histogram.
        noise: "poisson-gaussian" (shot noise of ``photons`` photons at full brightness plus
            Gaussian read noise ``read_noise``) or "speckle" (multiplicative gamma noise of relative
            standard deviation ``speckle``, plus the same read noise).
        photons, read_noise, speckle: the noise strengths (read noise relative to full brightness).
        brightness: (min, max) of each object's brightness; a low min gives dim objects among
            bright ones.
        texture: amplitude of the interior texture (0.1 is the plain generators' nuclei).
        background: mean background level relative to a bright object.
        gradient: strength of the linear illumination gradient across the image (0.25 plain).
        radius: (min, max) object semi-axis in y/x pixels.
        fill_fraction: share of the plane the objects cover (decides how many are drawn).
        touching: share of objects placed against another one.
        blur: optics sigma in y/x pixels.
        z_scale: slice distance in y/x pixels (3D only).
        z_blur: optics blur along z as a multiple of ``blur`` in physical units (3D only).
    """

    bits: int = 16
    offset: float = 0.01
    fill: float = 0.6
    gamma: float = 1.0
    noise: str = "poisson-gaussian"
    photons: float = 400.0
    read_noise: float = 0.02
    speckle: float = 0.0
    brightness: tuple[float, float] = (0.6, 1.0)
    texture: float = 0.1
    background: float = 0.2
    gradient: float = 0.25
    radius: tuple[float, float] = (10.0, 22.0)
    fill_fraction: float = 0.2
    touching: float = 0.3
    blur: float = 1.0
    z_scale: float = 2.0
    z_blur: float = 2.0

    def __post_init__(self) -> None:
        if self.bits not in _BITS:
            raise SyntheticError(f"bits must be 8, 12 or 16, got {self.bits!r}")
        if self.noise not in _NOISE_MODELS:
            raise SyntheticError(f"noise must be one of {_NOISE_MODELS}, got {self.noise!r}")
        if not (0 <= self.offset < 1 and self.fill > 0 and self.offset + self.fill <= 1):
            raise SyntheticError(
                f"offset and fill must be fractions with offset + fill <= 1, got {self.offset}, {self.fill}"
            )
        if self.photons <= 0 or min(self.read_noise, self.speckle, self.blur, self.texture) < 0:
            raise SyntheticError("photons must be > 0; read_noise, speckle, blur and texture >= 0")
        if not 0 < self.brightness[0] <= self.brightness[1]:
            raise SyntheticError(f"brightness must be (min, max) with 0 < min <= max, got {self.brightness}")
        if self.gamma <= 0 or self.z_scale <= 0 or self.z_blur < 0:
            raise SyntheticError("gamma and z_scale must be > 0, z_blur >= 0")

    @property
    def dtype(self) -> np.dtype:
        """uint8 for 8-bit data, uint16 for 12- and 16-bit data."""
        return np.dtype(np.uint8 if self.bits == 8 else np.uint16)

    @property
    def max_value(self) -> int:
        """The largest value of the bit depth (255, 4095 or 65535)."""
        return (1 << self.bits) - 1


def random_look(seed: int | np.random.Generator | None = None, *, ndim: int = 2) -> MicroscopyLook:
    """A random :class:`MicroscopyLook`, drawn from ranges that real fluorescence data span.

    Bit depth 8/12/16 equally often; images fill 5-95 % of the range above a 0-10 % dark level;
    gamma 0.6-1.6; Poisson-Gaussian noise (3-1000 photons at full brightness, read noise up to
    6 %) or speckle (relative s.d. 0.1-0.5); a third of the images have dim objects (brightness
    from 0.1); texture amplitude 0.05-0.35; background 0.02-0.4 with gradients up to 0.8; object
    sizes small (radius 2-6), medium (6-16) or large (14-40, 3D up to 24); objects covering
    10-40 % of the plane, 0-70 % of them touching; blur 0.5-2 px; in 3D slices 1-4 px apart with a
    z blur of 1.5-4 times the lateral one.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    size = rng.choice(["small", "medium", "large"], p=[0.3, 0.4, 0.3])
    if size == "small":
        radius = (2.0, float(rng.uniform(3.5, 6.0)))
    elif size == "medium":
        radius = (6.0, float(rng.uniform(9.0, 16.0)))
    else:
        radius = (14.0, float(rng.uniform(20.0, 40.0 if ndim == 2 else 24.0)))
    bits = int(rng.choice(_BITS))
    offset = float(rng.uniform(0.0, 0.1))
    fill = float(min(rng.uniform(0.05, 0.95), 1.0 - offset))
    noise = str(rng.choice(_NOISE_MODELS, p=[0.7, 0.3]))
    low = float(rng.uniform(0.1, 0.4)) if rng.random() < 0.35 else float(rng.uniform(0.5, 0.8))
    return MicroscopyLook(
        bits=bits,
        offset=offset,
        fill=fill,
        gamma=float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))),
        noise=noise,
        photons=float(np.exp(rng.uniform(np.log(3.0), np.log(1000.0)))),
        read_noise=float(rng.uniform(0.0, 0.06)),
        speckle=float(rng.uniform(0.1, 0.5)) if noise == "speckle" else 0.0,
        brightness=(low, 1.0),
        texture=float(rng.uniform(0.05, 0.35)),
        background=float(rng.uniform(0.02, 0.4)),
        gradient=float(rng.uniform(0.0, 0.8)),
        radius=radius,
        fill_fraction=float(rng.uniform(0.1, 0.4)),
        touching=float(rng.uniform(0.0, 0.7)),
        blur=float(rng.uniform(0.5, 2.0)),
        z_scale=float(rng.uniform(1.0, 4.0)),
        z_blur=float(rng.uniform(1.5, 4.0)),
    )


def _look_count(look: MicroscopyLook, hw: tuple[int, int], cap: int) -> int:
    """Objects that cover about ``look.fill_fraction`` of a plane (at least 1, at most ``cap``)."""
    r = 0.5 * (look.radius[0] + look.radius[1])
    return int(np.clip(round(look.fill_fraction * hw[0] * hw[1] / (np.pi * r * r * 0.8)), 1, cap))


def _place_fitting(rng, shape, spacing, n, look: MicroscopyLook, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_place_static`, with fewer objects when ``n`` do not fit (crowded looks)."""
    while True:
        try:
            return _place_static(rng, shape, spacing, n, look.radius, look.touching, kind, look)
        except SyntheticError:
            if n <= 1:
                raise
            n = max(1, int(n * 0.7))


def _camera(rng: np.random.Generator, signal: np.ndarray, look: MicroscopyLook, falloff) -> np.ndarray:
    """Blurred object signal -> counts: gamma, uneven background, noise model, bit depth."""
    signal = np.power(np.clip(signal, 0.0, None), look.gamma, dtype=np.float32)
    hw = signal.shape[-2:]
    yy, xx = np.meshgrid(np.linspace(-1, 1, hw[0]), np.linspace(-1, 1, hw[1]), indexing="ij")
    a = rng.uniform(0, 2 * np.pi)
    field = np.clip(1.0 + look.gradient * (np.cos(a) * yy + np.sin(a) * xx), 0.1, None)
    field = field * (1.0 + 0.1 * _smooth_noise(rng, hw))
    image = signal + (look.background * field / field.mean()).astype(np.float32)
    if falloff is not None:
        image *= falloff.reshape(-1, 1, 1).astype(np.float32)
    if look.noise == "poisson-gaussian":
        image = rng.poisson(np.clip(image, 0, None) * look.photons).astype(np.float32) / look.photons
    else:
        k = 1.0 / look.speckle**2  # gamma(k, 1/k): mean 1, relative s.d. = speckle
        image = image * rng.gamma(k, 1.0 / k, size=image.shape).astype(np.float32)
    image += rng.normal(0.0, look.read_noise, size=image.shape).astype(np.float32)
    top = look.max_value
    scale = look.fill * top / (1.0 + look.background)  # a bright object on the background -> fill
    counts = look.offset * top + scale * image
    return np.clip(np.rint(counts), 0, top).astype(look.dtype)


def microscopy_2d(
    shape: tuple[int, int] = (256, 256),
    *,
    seed: int | None = 0,
    look: MicroscopyLook | None = None,
    kind: str = "nuclei",
    max_objects: int = 60,
) -> SyntheticStack:
    """A fluorescence plane whose look (bit depth, histogram, noise model, brightness spread,
    texture, background gradient, object size and crowding) is drawn at random.

    Args:
        shape: (H, W).
        seed: seeds the look (unless ``look`` is given), the objects and the noise.
        look: a fixed :class:`MicroscopyLook` (None: :func:`random_look` of the seed).
        kind: "nuclei" or "cells" (as :func:`nuclei_2d`).
        max_objects: most objects drawn (the look's ``fill_fraction`` decides how many).

    Returns:
        SyntheticStack with axes "yx"; dtype uint8 (8-bit) or uint16 (12- and 16-bit).
    """
    shape = _check_shape(shape, 2, "H, W")
    _, rng, _ = _check_common(0, seed, "uint16", kind)
    look = random_look(rng, ndim=2) if look is None else look
    spacing = np.ones(2)
    _check_fits(shape, spacing, look.radius[1], "H, W")
    labels, signal = _place_fitting(rng, shape, spacing, _look_count(look, shape, max_objects), look, kind)
    if kind == "cells":
        _darken_borders(labels, signal, spacing)
    if look.blur > 0:
        signal = ndimage.gaussian_filter(signal, sigma=look.blur, mode="nearest")
    return SyntheticStack(_camera(rng, signal, look, None), labels, "yx", (1.0, 1.0))


def microscopy_3d(
    shape: tuple[int, int, int] = (32, 256, 256),
    *,
    seed: int | None = 0,
    look: MicroscopyLook | None = None,
    kind: str = "nuclei",
    max_objects: int = 40,
) -> SyntheticStack:
    """A fluorescence z-stack with a random look (see :func:`microscopy_2d`), anisotropic voxels
    (slices ``look.z_scale`` pixels apart) and a z blur ``look.z_blur`` times the lateral blur;
    deeper slices lose up to 40 % of their brightness. Objects too tall for the stack are made
    smaller so that they fit.

    Returns:
        SyntheticStack with axes "zyx" and scale ``(z_scale, 1, 1)``.
    """
    shape = _check_shape(shape, 3, "Z, H, W")
    _, rng, _ = _check_common(0, seed, "uint16", kind)
    look = random_look(rng, ndim=3) if look is None else look
    spacing = np.array([look.z_scale, 1.0, 1.0])
    r_max = min(look.radius[1], (shape[0] - 3) * look.z_scale / 2.5, (min(shape[1:]) - 3) / 2.5)
    if r_max < 2:
        raise SyntheticError(f"shape {shape} is too thin for objects at z_scale {look.z_scale:g}")
    look = dataclasses.replace(look, radius=(min(look.radius[0], r_max), r_max))
    _check_fits(shape, spacing, look.radius[1], "Z, H, W")
    n = _look_count(look, shape[1:], max_objects)
    labels, signal = _place_fitting(rng, shape, spacing, n, look, kind)
    if kind == "cells":
        _darken_borders(labels, signal, spacing)
    if look.blur > 0:
        sigma = (look.z_blur * look.blur / look.z_scale, look.blur, look.blur)
        signal = ndimage.gaussian_filter(signal, sigma=sigma, mode="nearest")
    falloff = 1.0 - rng.uniform(0.0, 0.4) * np.arange(shape[0]) / max(shape[0] - 1, 1)
    image = _camera(rng, signal, look, falloff)
    return SyntheticStack(image, labels, "zyx", (look.z_scale, 1.0, 1.0))
