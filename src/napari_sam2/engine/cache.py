"""Embedding cache: image features of planes and tiles, in memory and optionally on disk.

Encoding is the expensive step (seconds per tile on a CPU), so each tile is encoded once per model,
intensity window and input size. :class:`EmbeddingCache` keeps features in memory under a byte
budget (least recently used out first) and, given a directory, also on disk as zarr v3 groups that
survive restarts::

    <directory>/<digest[:2]>/<digest>.zarr/     one group per CacheKey.digest()
        zarr.json                             attributes: format version, the full key, shapes, checksums
        embed/, pos/, high_res_0/, high_res_1/  one single-chunk array per tensor

A disk entry is trusted only if its stored key equals the requested key field by field, and every
array has the recorded shape, dtype and sha256 (zarr silently reads a missing chunk as zeros, so the
checksum is what catches deleted or truncated chunk files). Anything else is reported as corrupt,
deleted and treated as a miss, so the caller recomputes. An entry of another format version
(:data:`FORMAT_VERSION`) is a plain miss, replaced when the key is put again; ``clear`` removes those
that no key reaches any more. Entries are written to a temporary folder
and renamed into place: a crash leaves at most an ignored ``.tmp-`` folder, never a half entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import operator
import os
import re
import secrets
import shutil
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import zarr
from torch import nn
from zarr.storage import LocalStore

from ..model import ImageFeatures

__all__ = ["CacheKey", "CacheStats", "EmbeddingCache", "weights_fingerprint"]

FORMAT_VERSION = 2
"""2: tile boxes are (row0, col0, row1, col1); version 1 entries (row0, row1, col0, col1) are ignored."""
_ATTR = "napari_sam2_embedding"
_ARRAYS = ("embed", "pos", "high_res_0", "high_res_1")
_DISK_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# dtypes a cached tensor may have in memory (bfloat16 comes from CUDA autocast)
_TENSOR_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
STALE_TMP_SECONDS = 3600.0
"""A temporary folder older than this is a crash leftover; ``put`` of the same key removes it."""
_ENTRY_NAME = re.compile(r"^[0-9a-f]{64}\.zarr(\.(tmp|trash)-.+)?$")
# What reading a damaged entry can raise: missing files, bad JSON or metadata (zarr's errors are
# ValueErrors), missing keys or arrays, wrong types in the attributes, codec failures.
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError)


class _CorruptEntry(Exception):
    """A disk entry that exists but must not be used."""


@dataclass(frozen=True)
class CacheKey:
    """Everything an encoded tile depends on.

    Attributes:
        data_id: identity of the data (from the image source: path and modification time, array id...).
        frame: index of the plane over the frame axes, e.g. ``(z,)`` or ``(t, z)``; ``()`` for 2D.
        tile: (row0, col0, row1, col1) of the encoded region, in plane pixels (ends exclusive).
        model_id: model variant name and weights fingerprint.
        window: (low, high) intensity window in data units.
        image_size: the model's input size S.
    """

    data_id: str
    frame: tuple[int, ...]
    tile: tuple[int, int, int, int]
    model_id: str
    window: tuple[float, float]
    image_size: int

    def __post_init__(self) -> None:
        frame = (self.frame,) if isinstance(self.frame, (int, np.integer)) else self.frame
        try:
            frame = tuple(operator.index(i) for i in frame)
            tile = tuple(operator.index(i) for i in self.tile)
            window = tuple(float(v) + 0.0 for v in self.window)  # + 0.0: -0.0 -> 0.0
            image_size = operator.index(self.image_size)
        except TypeError as err:
            raise ValueError(f"invalid cache key field: {err}") from err
        if not isinstance(self.data_id, str) or not isinstance(self.model_id, str):
            raise ValueError("data_id and model_id must be strings")
        if len(tile) != 4 or tile[0] >= tile[2] or tile[1] >= tile[3]:
            raise ValueError(
                f"tile must be (row0, col0, row1, col1) with row0 < row1, col0 < col1, got {self.tile}"
            )
        if len(window) != 2 or not all(math.isfinite(v) for v in window):
            raise ValueError(f"window must be two finite numbers (low, high), got {self.window}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "tile", tile)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "image_size", image_size)

    def to_record(self) -> dict:
        """The key as JSON-ready data; floats as ``repr`` strings (exact, shortest round trip)."""
        return {
            "data_id": self.data_id,
            "frame": list(self.frame),
            "tile": list(self.tile),
            "model_id": self.model_id,
            "window": [repr(v) for v in self.window],
            "image_size": self.image_size,
        }

    def digest(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`to_record`."""
        text = json.dumps(self.to_record(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).hexdigest()


@dataclass
class CacheStats:
    """Counters since the cache was created.

    ``hits`` counts every ``get`` that returned features (``disk_hits`` of them came from disk);
    ``misses`` every ``get`` that returned None, so ``hits + misses`` is the number of gets.
    ``evictions`` counts entries dropped from memory for the byte budget; ``corrupt`` disk entries
    found damaged or belonging to another key (deleted, and counted as misses too).
    """

    hits: int = 0
    misses: int = 0
    disk_hits: int = 0
    evictions: int = 0
    corrupt: int = 0


def _tensors(features: ImageFeatures) -> tuple[torch.Tensor, ...]:
    return (features.embed, features.pos, features.high_res[0], features.high_res[1])


def _nbytes(features: ImageFeatures) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(features))


