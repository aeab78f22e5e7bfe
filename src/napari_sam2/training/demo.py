"""The demo model: a small SAM2 trained from scratch, shipped with the package.

It lets the plugin, the tests and the tutorials run offline, without Meta's weights. It is trained on
what :mod:`.synthetic` draws (fluorescent nuclei and cells, 2D, 3D and moving); only its multimask
alternatives stage also sees augmented real PlantSeg nuclei (:mod:`.real_data`). It knows nuclei,
not other structures, so use an official model for anything else. ``load_model("demo")`` loads it;
:func:`.models.default_model` falls back to it when no official weights are cached. Its recipes
(every setting of each version) are in :mod:`.recipes`; this module draws their data, trains them
and scores the result.

The one command that recreates it (``napari_sam2/data/demo_sam2.pt`` and the recipe with its
metrics, ``demo_sam2.json``)::

    napari-sam2 demo-model train --recipe v1.2 --out src/napari_sam2/data/demo_sam2.pt

and to score a checkpoint on held-out generated data::

    napari-sam2 demo-model evaluate --model src/napari_sam2/data/demo_sam2.pt
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..engine.provenance import file_sha256
from ..model import Sam2Model
from ..model.checkpoint import load_checkpoint, save_checkpoint
from ..model.config import DEMO_CONFIG
from . import synthetic
from .alternatives import AlternativesConfig, AlternativesResult, multimask_scores, train_alternatives
from .finetune import TrainingConfig, TrainingError, TrainingResult, train
from .real_data import augmented_stacks
from .recipes import RECIPE_V1_1, RECIPE_V1_2, RECIPE_V2, RECIPES, DemoRecipe
from .scratch_init import localise_memory_attention, localise_prompt_attention
from .texture import TextureConfig, TextureResult, train_texture

__all__ = [
    "DemoRecipe",
    "RECIPE_V1_1",
    "RECIPE_V1_2",
    "RECIPE_V2",
    "RECIPES",
    "training_data",
    "widened_data",
    "heldout_data",
    "evaluate_demo",
    "train_demo",
]

COMMAND = "napari-sam2 demo-model train --recipe v1.2 --out src/napari_sam2/data/demo_sam2.pt"

HELDOUT_SEED = 90_000
"""Held-out evaluation data uses seeds from here on, far from every training seed."""


def _stack_2d(i: int, seed: int, shape) -> synthetic.SyntheticStack:
    kind = ("nuclei", "cells")[i % 2]
    n = int(np.random.default_rng(seed).integers(6, 17 if kind == "nuclei" else 10))  # cells are larger
    return synthetic.nuclei_2d(shape, n, seed=seed, kind=kind)


def training_data(recipe: DemoRecipe) -> list[synthetic.SyntheticStack]:
    """The generated training stacks of ``recipe``."""
    data = [_stack_2d(i, recipe.seed_2d + i, recipe.shape_2d) for i in range(recipe.n_2d)]
    data += [synthetic.nuclei_3d(recipe.shape_3d, 8, seed=recipe.seed_3d + i) for i in range(recipe.n_3d)]
    data += [
        synthetic.moving_blobs(recipe.shape_moving, 6, seed=recipe.seed_moving + i)
        for i in range(recipe.n_moving)
    ]
    return data


def widened_data(recipe: DemoRecipe) -> list:
    """The data that joins at ``recipe.widened_from_stage``: random-look planes and z-stacks and
    augmented PlantSeg stacks (empty when the recipe has none)."""
    data: list = [
        synthetic.microscopy_2d(seed=recipe.seed_microscopy + i) for i in range(recipe.n_microscopy_2d)
    ]
    data += [
        synthetic.microscopy_3d(recipe.shape_microscopy_3d, seed=recipe.seed_microscopy + 500 + i)
        for i in range(recipe.n_microscopy_3d)
    ]
    if recipe.n_plantseg:
        data += augmented_stacks(recipe.n_plantseg, recipe.seed_plantseg, crops=recipe.plantseg_crops)
    return data


def heldout_data(n_2d: int = 6, n_3d: int = 2) -> tuple[list, list]:
    """(2D images, z-stacks) generated with seeds never used for training."""
    images = [_stack_2d(i, HELDOUT_SEED + i, (256, 256)) for i in range(n_2d)]
    stacks = [synthetic.nuclei_3d((32, 256, 256), 8, seed=HELDOUT_SEED + 500 + i) for i in range(n_3d)]
    return images, stacks


def evaluate_demo(model: Sam2Model, n_2d: int = 6, n_3d: int = 2) -> dict[str, float]:
    """Mean 1-click IoU and box IoU on held-out 2D images, and z-propagation IoU on held-out
    stacks, with the protocol of :func:`.evaluate.evaluate`."""
    from .evaluate import evaluate

    images, stacks = heldout_data(n_2d, n_3d)
    clicks, boxes, volume, slices = [], [], [], []
    for st in images:
        report = evaluate(model, st.image, st.labels, axes="yx", propagate=False)
        clicks += [r.click_iou for r in report.rows]
        boxes += [r.box_iou for r in report.rows]
    for st in stacks:
        report = evaluate(model, st.image, st.labels, axes="zyx", propagate=True)
        volume += [r.volume_iou for r in report.rows]
        slices += [r.slice_iou for r in report.rows]
    alternatives = multimask_scores(model, images)
    return {
        **{f"{k}_2d": v for k, v in alternatives.items() if k != "objects"},
        "click_iou_2d": float(np.mean(clicks)),
        "box_iou_2d": float(np.mean(boxes)),
        "objects_2d": len(clicks),
        "propagation_volume_iou_3d": float(np.mean(volume)),
        "propagation_slice_iou_3d": float(np.mean(slices)),
        "objects_3d": len(volume),
    }


def _jsonable(obj):
    if dataclasses.is_dataclass(obj):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def train_demo(
    out: str | Path,
    recipe: DemoRecipe | None = None,
    *,
    log=print,
    command: str = COMMAND,
    start_from: str | Path | None = None,
    start_stage: int = 1,
) -> dict:
    """Train the demo model (from scratch, or resumed at a later stage), save it to ``out`` and its
    recipe + metrics next to it (same name, ``.json``). Returns the recipe dict.

    ``start_from`` and ``start_stage`` resume a recipe: the checkpoint that stage
    ``start_stage - 1`` of the same recipe wrote, and the stage to go on with. The stages run
    exactly as they would have from scratch, so one stage can be checked on its own."""
    recipe = recipe or DemoRecipe()
    n_stages = recipe.n_stages
    if not 1 <= start_stage <= n_stages:
        raise TrainingError(
            f"start_stage must be between 1 and {n_stages} (the recipe's stages), got {start_stage}"
        )
    if (start_from is None) != (start_stage == 1):
        raise TrainingError(
            "resuming needs both start_from (the checkpoint of the stage before) and start_stage > 1; "
            "from scratch, give neither"
        )
    if recipe.blend is not None:
        if recipe.texture is None or not 0.0 < recipe.blend <= 1.0:
            raise TrainingError(f"blend needs a texture stage and 0 < blend <= 1, got {recipe.blend}")
        if start_stage > recipe.texture_stage:
            raise TrainingError(
                f"the recipe blends with the weights stage {recipe.texture_stage} started from, so a resumed "
                f"run must start at stage {recipe.texture_stage} or earlier, not {start_stage}"
            )
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        return _train_demo(Path(out), recipe, log, command, start_from, start_stage)
    finally:
        torch.set_num_threads(threads)  # the caller's setting, as it was


def _initial_model(recipe: DemoRecipe, start_from: str | Path | None) -> Sam2Model:
    if start_from is not None:
        model = load_checkpoint(start_from)
        if model.config != DEMO_CONFIG:
            raise TrainingError(
                f"{start_from} is not a demo-model checkpoint (its config is {model.config.name!r})"
            )
        return model
    torch.manual_seed(recipe.init_seed)
    model = Sam2Model(DEMO_CONFIG)
    if recipe.attention_gain is not None:
        localise_prompt_attention(model, recipe.attention_gain)
    if recipe.memory_gain is not None:
        localise_memory_attention(model, recipe.memory_gain, mask_gain=recipe.memory_mask_gain)
    return model


def _blend(before: dict, after: dict, alpha: float) -> dict:
    """``(1 - alpha) * before + alpha * after`` for every floating-point tensor (others: ``after``)."""
    return {k: (1 - alpha) * before[k] + alpha * v if v.is_floating_point() else v for k, v in after.items()}


def _train_demo(
    out: Path, recipe: DemoRecipe, log, command: str, start_from: str | Path | None, start_stage: int
) -> dict:
    model = _initial_model(recipe, start_from)  # a bad checkpoint fails before the data are drawn
    data = training_data(recipe)
    stages = recipe.stages
    uses_widened = any(
        isinstance(config, AlternativesConfig)
        or (
            isinstance(config, TrainingConfig)
            and number >= recipe.widened_from_stage
            and config is not recipe.after_texture
        )
        for number, config in enumerate(stages[start_stage - 1 :], start=start_stage)
    )
    widened = widened_data(recipe) if uses_widened else []
    start = time.perf_counter()

    results: list[TrainingResult | AlternativesResult | TextureResult] = []
    before: dict[str, torch.Tensor] = {}  # the weights the texture stage starts from, for ``blend``
    for number, config in enumerate(stages[start_stage - 1 :], start=start_stage):
        name = f"stage {number}/{len(stages)} " if len(stages) > 1 else ""

        recent: list[float] = []

        def progress(step: int, total: int, loss: float, name=name, recent=recent) -> None:
            recent.append(loss)
            if step % 50 == 0 or step == total:
                mean = float(np.mean(recent[-50:]))
                log(
                    f"{name}step {step}/{total} loss {loss:.4f} (mean of the last 50: {mean:.4f}) "
                    f"({time.perf_counter() - start:.0f} s)"
                )

        if isinstance(config, AlternativesConfig):
            results.append(train_alternatives(model, data + widened, config, progress=progress))
            continue
        if isinstance(config, TextureConfig):
            if recipe.blend is not None:  # kept only for the blend
                before = {k: v.clone() for k, v in model.state_dict().items()}
            results.append(train_texture(model, data, config, progress=progress))
            continue
        late = number >= recipe.widened_from_stage and config is not recipe.after_texture
        stage_data = data + widened if late else data
        results.append(train(model, stage_data, config, device="cpu", progress=progress))
    if recipe.blend is not None:
        log(
            f"blend: {recipe.blend} x the trained weights + the rest x those stage {recipe.texture_stage} "
            "started from"
        )
        model.load_state_dict(_blend(before, model.state_dict(), recipe.blend))
    save_checkpoint(model, out)
    result = results[-1]
    steps = sum(r.steps for r in results)
    seconds = sum(r.seconds for r in results)
    log(f"trained {steps} steps in {seconds:.0f} s; evaluating on held-out data")
    t_eval = time.perf_counter()
    metrics = evaluate_demo(model)
    log(json.dumps(metrics))
    info = {
        "name": "demo",
        "command": command,
        "config": _jsonable(DEMO_CONFIG),
        "parameters": sum(p.numel() for p in model.parameters()),
        "file_bytes": out.stat().st_size,
        "recipe": _jsonable(recipe),
        "started_from": None
        if start_from is None
        else {"stage": start_stage, "file": Path(start_from).name, "sha256": file_sha256(start_from)},
        "training_seconds": round(seconds, 1),
        "steps_done": steps,
        "final_loss_parts": result.parts,
        "loss_first_100": float(np.mean(results[0].losses[:100])),
        "loss_last_100": float(np.mean(result.losses[-100:])),
        "evaluation": {
            "protocol": "napari_sam2.training.evaluate.evaluate; held-out seeds from "
            f"{HELDOUT_SEED} (2D nuclei/cells 256x256, 3D nuclei 32x256x256)",
            "seconds": round(time.perf_counter() - t_eval, 1),
            **metrics,
        },
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "threads": recipe.threads,
        },
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info
