"""The one place where napari-sam2 chooses a compute device and dtype.

Order: the caller's choice, else ``NAPARI_SAM2_DEVICE``, else CUDA, then Apple MPS, then CPU.
Weights always stay float32. On CUDA the heavy steps may run under bfloat16 autocast
(:func:`autocast`); on CPU and MPS everything is float32 (bfloat16 matrix products are ~100x
slower than float32 on common CPUs).
"""

from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["DeviceError", "select_device", "autocast"]

DEVICE_ENV_VAR = "NAPARI_SAM2_DEVICE"


class DeviceError(ValueError):
    """The requested device does not exist or is not available on this machine."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(device: str | torch.device | None = None) -> torch.device:
    """Resolve ``device`` ("cpu", "cuda", "cuda:1", "mps", "auto" or None) to a torch.device.

    Raises:
        DeviceError: for an unknown name or an unavailable accelerator, with the alternatives.
    """
    if device is None or str(device) == "auto":
        device = os.environ.get(DEVICE_ENV_VAR) or "auto"
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} was requested but CUDA is not available here; use 'cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found"
            )
    elif dev.type == "mps" and not _mps_available():
        raise DeviceError(
            f"device {device!r} was requested but Apple MPS is not available here; use 'cpu' or 'auto'"
        )
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unsupported device type {dev.type!r}; use 'cpu', 'cuda' or 'mps'")
    return dev


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA devices that support it; a no-op elsewhere."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