def _compact_cpu(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the CPU, copied if it is a view into a larger buffer (which would be kept alive).

    A tensor that needs no change is returned as is (same object).
    """
    if t.requires_grad:
        t = t.detach()
    t = t.cpu()
    if not t.is_contiguous() or t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone(memory_format=torch.contiguous_format)
    return t


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class EmbeddingCache:
    """Image features by :class:`CacheKey`: LRU in memory, optionally also on disk (zarr v3).

    Args:
        max_bytes: memory budget; least recently used entries are evicted past it. An entry larger
            than the budget is not kept in memory (it still goes to disk). 0 disables the memory tier.
        directory: where to keep entries on disk; None for memory only.
        disk_dtype: "float32" (default, exact) or "float16" (half the disk space, ~1e-3 relative error).
            Tensors come back with the dtype they were put with. An entry stored at lower precision than
            this cache's ``disk_dtype`` counts as a miss, and the next ``put`` replaces it.

    ``get`` returns tensors on the CPU; a memory hit returns the very object that was stored. All
    methods are safe to call from several threads.
    """

    def __init__(
        self, max_bytes: int = 2 * 2**30, directory: str | Path | None = None, disk_dtype: str = "float32"
    ) -> None:
        if isinstance(max_bytes, bool) or operator.index(max_bytes) < 0:
            raise ValueError(f"max_bytes must be a non-negative int, got {max_bytes!r}")
        if disk_dtype not in _DISK_DTYPES:
            raise ValueError(f"disk_dtype must be one of {sorted(_DISK_DTYPES)}, got {disk_dtype!r}")
        self.max_bytes = int(max_bytes)
        self.directory = None if directory is None else Path(directory)
        self.disk_dtype = disk_dtype
        self._memory: OrderedDict[CacheKey, tuple[ImageFeatures, int]] = OrderedDict()
        self._nbytes = 0
        self._stats = CacheStats()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ public API
    @property
    def nbytes(self) -> int:
        """Bytes held in memory."""
        return self._nbytes

    @property
    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        with self._lock:
            return replace(self._stats)

    def __len__(self) -> int:
        """Entries in memory."""
        return len(self._memory)

    def __contains__(self, key: object) -> bool:
        """In memory, or an entry exists on disk (not verified until ``get``). Changes no statistics."""
        if not isinstance(key, CacheKey):
            return False
        with self._lock:
            if key in self._memory:
                return True
        return self.directory is not None and self._path(key).is_dir()

    def get(self, key: CacheKey) -> ImageFeatures | None:
        """The features stored under ``key``, or None (compute them and :meth:`put` them)."""
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None:
                self._memory.move_to_end(key)
                self._stats.hits += 1
                return entry[0]
        features = self._read_disk(key) if self.directory is not None else None
        with self._lock:
            if features is None:
                self._stats.misses += 1
                return None
            self._stats.hits += 1
            self._stats.disk_hits += 1
            self._remember(key, features)
        return features

    def put(self, key: CacheKey, features: ImageFeatures) -> None:
        """Store ``features`` (moved to the CPU) under ``key``, in memory and on disk if configured.

        A failed disk write (disk full, permissions) warns and leaves the memory entry in place.
        """
        if not isinstance(key, CacheKey):
            raise TypeError(f"key must be a CacheKey, got {type(key).__name__}")
        tensors = _tensors(features)
        for name, t in zip(_ARRAYS, tensors, strict=True):
            if t.ndim != 4 or t.dtype not in _TENSOR_DTYPES.values():
                raise ValueError(f"{name} must be a 4-D float tensor, got {tuple(t.shape)} {t.dtype}")
        compact = tuple(_compact_cpu(t) for t in tensors)
        if any(c is not t for c, t in zip(compact, tensors, strict=True)):
            features = ImageFeatures(compact[0], compact[1], (compact[2], compact[3]))
        with self._lock:
            self._remember(key, features)
        if self.directory is not None:
            self._write_disk(key, features)

    def clear(self) -> None:
        """Forget everything: memory, and on disk every entry and leftover temporary folder.

        Only folders named like cache entries are removed; other files in ``directory`` are kept.
        """
        with self._lock:
            self._memory.clear()
            self._nbytes = 0
        if self.directory is None or not self.directory.is_dir():
            return
        for shard in self.directory.iterdir():
            if not (shard.is_dir() and re.fullmatch(r"[0-9a-f]{2}", shard.name)):
                continue
            for entry in shard.iterdir():
                if _ENTRY_NAME.match(entry.name):
                    shutil.rmtree(entry, ignore_errors=True)
            with contextlib.suppress(OSError):  # not empty: holds files that are not ours
                shard.rmdir()

    # ------------------------------------------------------------------ memory
    def _remember(self, key: CacheKey, features: ImageFeatures) -> None:
        """Insert as most recently used and evict past the budget. Caller holds the lock."""
        old = self._memory.pop(key, None)
        if old is not None:
            self._nbytes -= old[1]
        size = _nbytes(features)
        if size > self.max_bytes:
            return
        self._memory[key] = (features, size)
        self._nbytes += size
        while self._nbytes > self.max_bytes:
            _, (_, evicted) = self._memory.popitem(last=False)
            self._nbytes -= evicted
            self._stats.evictions += 1

    # ------------------------------------------------------------------ disk
    def _path(self, key: CacheKey) -> Path:
        digest = key.digest()
        return self.directory / digest[:2] / f"{digest}.zarr"

    def _read_disk(self, key: CacheKey) -> ImageFeatures | None:
        path = self._path(key)
        if not path.is_dir():
            return None
        try:
            return _read_entry(path, key, self.disk_dtype)
        except (_LowerPrecision, _OtherFormat):
            return None
        except (_CorruptEntry, *_READ_ERRORS) as err:
            with self._lock:
                self._stats.corrupt += 1
            warnings.warn(
                f"embedding cache entry {path} is unusable ({type(err).__name__}: {err}); "
                "it was deleted and will be recomputed",
                RuntimeWarning,
                stacklevel=3,
            )
            _remove(path)
            return None

    def _write_disk(self, key: CacheKey, features: ImageFeatures) -> None:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(final)
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            _write_entry(tmp, key, features, _DISK_DTYPES[self.disk_dtype])
            _publish(tmp, final)
        except OSError as err:
            warnings.warn(
                f"could not write embedding cache entry {final} ({err}); continuing without it",
                RuntimeWarning,
                stacklevel=3,
            )
        finally:
            if tmp.exists():
                _remove(tmp)


class _OtherFormat(Exception):
    """An entry written in another format version (e.g. version 1's (row0, row1, col0, col1) tile
    boxes): a miss, not corruption; the next ``put`` of the key replaces it."""


class _LowerPrecision(Exception):
    """A valid entry stored in float16 while the cache wants float32: a miss, not corruption."""


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _remove_stale_tmp(final: Path) -> None:
    """Delete this key's temporary folders left by a crash (older than STALE_TMP_SECONDS)."""
    now = time.time()
    for tmp in final.parent.glob(f"{final.name}.tmp-*"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                _remove(tmp)
        except OSError:  # removed meanwhile by another process
            pass


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` to ``final``; an existing entry is moved aside first.

    ``final`` therefore always names either nothing or a complete entry.
    """
    trash = None
    if final.exists():
        trash = final.with_name(f"{final.name}.trash-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            os.replace(final, trash)
        except FileNotFoundError:  # another process removed or replaced it meanwhile
            trash = None
    try:
        os.replace(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        # another process published the same key between our two renames: keep theirs
    if trash is not None:
        _remove(trash)


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).view(np.uint8)).hexdigest()


def _write_entry(path: Path, key: CacheKey, features: ImageFeatures, disk_dtype: torch.dtype) -> None:
    group = zarr.open_group(store=LocalStore(path), mode="w", zarr_format=3)
    arrays = {}
    for name, t in zip(_ARRAYS, _tensors(features), strict=True):
        data = t.to(disk_dtype).numpy()
        array = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=data.shape)
        array[...] = data
        arrays[name] = {"shape": list(data.shape), "dtype": _dtype_name(t.dtype), "sha256": _sha256(data)}
    group.attrs[_ATTR] = {
        "format_version": FORMAT_VERSION,
        "key": key.to_record(),
        "disk_dtype": _dtype_name(disk_dtype),
        "arrays": arrays,
    }


def _read_entry(path: Path, key: CacheKey, wanted_disk_dtype: str) -> ImageFeatures:
    group = zarr.open_group(store=LocalStore(path, read_only=True), mode="r")
    meta = group.attrs.get(_ATTR)
    if not isinstance(meta, dict):
        raise _CorruptEntry("no napari-sam2 attributes")
    if meta.get("format_version") != FORMAT_VERSION:
        raise _OtherFormat
    stored, expected = meta.get("key"), key.to_record()
    if not isinstance(stored, dict):
        raise _CorruptEntry("no stored key")
    for f in fields(CacheKey):
        if stored.get(f.name) != expected[f.name]:
            raise _CorruptEntry(
                f"stored key field {f.name!r} is {stored.get(f.name)!r}, requested {expected[f.name]!r}"
            )
    disk_dtype = meta.get("disk_dtype")
    if disk_dtype not in _DISK_DTYPES:
        raise _CorruptEntry(f"unknown disk dtype {disk_dtype!r}")
    if _DISK_DTYPES[disk_dtype].itemsize < _DISK_DTYPES[wanted_disk_dtype].itemsize:
        raise _LowerPrecision
    tensors = []
    for name in _ARRAYS:
        info = meta["arrays"][name]
        array = group[name]
        if (
            not isinstance(array, zarr.Array)
            or list(array.shape) != info["shape"]
            or array.dtype != disk_dtype
        ):
            raise _CorruptEntry(f"array {name!r} does not match its recorded shape/dtype")
        if info["dtype"] not in _TENSOR_DTYPES:
            raise _CorruptEntry(f"array {name!r} has unknown tensor dtype {info['dtype']!r}")
        data = array[...]
        if _sha256(data) != info["sha256"]:
            raise _CorruptEntry(f"array {name!r} fails its checksum (missing or damaged chunk)")
        tensors.append(torch.from_numpy(data).to(_TENSOR_DTYPES[info["dtype"]]))
    embed, pos, h0, h1 = tensors
    return ImageFeatures(embed, pos, (h0, h1))


def weights_fingerprint(model: nn.Module | Mapping[str, torch.Tensor], samples: int = 256) -> str:
    """A cheap content fingerprint of a model's weights (16 hex digits), stable across processes.

    sha256 over each state-dict entry's name, shape, dtype and the bytes of ``samples`` evenly spaced
    values (first and last included). Different checkpoints and fine-tunes differ everywhere, so they
    get different fingerprints; an edit of single values between the sampled positions would not be
    seen. Only the samples leave the device.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else model
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype};".encode())
        flat = t.reshape(-1)
        n = flat.numel()
        if n == 0:
            continue
        k = min(n, samples)
        idx = (torch.arange(k, dtype=torch.int64) * (n - 1)) // max(k - 1, 1)
        sample = flat[idx.to(flat.device)].cpu().contiguous()
        h.update(sample.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
