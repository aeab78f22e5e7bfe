"""Lazy image sources: one reading interface over numpy, dask, zarr, OME-Zarr, TIFF and medical volumes.

:func:`open_image` turns what the user has (an array, a zarr array or group, a path to a ``.zarr``
folder, a TIFF file, a NIfTI/NRRD file or a DICOM folder) into an :class:`ImageSource` without reading
pixels. Medical volumes come in (z, y, x) order with their geometry in ``source.medical``
(:mod:`napari_sam2.engine.medical`). The source reads one plane,
or one window of a plane, on demand and touches only the chunks (or TIFF tiles) that hold it.

Axes use the letters ``t`` (time), ``c`` (channel), ``z``, ``y`` (rows), ``x`` (columns). After the
channel is resolved a source has axes ``[t][z]yx`` in that order: the leading ``t``/``z`` axes index
frames, ``(y, x)`` is the plane. RGB(A) images keep three colour components last, so a plane is
(H, W) or (H, W, 3). Values are never converted: windowing belongs to the normalisation module.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import operator
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from .errors import SourceError

__all__ = ["ImageSource", "SourceError", "open_image"]

_LETTERS = "tczyx"
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_MEDICAL_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")
_TIFF_LETTERS = {"T": "t", "Z": "z", "C": "c", "S": "c", "Y": "y", "X": "x"}
_ZARR_METADATA = ("zarr.json", ".zarray", ".zattrs", ".zgroup")
_DTYPES = "uint8, uint16, int16, int32, uint32, float32 or float64 (any integer or float type)"
_FULL_HASH_BYTES = 64 * 2**20  # numpy arrays up to this size are hashed whole
# sample_values on a level too big to read whole: frames read (odd, so the middle one is among them)
# and windows per side of a plane too big to read whole
_SAMPLE_FRAMES = 33
_SAMPLE_GRID = 4


class ImageSource:
    """A lazily read image: levels of array-likes with axes ``[t][z]yx`` (+ RGB last), level 0 finest.

    Build one with :func:`open_image`. Nothing is read until :meth:`plane`, :meth:`region` or
    :meth:`sample_values` is called. Close it (or use ``with``) to release a TIFF file handle.

    Attributes:
        axes: "yx", "zyx", "tyx" or "tzyx"; the channel axis, if any, has been resolved.
        frame_shape: sizes of the leading t/z axes, () for a single plane.
        plane_hw: (H, W) of level 0.
        rgb: planes are (H, W, 3) RGB (alpha dropped) rather than (H, W).
        dtype: the native pixel type, returned as is.
        levels: array-likes, level 0 first then coarser ones, each indexable with ints and slices in
            ``axes`` order (+ a trailing colour axis of size 3 when ``rgb``); shapes differ per level.
        identity: a cheap signature of the data and of how it is viewed (axes, channel), for cache keys.
        axes_guessed: None when the t/z axes were given (``axes=``) or read from metadata; else a
            sentence saying they were inferred from the shape (e.g. a 3D TIFF whose axes read
            ``QYX`` opens as "zyx", which may be time).
        medical: the :class:`~napari_sam2.engine.medical.MedicalGeometry` of a NIfTI/NRRD/DICOM
            input (spacing, affine, modality, intensity preset); None for other images.
    """

    def __init__(
        self,
        levels: Sequence[Any],
        axes: str,
        *,
        rgb: bool,
        identity: str,
        closers: Sequence[Callable[[], None]] = (),
        axes_guessed: str | None = None,
        medical: Any = None,
    ) -> None:
        if axes not in ("yx", "zyx", "tyx", "tzyx"):
            raise SourceError(f"an ImageSource has axes yx, zyx, tyx or tzyx, got {axes!r}")
        shape = tuple(int(s) for s in levels[0].shape)
        if len(shape) != len(axes) + rgb or (rgb and shape[-1] != 3):
            raise SourceError(f"level 0 has shape {shape}, which does not fit axes {axes!r} with rgb={rgb}")
        self.levels = list(levels)
        self.axes = axes
        self.rgb = bool(rgb)
        self.dtype = np.dtype(levels[0].dtype)
        self.frame_shape = shape[: len(axes) - 2]
        self.plane_hw = (shape[len(axes) - 2], shape[len(axes) - 1])
        self.identity = identity
        self.axes_guessed = axes_guessed
        self._closers = list(closers)
        self._closed = False
        self.medical = medical

    @property
    def num_frames(self) -> int:
        """Number of planes: the product of ``frame_shape`` (1 for a single plane)."""
        return math.prod(self.frame_shape)

    def frame_indices(self) -> Iterator[tuple[int, ...]]:
        """Every frame index in C order: (t, z) tuples for "tzyx", (z,) for "zyx", one () for "yx"."""
        return itertools.product(*(range(n) for n in self.frame_shape))

    def plane(self, index: int | tuple[int, ...] = ()) -> np.ndarray:
        """The (H, W) or (H, W, 3) plane at frame ``index`` (one int per t/z axis), native dtype, a copy."""
        return self._read((*self._frame_key(index), slice(None), slice(None)))

    def region(self, index: int | tuple[int, ...], rows: slice, cols: slice) -> np.ndarray:
        """A window of the plane at ``index``: rows ``rows`` and columns ``cols`` of it.

        Bounds are plane pixel coordinates (not Python negative indices) and are clipped to the plane,
        so a tile with a halo may reach past the border; the result is smaller then. A window entirely
        outside the plane, empty, or with a step other than 1 raises SourceError.
        """
        h, w = self.plane_hw
        key = (*self._frame_key(index), _clip(rows, h, "rows"), _clip(cols, w, "cols"))
        return self._read(key)

    def sample_values(self, max_values: int = 2_000_000, seed: int = 0) -> np.ndarray:
        """At most ``max_values`` pixel values (1D, native dtype) drawn from the whole dataset.

        For robust intensity percentiles. Uses the first coarser level that holds at most
        ``max_values`` values (read whole), else the coarsest level (or level 0 if there is no other),
        from which up to 33 frames spread evenly from the first to the last are read, each whole if
        small, else as a 4 x 4 grid of windows. Deterministic for a given ``seed``. RGB components
        count as values.
        """
        if max_values < 1:
            raise SourceError(f"max_values must be at least 1, got {max_values}")
        self._check_open()
        coarser = self.levels[1:]
        level = next((lv for lv in coarser if math.prod(lv.shape) <= max_values), None)
        level = level if level is not None else (coarser[-1] if coarser else self.levels[0])
        if math.prod(level.shape) <= max_values:
            return _fetch(level, (slice(None),) * len(level.shape)).reshape(-1)
        rng = np.random.default_rng(seed)
        nf, ncomp = len(self.frame_shape), 3 if self.rgb else 1
        frame_shape = tuple(int(s) for s in level.shape[:nf])
        h, w = (int(s) for s in level.shape[nf : nf + 2])
        n = math.prod(frame_shape)
        flat = np.unique(np.round(np.linspace(0, n - 1, min(n, _SAMPLE_FRAMES, max_values))).astype(np.int64))
        budget = max(1, max_values // (len(flat) * ncomp))  # pixels per frame
        parts = []
        for f in flat:
            frame = tuple(int(i) for i in np.unravel_index(f, frame_shape)) if nf else ()
            if h * w <= 4 * budget:
                pixels = _fetch(level, (*frame, slice(None), slice(None))).reshape(h * w, ncomp)
                if h * w > budget:
                    pixels = pixels[np.sort(rng.choice(h * w, budget, replace=False))]
                parts.append(pixels.reshape(-1))
                continue
            g = _SAMPLE_GRID
            wh = max(1, min(math.isqrt(budget // g**2), h // g))
            ww = max(1, min(budget // g**2 // wh, w // g))
            for i, j in itertools.product(range(g), range(g)):
                r = min(i * h // g + int(rng.integers(0, max(1, h // g - wh + 1))), h - wh)
                c = min(j * w // g + int(rng.integers(0, max(1, w // g - ww + 1))), w - ww)
                parts.append(_fetch(level, (*frame, slice(r, r + wh), slice(c, c + ww))).reshape(-1))
        values = np.concatenate(parts)
        if len(values) > max_values:  # only when max_values is smaller than the windows' minimum
            values = values[np.sort(rng.choice(len(values), max_values, replace=False))]
        return values

    def close(self) -> None:
        """Release file handles (TIFF). Further reads raise SourceError. Safe to call twice."""
        closers, self._closers, self._closed = self._closers, [], True
        for close in closers:
            close()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ImageSource(axes={self.axes!r}, frame_shape={self.frame_shape}, plane_hw={self.plane_hw}, "
            f"rgb={self.rgb}, dtype={self.dtype}, levels={len(self.levels)})"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise SourceError("this image source has been closed; open the image again with open_image()")

    def _read(self, key: tuple) -> np.ndarray:
        self._check_open()
        return np.ascontiguousarray(_fetch(self.levels[0], key))

    def _frame_key(self, index: int | tuple[int, ...]) -> tuple[int, ...]:
        index = (index,) if isinstance(index, (int, np.integer)) else tuple(index)
        frame_axes = self.axes[:-2]
        if len(index) != len(frame_axes):
            raise SourceError(
                f"frame index {index} has {len(index)} entries but axes {self.axes!r} have "
                f"{len(frame_axes)} frame axes; give one index per t/z axis (() for a single plane)"
            )
        key = []
        for letter, i, n in zip(frame_axes, index, self.frame_shape, strict=True):
            try:
                i = operator.index(i)
            except TypeError:
                raise SourceError(f"frame index {letter}={i!r} must be an integer") from None
            if not 0 <= i < n:
                raise SourceError(f"frame index {letter}={i} is out of range; valid: 0..{n - 1}")
            key.append(i)
        return tuple(key)


class _LevelView:
    """A raw array seen with canonical axes ``[t][z]yx`` (+ RGB last): axes permuted, channel resolved.

    Indexing takes ints and slices, reads only that part of the raw array and returns numpy.
    """

    def __init__(self, array: Any, raw_axes: str, channel: int | slice | None) -> None:
        self.array, self.raw_axes, self.channel = array, raw_axes, channel
        self.axes = "".join(a for a in "tzyx" if a in raw_axes) + ("c" if isinstance(channel, slice) else "")
        sizes = dict(zip(raw_axes, _shape(array), strict=True))
        sizes["c"] = 3
        self.shape = tuple(sizes[a] for a in self.axes)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = dict(zip(self.axes, _expand_key(key, self.ndim), strict=True))
        raw_key = tuple(self.channel if a == "c" else key[a] for a in self.raw_axes)
        out = _fetch(self.array, raw_key)
        kept = [a for a, k in zip(self.raw_axes, raw_key, strict=True) if isinstance(k, slice)]
        out = out.transpose([kept.index(a) for a in self.axes if a in kept])
        if "c" in key and key["c"] != slice(None):
            out = out[..., key["c"]]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"_LevelView(axes={self.axes!r}, shape={self.shape}, dtype={self.dtype}, of {type(self.array).__name__})"


@dataclass
class _Raw:
    """What a loader found, before axes are resolved.

    ``axes``: letters from metadata, "?" for an axis it names but we do not know (None: no metadata);
    ``named``: the file's own axis letters when they could not be used (e.g. TIFF "QYX");
    ``rgb_hint``: the metadata says the last axis holds colour samples; ``prefix``: file identity (None:
    in memory); ``sample``: add a content hash to the identity; ``closers``: release file handles.
    """

    levels: Sequence[Any]
    axes: str | None = None
    named: str | None = None
    rgb_hint: bool = False
    prefix: str | None = None
    sample: bool = True
    closers: Sequence[Callable[[], None]] = ()
    medical: Any = None

    def close(self) -> None:
        for close in self.closers:
            close()


def open_image(
    data: Any, *, axes: str | None = None, channel: int | None = None, rgb: bool | None = None
) -> ImageSource:
    """Open an image lazily.

    Args:
        data: a numpy, dask or zarr array (or any array-like with shape, dtype and slicing); a list of
            such arrays (a napari multiscale layer's data, finest first); a zarr group with OME-Zarr
            ``multiscales`` metadata (v0.4 in zarr v2 attributes, v0.5 under ``attributes["ome"]``);
            or a path to a ``.zarr``/``.ome.zarr`` folder or a ``.tif``/``.tiff``/``.ome.tif``/``.btf``
            file (BigTIFF, tiled, compressed, pyramidal: the first series and its levels).
        axes: one letter per dimension from "tczyx" in the data's order (e.g. "czyx", "yxc", "tzyx").
            None: taken from OME / ImageJ metadata if present, else inferred from the shape: 2D "yx";
            3D "zyx"; 4D "tzyx"; 5D "tczyx"; but 3-5D with a last axis of 3 or 4 is RGB(A) ("yxc",
            "zyxc", "tzyxc") unless ``rgb=False``.
        channel: the channel to keep when there is a channel axis. None: a channel axis of size 3 (or an
            RGBA one found by inference) is used as RGB, size 1 is dropped, anything else is an error.
        rgb: True insists on RGB(A) from the channel axis, False forbids it, None decides as above.

    Raises:
        SourceError: for anything about the input that cannot be used, saying what to change.
    """
    if isinstance(data, ImageSource):
        if axes is not None or channel is not None or rgb is not None:
            raise SourceError(
                "this image is already open; pass axes/channel/rgb when opening the array or path"
            )
        return data
    raw = _load(data)
    try:
        return _build(raw, axes, channel, rgb)
    except BaseException:
        raw.close()
        raise


def _build(raw: _Raw, axes: str | None, channel: int | None, rgb: bool | None) -> ImageSource:
    shape = _shape(raw.levels[0])
    dtype = np.dtype(raw.levels[0].dtype)
    if dtype.kind not in "uif":
        raise SourceError(
            f"pixel type {dtype} is not supported; images must be {_DTYPES} (e.g. .astype(np.uint8))"
        )
    if not 2 <= len(shape) <= 5:
        raise SourceError(f"expected a 2D to 5D image, got {len(shape)}D with shape {shape}")
    if 0 in shape:
        raise SourceError(f"the image is empty: shape {shape} has a zero-size axis")
    implied_rgb, guessed = False, None
    if axes is not None:
        raw_axes = _check_axes(axes, shape, "axes")
    elif raw.axes is not None:
        if "?" in raw.axes:
            raise SourceError(
                f"the metadata axes {raw.axes!r} include axes other than t, c, z, y, x (shown as '?'); "
                "pass axes= with one letter per dimension"
            )
        raw_axes = _check_axes(raw.axes, shape, "the metadata axes (pass axes= to override)")
        implied_rgb = raw.rgb_hint and raw_axes[-1] == "c"
    else:
        raw_axes, implied_rgb = _infer_axes(shape, rgb)
        if any(a in "tz" for a in raw_axes):
            named = f" (the file names its axes {raw.named!r})" if raw.named else ""
            other = raw_axes.replace("z", "t", 1) if "t" not in raw_axes else None
            fix = f"if it is a time series, pass axes={other!r}" if other else "pass axes= if they are wrong"
            guessed = f"axes {raw_axes!r} were guessed from the shape {shape}{named}; {fix}"
    channel_key, is_rgb = _resolve_channel(raw_axes, shape, channel, rgb, implied_rgb)

    out_axes = "".join(a for a in "tzyx" if a in raw_axes)
    levels, previous = [], shape
    for i, level in enumerate(raw.levels):
        lshape = _shape(level)
        if len(lshape) != len(shape) or np.dtype(level.dtype) != dtype:
            raise SourceError(
                f"level {i} has shape {lshape} and dtype {level.dtype} but level 0 has {shape} and {dtype}; "
                "all resolution levels need the same axes and dtype"
            )
        smaller = math.prod(lshape) < math.prod(previous)
        coarser = smaller and all(a <= b for a, b in zip(lshape, previous, strict=True))
        same_channels = "c" not in raw_axes or lshape[raw_axes.index("c")] == shape[raw_axes.index("c")]
        if i and not (coarser and same_channels):
            raise SourceError(
                f"level {i} has shape {lshape} after {previous}: a list of arrays is read as resolution "
                "levels, finest first, each smaller with the same channels; to stack planes use np.stack"
            )
        previous = lshape
        trivial = channel_key is None and raw_axes == out_axes
        levels.append(level if trivial else _LevelView(level, raw_axes, channel_key))
    view = (
        f"axes={raw_axes}>{out_axes}"
        + (",rgb" if is_rgb else "")
        + (f",c={channel}" if channel is not None else "")
    )
    parts = [
        raw.prefix,
        _content_signature(raw.levels[0], levels[0], len(out_axes) - 2) if raw.sample else None,
        view,
    ]
    identity = "|".join(p for p in parts if p)
    return ImageSource(
        levels,
        out_axes,
        rgb=is_rgb,
        identity=identity,
        closers=raw.closers,
        axes_guessed=guessed,
        medical=raw.medical,
    )


def _infer_axes(shape: tuple[int, ...], rgb: bool | None) -> tuple[str, bool]:
    """Axes from the shape alone; True when a last axis of 3 or 4 was taken as RGB(A)."""
    if len(shape) >= 3 and shape[-1] in (3, 4) and rgb is not False:
        return "tzyx"[5 - len(shape) :] + "c", True
    return {2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}[len(shape)], False


def _check_axes(axes: str, shape: tuple[int, ...], what: str) -> str:
    if not isinstance(axes, str):
        raise SourceError(f"{what} must be a string of letters from 'tczyx', got {axes!r}")
    letters = axes.lower()
    unknown = sorted(set(letters) - set(_LETTERS))
    if unknown:
        raise SourceError(f"{what} {axes!r} has unknown axis letters {unknown}; use t, c, z, y and x")
    repeated = sorted({a for a in letters if letters.count(a) > 1})
    if repeated:
        raise SourceError(f"{what} {axes!r} repeats {repeated}; name each axis once")
    if len(letters) != len(shape):
        raise SourceError(
            f"{what} {axes!r} names {len(letters)} axes but the image has {len(shape)} dimensions {shape}; "
            "give one letter per dimension"
        )
    if "y" not in letters or "x" not in letters:
        raise SourceError(f"{what} {axes!r} must include the plane axes 'y' and 'x'")
    return letters


def _resolve_channel(
    raw_axes: str, shape: tuple[int, ...], channel: int | None, rgb: bool | None, implied_rgb: bool
) -> tuple[int | slice | None, bool]:
    """-> (the key for the channel axis: an int keeps one channel, slice(0, 3) keeps RGB; is RGB)."""
    if "c" not in raw_axes:
        if channel is not None:
            raise SourceError(
                f"channel={channel} was given but the image (axes {raw_axes!r}, shape {shape}) has no channel "
                "axis; leave channel=None or name the channel axis 'c' in axes="
            )
        if rgb:
            raise SourceError(
                f"rgb=True needs a channel axis of size 3 or 4 but the image has axes {raw_axes!r} and shape "
                f"{shape}; name the colour axis 'c' in axes="
            )
        return None, False
    n = shape[raw_axes.index("c")]
    if channel is not None:
        if rgb:
            raise SourceError(
                "rgb=True keeps all colours; it cannot be combined with channel=; drop one of them"
            )
        try:
            channel = operator.index(channel)
        except TypeError:
            raise SourceError(f"channel must be an integer, got {channel!r}") from None
        if not 0 <= channel < n:
            raise SourceError(
                f"channel={channel} is out of range: the image has {n} channels, valid: 0..{n - 1}"
            )
        return channel, False
    if n == 1:
        return 0, False
    if (n == 3 and rgb is not False) or (n == 4 and (rgb or (implied_rgb and rgb is None))):
        return slice(0, 3), True
    if rgb and n != 4:
        raise SourceError(
            f"rgb=True needs 3 or 4 channels, the image has {n}; choose one with channel=0..{n - 1}"
        )
    raise SourceError(f"the image has {n} channels; choose one with channel=0..{n - 1}")


def _load(data: Any) -> _Raw:
    if isinstance(data, (str, os.PathLike)):
        return _load_path(Path(data).expanduser())
    if isinstance(data, zarr.Group):
        return _load_group(data)
    if isinstance(data, zarr.Array):
        return _Raw([data], prefix=_zarr_prefix(data, [data.path]))
    if (
        isinstance(data, Sequence)
        and not isinstance(data, str)
        and data
        and all(isinstance(a, (str, os.PathLike)) for a in data)
    ):
        return _load_medical(list(data))  # a list of DICOM files
    if isinstance(data, Sequence) and data and all(_is_arraylike(a) for a in data):
        return _Raw(data)
    if _is_arraylike(data):
        return _Raw([data])
    try:
        array = np.asarray(data)
    except (TypeError, ValueError) as err:
        raise SourceError(f"cannot read {type(data).__name__} as an image; give an array or a path") from err
    if array.dtype == object:
        raise SourceError(
            f"cannot read {type(data).__name__} as an image (object dtype); give a numeric array or a path; "
            f"images must be {_DTYPES}"
        )
    return _Raw([array])


def _is_arraylike(a: Any) -> bool:
    return all(hasattr(a, name) for name in ("shape", "dtype", "__getitem__"))


def _load_path(path: Path) -> _Raw:
    if not path.exists():
        raise SourceError(f"{path} does not exist; check the path")
    if path.name.lower().endswith(_MEDICAL_SUFFIXES):
        return _load_medical(path)
    if path.is_dir():
        if not any((path / name).exists() for name in _ZARR_METADATA):
            from .medical import is_medical

            if is_medical(path):
                return _load_medical(path)
            raise SourceError(
                f"{path} is a folder but not a zarr store (no zarr.json, .zarray or .zgroup) nor a DICOM "
                "series; give a .zarr/.ome.zarr folder, a DICOM folder or a TIFF file"
            )
        try:
            node = zarr.open(str(path), mode="r")
        except (OSError, ValueError, KeyError, zarr.errors.BaseZarrError) as err:
            raise SourceError(f"could not open the zarr store {path}: {err}") from err
        if isinstance(node, zarr.Group):
            return _load_group(node)
        return _Raw([node], prefix=_zarr_prefix(node, [node.path]))
    if path.name.lower().endswith(_TIFF_SUFFIXES):
        return _load_tiff(path)
    raise SourceError(
        f"{path.name}: unsupported file type; open TIFF files (.tif, .tiff, .ome.tif, .btf), zarr folders "
        "(.zarr, .ome.zarr), NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or DICOM folders, or load the "
        "image into a numpy/dask array first"
    )


def _load_medical(path: Path | list) -> _Raw:
    """A NIfTI/NRRD file, a DICOM folder or a list of DICOM files, in (z, y, x) or (t, z, y, x) order."""
    from .medical import open_medical

    view, geometry = open_medical(path)
    files = [path] if isinstance(path, Path) and path.is_file() else None
    if files is None:
        folder = path if isinstance(path, Path) else None
        files = sorted(folder.iterdir()) if folder is not None else [Path(p) for p in path]
    stats = ",".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file())
    digest = hashlib.blake2b(stats.encode(), digest_size=16).hexdigest()
    prefix = f"{geometry.format}:{geometry.path}|files={digest}"
    axes = "tzyx" if len(view.shape) == 4 else "zyx"
    return _Raw([view], axes=axes, prefix=prefix, sample=False, medical=geometry)


def _load_group(group: zarr.Group) -> _Raw:
    """Levels and axes of an OME-Zarr multiscale image (v0.4: attrs["multiscales"], v0.5: attrs["ome"])."""
    attrs = group.attrs.asdict()
    ome = attrs.get("ome")
    multiscales = (ome.get("multiscales") if isinstance(ome, dict) else None) or attrs.get("multiscales")
    if not multiscales:
        arrays = sorted(group.array_keys())
        raise SourceError(
            f"the zarr group {group.store_path} has no OME-Zarr 'multiscales' metadata; open one of its "
            f"arrays instead (it holds {arrays or 'no arrays'})"
        )
    try:
        paths = [str(d["path"]) for d in multiscales[0]["datasets"]]
    except (KeyError, TypeError, IndexError) as err:
        raise SourceError(f"malformed OME-Zarr multiscales metadata in {group.store_path}: {err!r}") from err
    levels = []
    for p in paths:
        try:
            node = group[p]
        except KeyError:
            raise SourceError(
                f"the OME-Zarr metadata names level {p!r} but {group.store_path} has no such array"
            ) from None
        if not isinstance(node, zarr.Array):
            raise SourceError(f"the OME-Zarr level {p!r} in {group.store_path} is a group, not an array")
        levels.append(node)
    axes = None
    if multiscales[0].get("axes"):
        axes = "".join(_ome_letter(a) for a in multiscales[0]["axes"])
    folders = [group.path, *(a.path for a in levels)]
    return _Raw(levels, axes=axes, prefix=_zarr_prefix(levels[0], folders))


def _ome_letter(axis: Any) -> str:
    """An OME-Zarr axis (v0.4+: {"name", "type"}; v0.3: a name) -> one of "tczyx", or "?"."""
    name = str(axis.get("name") if isinstance(axis, dict) else axis).lower()
    kind = axis.get("type") if isinstance(axis, dict) else None
    return name if name in _LETTERS else {"time": "t", "channel": "c"}.get(kind, "?")


def _load_tiff(path: Path) -> _Raw:
    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError) as err:
        raise SourceError(f"could not read {path} as a TIFF file: {err}") from err
    stores = []
    try:
        if not tif.series:
            raise SourceError(f"{path} holds no image")
        series = tif.series[0]
        for level in series.levels:
            page = level.keyframe
            try:
                tifffile.TIFF.DECOMPRESSORS[page.compression]
                tifffile.TIFF.UNPREDICTORS[page.predictor]
            except KeyError as err:
                raise SourceError(
                    f"cannot decode {path.name}: {err.args[0]}; install it with: pip install imagecodecs"
                ) from None
        for i in range(len(series.levels)):
            stores.append(series.aszarr(level=i))
        levels = [zarr.open_array(store, mode="r") for store in stores]
    except BaseException:
        for store in stores:
            store.close()
        tif.close()
        raise
    letters = [_TIFF_LETTERS.get(a) for a in series.axes]
    axes = "".join(letters) if None not in letters and len(set(letters)) == len(letters) else None
    stat = path.stat()
    prefix = f"tiff:{path.resolve()}|size={stat.st_size}|mtime_ns={stat.st_mtime_ns}"
    closers = [store.close for store in stores] + [tif.close]
    rgb_hint = series.axes.endswith("S")
    named = series.axes if axes is None else None
    return _Raw(
        levels, axes=axes, named=named, rgb_hint=rgb_hint, prefix=prefix, sample=False, closers=closers
    )


def _zarr_prefix(array: zarr.Array, folders: Sequence[str]) -> str | None:
    """A local zarr store's folder plus the sizes and mtimes of the metadata files in ``folders``.

    Chunk files are not listed (there can be millions); the content sample that ``_build`` adds to
    the identity catches rewritten data. None for stores without a local folder (memory, remote).
    """
    root = getattr(array.store, "root", None)
    if root is None:
        return None
    root = Path(root)
    stats = []
    for folder, name in itertools.product(dict.fromkeys(folders), _ZARR_METADATA):
        f = root / folder / name
        if f.is_file():
            st = f.stat()
            stats.append(f"{folder}/{name}:{st.st_size}:{st.st_mtime_ns}")
    return f"zarr:{root.resolve()}|{','.join(stats)}"


def _content_signature(raw: Any, level: Any, n_frame_axes: int) -> str:
    """shape + dtype + a hash of values: all of a numpy array up to 64 MiB, else a deterministic sample.

    The sample of a lazy array is three 32 x 32 windows (two corners and the centre) of the first,
    middle and last frames, read through ``level``, the canonical view of ``raw`` (``n_frame_axes`` t/z axes).
    """
    shape = _shape(raw)
    h = hashlib.blake2b(digest_size=16)
    if isinstance(raw, np.ndarray):
        if raw.nbytes > _FULL_HASH_BYTES:  # a strided sample of about a million values over every axis
            step = max(1, round((raw.size / 1e6) ** (1 / raw.ndim)))
            raw = raw[(slice(None, None, step),) * raw.ndim]
        h.update(np.ascontiguousarray(raw).view(np.uint8).reshape(-1))
    else:
        lshape = _shape(level)
        nf = n_frame_axes
        frames, (ph, pw) = lshape[:nf], lshape[nf : nf + 2]
        n = math.prod(frames)
        for f in sorted({0, n // 2, n - 1}):
            frame = tuple(int(i) for i in np.unravel_index(f, frames)) if nf else ()
            for r, c in ((0, 0), (ph // 2, pw // 2), (ph - 1, pw - 1)):
                r0, c0 = max(0, min(r - 16, ph - 32)), max(0, min(c - 16, pw - 32))
                h.update(_fetch(level, (*frame, slice(r0, r0 + 32), slice(c0, c0 + 32))).tobytes())
    return f"array:{'x'.join(map(str, shape))}:{np.dtype(raw.dtype)}:{h.hexdigest()}"


def _shape(array: Any) -> tuple[int, ...]:
    shape = tuple(array.shape)
    if not all(isinstance(s, (int, np.integer)) for s in shape):
        raise SourceError(f"the image has unknown sizes {shape}; for dask call .compute_chunk_sizes() first")
    return tuple(int(s) for s in shape)


def _fetch(array: Any, key: tuple) -> np.ndarray:
    """``array[key]`` as a numpy array that owns its memory (dask computes here; zarr reads the chunks)."""
    out = np.asarray(array[key])
    return out.copy() if isinstance(array, np.ndarray) else out


def _expand_key(key: Any, ndim: int) -> tuple[int | slice, ...]:
    key = key if isinstance(key, tuple) else (key,)
    n_ellipsis = sum(k is Ellipsis for k in key)
    if n_ellipsis > 1 or len(key) - n_ellipsis > ndim:
        raise IndexError(f"too many indices for a {ndim}D image: {key}")
    if n_ellipsis:
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (ndim - len(key))
    out = []
    for k in key:
        if isinstance(k, slice):
            out.append(k)
        else:
            try:
                out.append(operator.index(k))
            except TypeError:
                raise TypeError(f"image levels take ints and slices, got {k!r}") from None
    return tuple(out)


def _clip(s: slice, n: int, name: str) -> slice:
    if not isinstance(s, slice):
        raise SourceError(f"{name} must be a slice, got {s!r}")
    if s.step not in (None, 1):
        raise SourceError(f"{name} must have step 1, got {s}; downsample after reading")
    start = 0 if s.start is None else operator.index(s.start)
    stop = n if s.stop is None else operator.index(s.stop)
    lo, hi = max(start, 0), min(stop, n)
    if lo >= hi:
        raise SourceError(
            f"{name} {start}:{stop} select nothing of the plane's 0:{n}; give a window that overlaps it"
        )
    return slice(lo, hi)
