"""A pretend accelerator on a CPU-only machine, to test that tensors stay on the model's device.

:class:`FakeAccelerator` is a :class:`torch.overrides.TorchFunctionMode` that follows where every
tensor would live had the model been moved to an accelerator, while all numbers are computed on the
CPU as usual. A tensor is

- on the *accelerator*: the model's parameters and buffers, what ``.to(model.device)`` returns (the
  model reports :attr:`FakeAccelerator.device` while the mode is on, see :meth:`FakeAccelerator.on`),
  what a factory function makes with ``device=<the accelerator>``, and every result of an operation
  with an accelerator input;
- on the *host*: what ``.cpu()`` and ``.to("cpu")`` (the string) return, and what is made from
  numpy, lists or nothing without a device (``torch.from_numpy``, ``torch.tensor``,
  ``torch.zeros(3)``) or with ``device="cpu"``, and the results of operations on host tensors;
- *unknown*: moved or made with a ``torch.device`` object for the CPU, which is what ``x.device``
  gives for every tensor here (``.to(device=x.device)``, ``torch.arange(n, device=x.device)``):
  such a tensor follows its neighbours, as it would on a real device.

Then it behaves as CUDA does: an operation that mixes accelerator tensors with host tensors of one
element or more raises ``RuntimeError("Expected all tensors to be on the same device ...")``, and
``.numpy()`` of an accelerator tensor raises ``TypeError``. Copies between the two (``copy_``,
assigning into a slice, indexing with host indices) are allowed, as on CUDA. Every violation is
also kept in :attr:`FakeAccelerator.violations`, so a test can assert there were none even where
code catches the error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["FakeAccelerator"]

_TAG = "_napari_sam2_fake_device"
ACCEL, HOST = "accelerator", "host"
_COPIES = {torch.Tensor.copy_, torch.Tensor.__setitem__}
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.index_select}
_READ_ONLY = {torch.Tensor.__repr__, torch.Tensor.__format__, torch.Tensor.__len__}


def where(t: object) -> str | None:
    """ACCEL, HOST or None (unknown) for a tensor."""
    return getattr(t, _TAG, None) if isinstance(t, torch.Tensor) else None


def _tagger(tag: str | None):
    def put(t: object) -> object:
        if isinstance(t, torch.Tensor) and tag is not None:
            setattr(t, _TAG, tag)
        return t

    return put


def _fresh(result: object, source: object) -> object:
    """A new tensor object for ``result`` when a CPU no-op returned ``source`` itself."""
    if isinstance(result, torch.Tensor) and result is source:
        return torch.ops.aten.alias(result)
    return result


class FakeAccelerator(TorchFunctionMode):
    """Pretend ``model`` lives on an accelerator; see the module docstring.

    Attributes:
        violations: one line per operation that mixed host and accelerator tensors (or per
            ``.numpy()`` of an accelerator tensor).
        accel_ops: operations that ran with accelerator inputs (the model's compute).
    """

    device = torch.device("meta")

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.violations: list[str] = []
        self.accel_ops = 0
        for t in (*model.parameters(), *model.buffers()):
            setattr(t, _TAG, ACCEL)

    @classmethod
    @contextlib.contextmanager
    def on(cls, model: torch.nn.Module, model_class: type) -> Iterator[FakeAccelerator]:
        """The mode, with ``model_class.device`` reporting the fake device meanwhile."""
        old = model_class.device
        model_class.device = property(lambda self: cls.device)
        try:
            with cls(model) as mode:
                yield mode
        finally:
            model_class.device = old

    def _target(self, device: object) -> tuple[bool, str | None]:
        """(names a device, where tensors put there live: None for a CPU ``torch.device``, which may
        be some tensor's ``x.device``)."""
        if isinstance(device, torch.Tensor):
            return True, where(device)
        if isinstance(device, (str, torch.device)):
            try:
                dev = torch.device(device)
            except RuntimeError:
                return False, None
            if dev.type == self.device.type:
                return True, ACCEL
            return True, HOST if isinstance(device, str) else None
        return False, None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.numpy and where(args[0]) == ACCEL:
            self.violations.append("numpy() of an accelerator tensor")
            raise TypeError("can't convert an accelerator tensor to numpy: use Tensor.cpu() first")
        if func is torch.Tensor.cpu:
            return _tagger(HOST)(_fresh(func(*args, **kwargs), args[0]))
        if func is torch.Tensor.to:
            return self._to(func, args, kwargs)
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        if "device" in kwargs:  # a factory function (zeros, full, arange, tensor, ...) with a device
            named, tag = self._target(kwargs["device"])
            if named:
                kwargs["device"] = "cpu"
                return tree_map(_tagger(tag), func(*args, **kwargs))
        if func in _READ_ONLY:
            return func(*args, **kwargs)
        if func in _COPIES:
            return func(*args, **kwargs)
        if func in _INDEXING:
            return tree_map(_tagger(where(args[0])), func(*args, **kwargs))
        self._check(func, tensors)
        out = func(*args, **kwargs)
        tags = {where(t) for t in tensors}
        if ACCEL in tags:
            tag = ACCEL
        elif HOST in tags or not tensors:  # from host tensors, or made from numpy/lists/nothing
            tag = HOST
        else:
            tag = None
        return tree_map(_tagger(tag), out)

    def _to(self, func, args, kwargs):
        tensor, rest = args[0], list(args[1:])
        named, tag = False, None
        for i, a in enumerate(rest):
            named, tag = self._target(a)
            if named:
                rest[i] = a.dtype if isinstance(a, torch.Tensor) else "cpu"
                break
        if "device" in kwargs:
            named, tag = self._target(kwargs["device"])
            kwargs["device"] = "cpu"
        out = _fresh(func(tensor, *rest, **kwargs), tensor)
        return _tagger(tag if named else where(tensor))(out)

    def _check(self, func, tensors: list[torch.Tensor]) -> None:
        if not any(where(t) == ACCEL for t in tensors):
            return
        self.accel_ops += 1
        host = [t for t in tensors if where(t) == HOST and t.dim() > 0]  # CPU scalars mix, as on CUDA
        if host:
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
            shapes = ", ".join(str(tuple(t.shape)) for t in host)
            self.violations.append(f"{name}: host tensors {shapes} with accelerator tensors")
            raise RuntimeError(
                f"Expected all tensors to be on the same device, but {name} got host tensors of shape "
                f"{shapes} with tensors on the (fake) accelerator"
            )
