"""Z-slices or time points of a lazily read image as the video frames of SAM2's tracker.

A :class:`FrameSequence` picks one frame axis of an :class:`ImageSource` (``z`` or ``t``), fixes the
other one if the image has both, chooses ONE intensity window for the whole dataset, and turns frame
``i`` into the model's input on demand. It is the ``frames`` callable a
:class:`~napari_sam2.engine.tracker.Tracker` takes::

    seq = FrameSequence(volume, axis="z", fixed={"t": 3}, image_size=model.config.image_size)
    tracker = Tracker(model, frames=seq, num_frames=len(seq), frame_hw=seq.frame_hw)

Only the window's sample is read when the sequence is built; each call reads one plane.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .intensity import IntensityWindow, apply_window, resolve_window, to_model_input
from .sources import ImageSource, open_image

__all__ = ["FrameError", "FrameSequence"]


class FrameError(ValueError):
    """A frame axis, fixed index or size that cannot be used; the message says what to pass."""


class FrameSequence:
    """The planes along one axis (``z`` or ``t``) of an image, as SAM2 model inputs.

    Args:
        image: an :class:`ImageSource`, or anything :func:`open_image` accepts (array, zarr, path).
            A path opened here is closed by :meth:`close`; a given ImageSource is left to its owner.
        axis: "z" or "t", the axis whose planes are the frames. None: "z" if the image has it, else "t".
        fixed: the index of the other frame axis when the image has both t and z, e.g. ``{"t": 3}``
            to run along z inside time point 3 of a (t, z, y, x) volume.
        window: anything :func:`resolve_window` takes (None/"auto", (low, high), a CT preset name, an
            IntensityWindow). Resolved once, from ``source.sample_values()`` for "auto", so every
            frame goes through the same window.
        image_size: the model's square input size S (``model.config.image_size``).
        cache_size: how many recent model inputs to keep (0: none).

    Raises:
        FrameError: a 2D image, an unknown or absent axis, a missing, extra or out-of-range ``fixed``
            index, a bad ``image_size`` or a negative ``cache_size``.
        SourceError, WindowError: the image cannot be opened, or the window cannot be resolved.
    """

    def __init__(
        self,
        image: ImageSource | Any,
        axis: str | None = None,
        fixed: Mapping[str, int] | None = None,
        window: IntensityWindow | Sequence[float] | str | None = None,
        *,
        image_size: int,
        cache_size: int = 2,
    ) -> None:
        for name, value, least in (("image_size", image_size, 1), ("cache_size", cache_size, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise FrameError(f"{name} must be an int >= {least}, got {value!r}")
        source = open_image(image)
        self._owns_source = source is not image
        try:
            frame_axes = source.axes[:-2]  # "", "z", "t" or "tz"
            if not frame_axes:
                raise FrameError(
                    f"the image is a single {source.plane_hw[0]} x {source.plane_hw[1]} plane (axes "
                    f"{source.axes!r}): there is nothing to propagate through; segment it as an image, "
                    "or give a (z, y, x) or (t, y, x) stack"
                )
            axis = ("z" if "z" in frame_axes else "t") if axis is None else axis
            if axis not in ("z", "t"):
                raise FrameError(f"axis must be 'z' or 't', got {axis!r}")
            if axis not in frame_axes:
                raise FrameError(
                    f"the image has no {axis} axis (axes {source.axes!r}); use axis={frame_axes[0]!r}"
                )
            self._key = self._frame_key(source, axis, dict(fixed or {}))
            self._window = resolve_window(window, source.sample_values)
        except BaseException:
            if self._owns_source:
                source.close()
            raise
        self._source, self._axis, self._image_size, self._cache_size = source, axis, image_size, cache_size
        self._num_frames = source.frame_shape[frame_axes.index(axis)]
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    @staticmethod
    def _frame_key(source: ImageSource, axis: str, fixed: dict[str, int]) -> list[int | None]:
        """The source's frame index with None where the frame number goes, e.g. [3, None] for "tzyx"."""
        frame_axes = source.axes[:-2]
        if axis in fixed:
            raise FrameError(f"fixed={fixed} names the frame axis {axis!r} itself; fix only the other axis")
        extra = [k for k in fixed if k not in set(frame_axes)]
        if extra:
            raise FrameError(
                f"fixed={fixed} names {extra}, which the image (axes {source.axes!r}) does not have as a "
                "frame axis; fix only the other frame axis of a (t, z, y, x) image, or drop fixed"
            )
        key: list[int | None] = []
        for letter, n in zip(frame_axes, source.frame_shape):
            if letter == axis:
                key.append(None)
                continue
            if letter not in fixed:
                raise FrameError(
                    f"the image has axes {source.axes!r}: running along {axis} needs the index of the other "
                    f"frame axis; missing: {letter} (pass fixed={{{letter!r}: 0..{n - 1}}})"
                )
            try:
                i = operator.index(fixed[letter])
            except TypeError:
                raise FrameError(f"fixed[{letter!r}] must be an integer, got {fixed[letter]!r}") from None
            if not 0 <= i < n:
                raise FrameError(f"fixed[{letter!r}]={i} is out of range; valid: 0..{n - 1}")
            key.append(i)
        return key

    @property
    def source(self) -> ImageSource:
        return self._source

    @property
    def axis(self) -> str:
        """The axis whose planes are the frames: "z" or "t"."""
        return self._axis

    @property
    def window(self) -> IntensityWindow:
        """The one window every frame goes through."""
        return self._window

    @property
    def num_frames(self) -> int:
        return self._num_frames

    @property
    def frame_hw(self) -> tuple[int, int]:
        """(H, W) of a frame in pixels: prompts are given and masks returned at this size."""
        return self._source.plane_hw

    def __len__(self) -> int:
        return self._num_frames

    def source_index(self, i: int) -> tuple[int, ...]:
        """Frame ``i``'s index into the source: e.g. ``(3, i)`` along z inside t=3 of "tzyx", ``(i,)`` for "zyx".

        Raises:
            IndexError: ``i`` outside 0..num_frames - 1 (negative indices are not wrapped).
        """
        i = operator.index(i)
        if not 0 <= i < self._num_frames:
            raise IndexError(
                f"frame {i} is outside the sequence: {self._num_frames} frames along {self._axis}, "
                f"valid: 0..{self._num_frames - 1}"
            )
        return tuple(i if k is None else k for k in self._key)

    def plane(self, i: int) -> np.ndarray:
        """The raw (H, W) or (H, W, 3) plane of frame ``i`` in the source's dtype (read now, not cached)."""
        return self._source.plane(self.source_index(i))

    def __call__(self, i: int) -> torch.Tensor:
        """Frame ``i`` as SAM2's input: (3, S, S) float32 on the CPU, windowed and ImageNet-normalised.

        Equals ``to_model_input(apply_window(plane(i), window), image_size)``. The last ``cache_size``
        inputs are kept and returned as the same tensor: do not modify it in place.
        """
        i = operator.index(i)
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        image = to_model_input(apply_window(self.plane(i), self._window), self._image_size)  # (3, S, S)
        if self._cache_size:
            self._cache[i] = image
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return image

    def crop(self, i: int, crop, size: int) -> torch.Tensor:
        """A square crop of frame ``i`` as SAM2's input (3, size, size), float32 on the CPU.

        ``crop`` (a :class:`~napari_sam2.engine.tracker.Crop`: row0, col0, height, width in plane
        pixels) may reach past the plane; only the part inside is read, the rest is padded with the
        intensity window's low value (0 after windowing). Resized to ``size`` only if the crop is
        not ``size`` pixels wide (native resolution otherwise).
        """
        r0, c0, r1, c1 = crop.inside(self.frame_hw)
        if r1 <= r0 or c1 <= c0:
            raise FrameError(
                f"crop {crop} does not overlap the {self.frame_hw[0]} x {self.frame_hw[1]} frame"
            )
        part = apply_window(
            self._source.region(self.source_index(i), slice(r0, r1), slice(c0, c1)), self._window
        )
        padded = crop.padded(part, self.frame_hw)
        return to_model_input(padded, size)

    def close(self) -> None:
        """Drop cached inputs and close the source if this sequence opened it (not a given ImageSource)."""
        self._cache.clear()
        if self._owns_source:
            self._source.close()

    def __repr__(self) -> str:
        fixed = {a: k for a, k in zip(self._source.axes, self._key) if k is not None}
        return (
            f"FrameSequence(axis={self._axis!r}, fixed={fixed}, num_frames={self._num_frames}, "
            f"frame_hw={self.frame_hw}, window={self._window.as_tuple()}, image_size={self._image_size})"
        )
