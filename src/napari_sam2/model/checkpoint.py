"""Reading and writing SAM2 checkpoints in Meta's official format.

An official file is ``torch.save({"model": state_dict})``; a bare state dict is accepted too.
Files are read with ``weights_only=True`` (no code runs on load) onto the CPU, and loaded
strictly: any missing, unexpected or mis-shaped entry is an error that names the entries and,
where the file matches another variant, says which one.

Our own files (:func:`save_checkpoint`) add a ``"config"`` entry so that custom models reload
without being told their architecture; Meta's loader ignores it.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import torch

from .config import (
    FAMILY_VARIANTS,
    VARIANTS,
    HieraConfig,
    PerceiverConfig,
    RepViTConfig,
    Sam2Config,
    ViTConfig,
)
from .sam2_model import Sam2Model
from .weights import FAMILY_WEIGHTS

__all__ = ["CheckpointError", "read_state_dict", "identify_variant", "load_checkpoint", "save_checkpoint"]


class CheckpointError(ValueError):
    """A file is missing, unreadable, or not a checkpoint for the requested SAM2 model."""


def _read(path: Path) -> object:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file {path} is empty; delete it and download it again")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (not a torch.save archive): it looks truncated or corrupt, "
            "or is another kind of file (e.g. an HTML error page saved instead of the weights). "
            "Delete it and download it again."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln for ln in str(exc).splitlines() if "Unpickler error" in ln]
        detail = f" ({lines[0].strip()})" if lines else ""
        raise CheckpointError(
            f"{path} holds Python objects other than tensors, so it is not a plain SAM2 checkpoint "
            f"and was not loaded (loading it could run arbitrary code){detail}."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else "no details"
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint: it looks truncated or corrupt "
            f"({type(exc).__name__}: {first}). Delete it and download it again."
        ) from None


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Read ``path`` -> (state dict, stored config dict or None), on the CPU.

    Raises:
        CheckpointError: for a missing, empty, truncated, corrupt or non-SAM2 file.
    """
    path = Path(path)
    obj = _read(path)
    config = None
    if isinstance(obj, Mapping) and "model" in obj:
        config = obj.get("config") if isinstance(obj.get("config"), Mapping) else None
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} is a PyTorch file but not a SAM2 checkpoint: expected a dict whose 'model' entry "
            "is a state dict of tensors (the layout of Meta's sam2*.pt files), or a bare state dict."
        )
    if not any(k.startswith("image_encoder.trunk.") for k in obj):
        raise CheckpointError(
            f"{path} holds a state dict, but not of a SAM2 model (no 'image_encoder.trunk.*' entries; "
            f"first keys: {', '.join(list(obj)[:3])})."
        )
    return dict(obj), config


@cache
def _layout(config: Sam2Config) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the state dict of ``config``, computed without allocating weights
    (on the meta device; used by tests, not on the loading path, as it imports much of torch)."""
    with torch.device("meta"):
        model = Sam2Model(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def identify_variant(state: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the official variant that ``state`` looks like, or None.

    SAM2 variants are told apart cheaply by the trunk's width and depth and the SAM 2.1 entries;
    other families (:data:`FAMILY_VARIANTS`, e.g. EdgeTAM) by their whole layout of names and
    shapes. :func:`load_checkpoint` then checks every name and shape. EfficientTAM's files of one
    trunk share one layout (they differ in how they are run, see ``FAMILY_VARIANTS``): the plain
    variant, listed first, is the answer.
    """
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    vit_pos = state.get("image_encoder.trunk.pos_embed")
    if patch is None or (vit_pos is not None and vit_pos.ndim == 3):  # RepViT or ViT trunk
        if any(k.startswith(("image_encoder.trunk.body.", "image_encoder.trunk.blocks.")) for k in state):
            shapes = _shapes(state)
            for name, cfg in FAMILY_VARIANTS.items():
                if _layout(cfg) == shapes:
                    return name
        return None
    depth = len({k.split(".")[3] for k in state if k.startswith("image_encoder.trunk.blocks.")})
    sam21 = "no_obj_embed_spatial" in state
    for name, cfg in VARIANTS.items():
        if (cfg.trunk.embed_dim, cfg.trunk.depth, cfg.sam21) == (patch.shape[0], depth, sam21):
            return name
    return None


