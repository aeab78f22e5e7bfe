"""Load a SAM2-family model by name (SAM 2/2.1, EdgeTAM, EfficientTAM, MedSAM2), from a file, or the
shipped demo model, onto the chosen device.

Without a name, :func:`default_model` picks the best model available offline: official weights
already in the cache (smallest first), else the small demo model that ships inside the package
(trained on nuclei, mostly synthetic; for trying the plugin, rough on real data).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..model import Sam2Config, Sam2Model
from ..model.checkpoint import CheckpointError, load_checkpoint
from ..model.config import DEMO_CONFIG
from ..model.weights import (
    ALIASES,
    FAMILY_WEIGHTS,
    OFFICIAL_WEIGHTS,
    UnknownWeightsError,
    cache_dir,
    cached_weights_path,
    ensure_weights,
    tqdm_progress,
)
from .device import select_device

__all__ = [
    "DEMO_NAME",
    "DEFAULT_PREFERENCE",
    "demo_checkpoint_path",
    "default_model_name",
    "default_model",
    "load_model",
]

DEMO_NAME = "demo"
"""Name of the small model shipped with the package: ``load_model("demo")``."""

DEFAULT_PREFERENCE = (
    "sam2.1_hiera_tiny",
    "sam2.1_hiera_small",
    "sam2.1_hiera_base_plus",
    "sam2.1_hiera_large",
)
"""Official weights :func:`default_model` uses when they are already cached, in this order."""


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")
"""Suffixes that make a missing ``source`` a missing file rather than an unknown model name."""

DEMO_FILE = Path(__file__).resolve().parent.parent / "data" / "demo_sam2.pt"
"""Where the demo checkpoint lives inside the installed package."""


def demo_checkpoint_path() -> Path:
    """The demo checkpoint inside the installed package (``napari_sam2/data/demo_sam2.pt``).

    Raises:
        CheckpointError: the file is missing (a source checkout without the data folder).
    """
    path = DEMO_FILE
    if not path.is_file():
        raise CheckpointError(
            f"no demo model at {path}: this version does not ship one yet (see docs/training.md). "
            "Train it with: napari-sam2 demo-model train --out " + str(path) + ", "
            "or load official weights, e.g. load_model('sam2.1_hiera_tiny')"
        )
    return path


def default_model_name() -> str:
    """The model :func:`default_model` loads, without loading it: the first cached official
    weights of :data:`DEFAULT_PREFERENCE` (checked against their checksums), else ``"demo"``."""
    for name in DEFAULT_PREFERENCE:
        if cached_weights_path(name) is not None:
            return name
    return DEMO_NAME


def default_model(device: str | torch.device | None = None) -> Sam2Model:
    """The best model available without a download; see :func:`default_model_name`.

    The demo model's config name is ``"demo"``, so messages and cache keys say which one is used.
    """
    return load_model(default_model_name(), device=device, download=False)


def load_model(
    source: str | os.PathLike | None = None,
    *,
    config: Sam2Config | str | None = None,
    device: str | torch.device | None = None,
    download: bool = True,
    progress: Callable[[int, int | None], None] | None = None,
) -> Sam2Model:
    """Load a SAM2 model, in eval mode, on ``device``.

    Args:
        source: a checkpoint file (official ``.pt`` layout or a bare state dict), a registry
            name such as ``"sam2.1_hiera_tiny"``, ``"edgetam"``, ``"efficienttam_ti"`` or
            ``"MedSAM2_latest"`` (downloaded once into the weights cache; short aliases such as
            ``"efficienttam_ti_512"`` work too), or ``"demo"`` for the small model shipped with
            the package. An existing file wins over a
            name. None: :func:`default_model` (cached official weights, else the demo model).
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
    if source is None:
        source = default_model_name()
    dev = select_device(device)
    if str(source) == DEMO_NAME and not Path(source).is_file():
        return load_checkpoint(demo_checkpoint_path(), config=config or DEMO_CONFIG).to(dev)
    path = Path(source)
    if not path.is_file():
        name = str(source).removesuffix(".pt")
        name = ALIASES.get(name, name)
        if name not in OFFICIAL_WEIGHTS and name not in FAMILY_WEIGHTS:
            known = [*OFFICIAL_WEIGHTS, *FAMILY_WEIGHTS, *ALIASES, DEMO_NAME]
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            looks_like_file = path.suffix.lower() in CHECKPOINT_SUFFIXES and not close
            if looks_like_file or os.sep in str(source) or "/" in str(source):
                raise CheckpointError(f"checkpoint file not found: {path}")
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            raise UnknownWeightsError(
                f"{source!r} is neither a file nor a known model name{hint}; names: "
                f"{', '.join([*OFFICIAL_WEIGHTS, *FAMILY_WEIGHTS, *ALIASES])}, "
                f"or {DEMO_NAME!r} for the shipped demo model"
            )
        if progress is None and download and not (cache_dir() / f"{name}.pt").is_file():
            with tqdm_progress(f"downloading {name}.pt") as bar:
                path = ensure_weights(name, download=download, progress=bar)
        else:
            path = ensure_weights(name, download=download, progress=progress)
        info = FAMILY_WEIGHTS.get(name)
        config = config or (info.config if info is not None else name)
    return load_checkpoint(path, config=config).to(dev)
