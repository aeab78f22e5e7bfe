"""The demo model: a small SAM2 trained from scratch on synthetic data, shipped with the package.

It lets the plugin, the tests and the tutorials run offline, without Meta's weights. It knows
only what :mod:`.synthetic` draws (fluorescent nuclei and cells, 2D, 3D and moving), so use an
official model for real data. ``load_model("demo")`` loads it; :func:`.models.default_model`
falls back to it when no official weights are cached.

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
from dataclasses import dataclass, field, replace
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
from .real_data import PLANTSEG_CROPS, augmented_stacks
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


_STAGE_1 = TrainingConfig(
    steps=7000,
    lr=3e-4,
    weight_decay=0.05,
    warmup_steps=100,
    min_lr_ratio=0.05,
    clip_frames=4,
    stack_fraction=0.5,
    max_objects=8,
    correction_rounds=2,
    prob_box=0.3,
    prob_mask=0.1,
    loss_focal=5.0,
    seed=0,
)

_STAGE_2 = dataclasses.replace(  # what changes from stage 1
    _STAGE_1,
    steps=3000,
    lr=1e-4,
    clip_frames=8,
    stack_fraction=0.3,
    intensity_jitter=0.25,
    seed=1,
)

_STAGE_3 = dataclasses.replace(_STAGE_2, steps=1600, clips_per_step=2, seed=3)  # two clips a step

_STAGE_4 = dataclasses.replace(  # v2: the widened generator and the PlantSeg crops join here
    _STAGE_3,
    steps=500,
    lr=5e-5,
    warmup_steps=30,
    clips_per_step=1,
    stack_fraction=0.5,
    intensity_jitter=0.3,
    intensity_gamma=0.4,
    seed=4,
)


@dataclass(frozen=True)
class DemoRecipe:
    """Everything that determines the demo model.

    Attributes:
        training: the :class:`TrainingConfig`.
        finetune: the later stages, each a :class:`TrainingConfig` run on the same data from
            the previous stage's weights, with a fresh optimiser and learning-rate schedule
            (empty: one stage only).
        n_2d: generated 2D images (nuclei and cells alternate), seeds ``seed_2d + i``.
        n_3d: generated z-stacks of nuclei, seeds ``seed_3d + i``.
        n_moving: generated time series of moving nuclei, seeds ``seed_moving + i``.
        shape_2d, shape_3d, shape_moving: their shapes.
        threads: torch CPU threads (results are reproducible for a given thread count).
        init_seed: seed of the random initial weights.
        attention_gain: gain of :func:`~napari_sam2.training.scratch_init.localise_prompt_attention`
            applied to the initial weights (None: plain random initialisation, which does not
            learn which object a click selects within the recipe's steps).
        memory_gain: gain of :func:`~napari_sam2.training.scratch_init.localise_memory_attention`
            (None: plain random memory attention).
        memory_mask_gain: its ``mask_gain``, the factor on the memory encoder's mask path.
        widened_from_stage: the first stage that also trains on the widened data below (the
            stages before it see only the generated data above).
        n_microscopy_2d, n_microscopy_3d: planes and z-stacks of :func:`.synthetic.microscopy_2d`
            / :func:`.synthetic.microscopy_3d` (random looks), seeds ``seed_microscopy + i`` and
            ``seed_microscopy + 500 + i``.
        shape_microscopy_3d: the z-stacks' shape.
        n_plantseg: augmented stacks of the real PlantSeg crops (:func:`.real_data.augmented_stacks`,
            seeds ``seed_plantseg + i``).
        plantseg_crops: the crops they alternate between (both; one of them for a recipe that holds
            the other out, ``demo-model train --hold-out-plantseg``).
        alternatives: a stage that trains only multimask outputs 1 and 2
            (:mod:`.alternatives`) on the generated and the widened data (None: no such stage).
        texture: a stage that trains only the image encoder to read textured, noisy planes as
            plain ones (:mod:`.texture`), on the generated data (None: no such stage).
        after_texture: a last fine-tuning stage on the generated data after ``texture``, normally
            with the image encoder frozen, so that decoder and memory adapt to its new features
            (None: no such stage).
        blend: after the last stage, each weight becomes ``(1 - blend) * w_before + blend * w_after``,
            ``w_before`` being the weights the ``texture`` stage started from (weight-space ensembling of
            a fine-tuned model with its start, as in WiSE-FT, Wortsman et al., CVPR 2022); it trades the
            texture stages' gain on real planes against their small cost on large generated nuclei
            (docs/training.md). None: no blend.
    """

    training: TrainingConfig = field(default_factory=lambda: _STAGE_1)
    finetune: tuple[TrainingConfig, ...] = field(default_factory=lambda: (_STAGE_2, _STAGE_3))
    n_2d: int = 64
    n_3d: int = 12
    n_moving: int = 12
    shape_2d: tuple[int, int] = (256, 256)
    shape_3d: tuple[int, int, int] = (32, 256, 256)
    shape_moving: tuple[int, int, int] = (16, 256, 256)
    seed_2d: int = 0
    seed_3d: int = 1000
    seed_moving: int = 2000
    threads: int = 1
    init_seed: int = 0
    attention_gain: float | None = 3.0
    memory_gain: float | None = 2.5
    memory_mask_gain: float = 20.0
    widened_from_stage: int = 4
    n_microscopy_2d: int = 0
    n_microscopy_3d: int = 0
    shape_microscopy_3d: tuple[int, int, int] = (32, 256, 256)
    seed_microscopy: int = 5000
    n_plantseg: int = 0
    seed_plantseg: int = 7000
    plantseg_crops: tuple[str, ...] = PLANTSEG_CROPS
    alternatives: AlternativesConfig | None = None
    texture: TextureConfig | None = None
    after_texture: TrainingConfig | None = None
    blend: float | None = None

    @property
    def n_stages(self) -> int:
        """The recipe's stages: training, the later stages, the alternatives and texture stages if any."""
        return len(self.stages)

    @property
    def stages(self) -> list[TrainingConfig | AlternativesConfig | TextureConfig]:
        """Every stage's config, in order."""
        extra = [c for c in (self.alternatives, self.texture, self.after_texture) if c is not None]
        return [self.training, *self.finetune, *extra]

    @property
    def texture_stage(self) -> int | None:
        """The texture stage's number (1-based; None: no texture stage)."""
        return None if self.texture is None else self.stages.index(self.texture) + 1


RECIPE_V2 = DemoRecipe(
    finetune=(_STAGE_2, _STAGE_3, _STAGE_4),
    n_microscopy_2d=48,
    n_microscopy_3d=16,
    n_plantseg=24,
)
"""v2: the shipped three stages, then a fourth on the generated data plus widened generated data
(random looks) and augmented real PlantSeg crops. Tried from the shipped file and not shipped: it lifts
the real cells3d nuclei (1-click 0.39 to 0.46) but costs generated data (docs/training.md)."""

RECIPE_V1_1 = DemoRecipe(
    n_microscopy_2d=48, n_microscopy_3d=16, n_plantseg=24, alternatives=AlternativesConfig()
)
"""v1.1: v1's three stages, then a fourth that trains only the multimask outputs 1 and 2 (on
the generated, widened generated and PlantSeg data); outputs 0, boxes and tracking stay v1's."""

_STAGE_5 = TextureConfig(steps=1500, plain=3, textured=1, amplitude=(0.1, 0.45), noise=(0.0, 0.08), spots=0.0)

_STAGE_6 = dataclasses.replace(  # v1.2: decoder and memory catch up with the stage-5 encoder
    _STAGE_2,
    steps=800,
    lr=3e-5,
    warmup_steps=20,
    seed=6,
    freeze=(
        "image_encoder",
        "sam_mask_decoder.output_hypernetworks_mlps.2",  # outputs 1 and 2 stay the alternatives stage's
        "sam_mask_decoder.output_hypernetworks_mlps.3",
        "sam_mask_decoder.iou_prediction_head",
    ),
)

RECIPE_V1_2 = replace(RECIPE_V1_1, texture=_STAGE_5, after_texture=_STAGE_6, blend=0.8)
"""v1.2 (shipped): v1.1, then a fifth stage that trains only the image encoder to read textured, noisy
planes (as real nuclei are) as it reads the plain generated ones (:mod:`.texture`), a sixth that
fine-tunes decoder and memory on the generated data with that encoder frozen, and a blend of the
result (0.8) with the v1.1 weights (0.2)."""

RECIPES = {"v1": DemoRecipe(), "v1.1": RECIPE_V1_1, "v1.2": RECIPE_V1_2, "v2": RECIPE_V2}


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