def _config_from_dict(d: Mapping) -> Sam2Config:
    def plain(items: Mapping) -> dict:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in items.items()}

    fields = dict(d)
    trunk = plain(fields.pop("trunk", {}))
    if "widths" in trunk:
        trunk = RepViTConfig(**trunk)
    elif "patch_size" in trunk:
        trunk = ViTConfig(**trunk)
    else:
        trunk = HieraConfig(**trunk)
    perceiver = fields.pop("perceiver", None)
    perceiver = PerceiverConfig(**plain(perceiver)) if perceiver is not None else None
    return Sam2Config(trunk=trunk, perceiver=perceiver, **plain(fields))


def _mismatch_message(
    path: Path, config: Sam2Config, expected: dict[str, tuple[int, ...]], state: Mapping[str, torch.Tensor]
) -> str:
    got = _shapes(state)
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k} {got[k]} (expected {expected[k]})" for k in expected if k in got and got[k] != expected[k]]

    def few(items: list[str]) -> str:
        return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")

    parts = [f"{path} does not fit the model {config.name!r}:"]
    if missing:
        parts.append(f"{len(missing)} missing entries ({few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected entries ({few(unexpected)})")
    if wrong:
        parts.append(f"{len(wrong)} entries of another shape ({few(wrong)})")
    guess = identify_variant(state)
    if guess and guess != config.name:
        parts.append(f"This file looks like {guess!r}: load it with that name or without naming a model.")
    else:
        parts.append("It matches none of the official SAM2/SAM2.1 variants or the other known models.")
    return " ".join(parts)


def _config_for_file(path: Path) -> Sam2Config | None:
    """The architecture the registry names for a file of this name (MedSAM2's 512 input), or None."""
    for info in FAMILY_WEIGHTS.values():
        if info.config is not None and info.filename == path.name:
            return {**VARIANTS, **FAMILY_VARIANTS}[info.config]
    return None


def load_checkpoint(path: str | os.PathLike, config: Sam2Config | str | None = None) -> Sam2Model:
    """Build a :class:`Sam2Model` from a checkpoint file, strictly, on the CPU, in eval mode.

    Args:
        path: an official ``.pt`` file, a bare state dict, or a file from :func:`save_checkpoint`.
        config: the architecture (a :class:`Sam2Config` or a variant name). By default the config
            stored in the file, else the one the weights registry names for the file's name
            (``MedSAM2_*.pt``: SAM 2.1 tiny at 512), else the variant whose layout matches.
            The input size is not visible in the weights: pass a config for sizes other than
            1024 when the file has another name.

    Raises:
        CheckpointError: unreadable file, or weights that do not fit the model.
    """
    path = Path(path)
    state, stored = read_state_dict(path)
    known = {**VARIANTS, **FAMILY_VARIANTS}
    if isinstance(config, str):
        config = known.get(config.removesuffix(".pt"))
        if config is None:
            raise CheckpointError(f"unknown SAM2 variant; known variants: {', '.join(known)}")
    if config is None and stored is not None:
        try:
            config = _config_from_dict(stored)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{path} stores a model config that this version cannot read: {exc}"
            ) from None
    if config is None:
        config = _config_for_file(path)
    if config is None:
        name = identify_variant(state)
        if name is None:
            raise CheckpointError(
                f"{path} is a SAM2-like state dict that matches none of the official variants "
                f"({', '.join(known)}); pass its config explicitly."
            )
        config = known[name]
    model = Sam2Model(config)
    expected = _shapes(model.state_dict())
    if _shapes(state) != expected:
        raise CheckpointError(_mismatch_message(path, config, expected, state))
    model.load_state_dict(state, strict=True)
    return model.eval()


def save_checkpoint(model: Sam2Model, path: str | os.PathLike) -> Path:
    """Write ``model`` in the official layout plus its config, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save({"model": model.state_dict(), "config": dataclasses.asdict(model.config)}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
