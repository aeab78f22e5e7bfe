"""Device choice in one place: CUDA, then MPS, then CPU; overridable; clear errors."""

from __future__ import annotations

import pytest
import torch

from napari_sam2.engine import device as device_mod
from napari_sam2.engine.device import DEVICE_ENV_VAR, DeviceError, autocast, select_device


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)
    assert select_device() == torch.device("cpu")
    monkeypatch.setattr(device_mod, "_mps_available", lambda: True)
    assert select_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device(None) == torch.device("cuda")


def test_environment_override(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV_VAR, "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device() == torch.device("cpu")
    assert select_device("cpu") == torch.device("cpu")


def test_unavailable_or_unknown_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "_mps_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        select_device("cuda")
    with pytest.raises(DeviceError, match="MPS is not available"):
        select_device("mps")
    with pytest.raises(DeviceError, match="unknown device"):
        select_device("gpu0")
    with pytest.raises(DeviceError, match="unsupported device type"):
        select_device("meta")


def test_autocast_is_a_no_op_on_cpu():
    with autocast(torch.device("cpu")):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
