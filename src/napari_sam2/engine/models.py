"""Load a SAM2 model by official name or from a file, onto the chosen device."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..model import Sam2Config, Sam2Model
from ..model.checkpoint import CheckpointError, load_checkpoint
from ..model.weights import OFFICIAL_WEIGHTS, UnknownWeightsError, cache_dir, ensure_weights, tqdm_progress
from .device import select_device

__all__ = ["load_model"]


def load_model(
    source: str | os.PathLike,
    *,
    config: Sam2Config | str | None = None,
    device: str | torch.device | None = None,
    download: bool = True,
    progress: Callable[[int, int | None], None] | None = None,
) -> Sam2Model:
    """Load a SAM2 model, in eval mode, on ``device``.

    Args:
        source: a checkpoint file (official ``.pt`` layout or a bare state dict), or an official
            name such as ``"sam2.1_hiera_tiny"`` (downloaded once into the weights cache).
            An existing file wins over a name.
        config: the architecture, if it cannot be read from the file (see
            :func:`napari_sam2.model.checkpoint.load_checkpoint`).
        device: "auto" (default: CUDA, then MPS, then CPU), "cpu", "cuda", "cuda:N" or "mps".
        download: fetch official weights that are not cached yet.
        progress: ``progress(done_bytes, total_bytes)`` during a download; by default a tqdm bar
            when stderr is a terminal.

    Raises:
        CheckpointError: the file is unreadable or not a SAM2 checkpoint.
        napari_sam2.model.weights.WeightsUnavailableError: official weights not cached and not
            downloadable (the message says where to put them by hand).
        DeviceError: the device is not available.
    """
    dev = select_device(device)
    path = Path(source)
    if not path.is_file():
        name = str(source).removesuffix(".pt")
        if name not in OFFICIAL_WEIGHTS:
            if path.suffix or os.sep in str(source) or "/" in str(source):
                raise CheckpointError(f"checkpoint file not found: {path}")
            raise UnknownWeightsError(
                f"{source!r} is neither a file nor an official model name; "
                f"official names: {', '.join(OFFICIAL_WEIGHTS)}"
            )
        if progress is None and download and not (cache_dir() / f"{name}.pt").is_file():
            with tqdm_progress(f"downloading {name}.pt") as bar:
                path = ensure_weights(name, download=download, progress=bar)
        else:
            path = ensure_weights(name, download=download, progress=progress)
        config = config or name
    return load_checkpoint(path, config=config).to(dev)
