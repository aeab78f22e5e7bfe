"""Typed prompts in plane coordinates, and the single (row, col) -> model (x, y) conversion.

Everything the user gives is in the plane's pixel coordinates ordered (row, col), as numpy and
napari order axes. The model wants (x, y) in model-input pixels. :func:`to_model_xy` is the only
function that swaps the axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["PromptError", "Prompt", "to_model_xy", "prompt_tensors"]

POSITIVE, NEGATIVE = 1, 0
BOX_LABELS = (2, 3)


class PromptError(ValueError):
    """A prompt that cannot be used: wrong shape, unknown label, outside the plane, empty."""


@dataclass(frozen=True)
class Prompt:
    """Clicks and/or a box on one plane.

    Attributes:
        points: (N, 2) float, (row, col) in plane pixels (pixel centres at integers).
        labels: (N,) int, 1 = positive (inside the object), 0 = negative.
        box: optional (row0, col0, row1, col1) in plane pixels, corners in any order.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        pts = (
            np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
            if np.size(self.points)
            else np.zeros((0, 2))
        )
        labels = np.asarray(self.labels).reshape(-1)
        if len(pts) != len(labels):
            raise PromptError(
                f"{len(pts)} points but {len(labels)} labels; give one label (1 or 0) per point"
            )
        if labels.size and not np.isin(labels, (POSITIVE, NEGATIVE)).all():
            raise PromptError(
                f"point labels must be 1 (positive) or 0 (negative), got {sorted(set(labels.tolist()))}"
            )
        if not np.isfinite(pts).all():
            raise PromptError("point coordinates must be finite numbers")
        box = self.box
        if box is not None:
            box = tuple(float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1))
            if len(box) != 4 or not np.isfinite(box).all():
                raise PromptError(f"a box is (row0, col0, row1, col1), got {self.box!r}")
            r0, c0, r1, c1 = box
            box = (min(r0, r1), min(c0, c1), max(r0, r1), max(c0, c1))
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "labels", labels.astype(np.int64))
        object.__setattr__(self, "box", box)
        if not len(pts) and box is None:
            raise PromptError("a prompt needs at least one point or a box")

    def check_inside(self, plane_hw: tuple[int, int]) -> None:
        """Raise PromptError if a point or the box lies outside a plane of ``plane_hw`` pixels."""
        h, w = plane_hw
        coords = list(self.points)
        if self.box is not None:
            coords += [self.box[:2], self.box[2:]]
        for r, c in coords:
            if not (-0.5 <= r <= h - 0.5 and -0.5 <= c <= w - 0.5):
                raise PromptError(f"prompt at (row={r:g}, col={c:g}) lies outside the {h} x {w} plane")


def to_model_xy(
    points_rc: np.ndarray | torch.Tensor, plane_hw: tuple[int, int], image_size: int
) -> torch.Tensor:
    """(N, 2) (row, col) plane pixels -> (N, 2) float32 (x, y) model-input pixels.

    The plane is stretched to ``image_size`` x ``image_size`` (SAM2's input is square).
    """
    rc = torch.as_tensor(np.asarray(points_rc, dtype=np.float32)).reshape(-1, 2)
    h, w = plane_hw
    scale = torch.tensor([w, h], dtype=torch.float32)
    return rc.flip(-1) / scale * image_size


def prompt_tensors(
    prompt: Prompt,
    plane_hw: tuple[int, int],
    image_size: int,
    device: torch.device | str = "cpu",
    origin: tuple[float, float] = (0.0, 0.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs for one prompt: coords (1, N, 2) (x, y) and labels (1, N) int32.

    A box becomes two corner points with labels 2 and 3, placed before the clicks. ``origin`` is
    the (row, col) in the prompt's coordinates of the model input's top-left corner, for a
    window of ``plane_hw`` pixels cut from a larger plane (default: the whole plane).
    """
    pts = prompt.points
    labels = prompt.labels
    if prompt.box is not None:
        r0, c0, r1, c1 = prompt.box
        pts = np.concatenate([np.array([[r0, c0], [r1, c1]]), pts])
        labels = np.concatenate([np.array(BOX_LABELS), labels])
    coords = to_model_xy(
        np.asarray(pts, dtype=np.float64) - np.asarray(origin, dtype=np.float64), plane_hw, image_size
    )
    return coords[None].to(device), torch.as_tensor(labels, dtype=torch.int32)[None].to(device)
