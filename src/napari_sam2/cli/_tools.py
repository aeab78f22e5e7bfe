"""The model-making commands of ``napari-sam2``: ``train``, ``evaluate`` and ``demo-model``.

They drive :mod:`napari_sam2.training`, imported only when one of them runs, so the segmentation
commands never load the training tools. Their errors follow the CLI's exit codes (one line on stderr,
``--debug`` for the traceback): bad data or options 2, data or weights that are not there 3, a failed
run 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import _parsing as parse

__all__ = ["MissingDataError", "UsageError", "add_demo_model", "add_evaluate", "add_train"]


class UsageError(ValueError):
    """Bad input that the user can fix by changing the command (exit 2)."""


class MissingDataError(FileNotFoundError):
    """Data the command needs that is neither here nor downloadable (exit 3)."""


# ---------------------------------------------------------------------------------------------- train
_NUMBER_TYPES = {"int": int, "float": float}


def add_train(sub: argparse._SubParsersAction) -> None:
    from ..training.finetune import TrainingConfig

    p = sub.add_parser(
        "train",
        help="fine-tune a model on image + label pairs and save the weights",
        description="Fine-tune a SAM2 model on image + label pairs (TIFF or zarr) and save the weights.",
    )
    p.add_argument("--image", action="append", required=True, help="image file (repeat for more pairs)")
    p.add_argument("--labels", action="append", required=True, help="label file, one per --image")
    p.add_argument("--axes", default=None, help="axes of the images if not inferable, e.g. zyx")
    p.add_argument("--model", default="sam2.1_hiera_tiny", help="official name, 'demo' or a checkpoint")
    p.add_argument("--out", required=True, help="where to write the trained checkpoint (.pt)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps or auto (default: auto)")
    p.add_argument("--freeze", action="append", default=[], help="parameter prefix to keep fixed")
    defaults = TrainingConfig()
    for f in dataclasses.fields(TrainingConfig):  # one option per number field, so they cannot drift
        if f.type in _NUMBER_TYPES:
            flag = f"--{f.name.replace('_', '-')}"
            p.add_argument(flag, type=_NUMBER_TYPES[f.type], default=getattr(defaults, f.name))
    p.set_defaults(func=train)


def train(args: argparse.Namespace) -> int:
    from ..engine.models import load_model
    from ..training.finetune import TrainingConfig, TrainingPair
    from ..training.finetune import train as run

    if len(args.image) != len(args.labels):
        raise UsageError(
            f"give one --labels per --image ({len(args.image)} images, {len(args.labels)} labels)"
        )
    for path in (*args.image, *args.labels):  # before the model loads
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} does not exist; check the path")
    options = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingConfig) if f.type in _NUMBER_TYPES
    }
    cfg = TrainingConfig(**options, freeze=tuple(args.freeze))
    model = load_model(args.model, device="cpu")
    pairs = [TrainingPair(i, lb, args.axes) for i, lb in zip(args.image, args.labels)]

    def report(step: int, total: int, loss: float) -> None:
        if step % 10 == 0 or step == total:
            print(f"step {step}/{total} loss {loss:.4f}", flush=True)

    result = run(model, pairs, cfg, device=args.device, out=args.out, progress=report)
    print(f"wrote {result.checkpoint} after {result.steps} steps in {result.seconds:.0f} s")
    return 0


# ---------------------------------------------------------------------------------------------- evaluate
def add_evaluate(sub: argparse._SubParsersAction) -> None:
    from ..training.datasets import GENERATED, REAL

    p = sub.add_parser(
        "evaluate",
        help="1-click, box and propagation IoU of a model on labelled images",
        description="1-click, box and propagation IoU of a SAM2 model on labelled images.",
    )
    p.add_argument("--model", required=True, help="official name (e.g. sam2.1_hiera_tiny) or checkpoint path")
    p.add_argument("--config", help="architecture name when the checkpoint does not carry it")
    p.add_argument(
        "--data",
        nargs="+",
        default=["generated"],
        help=f"datasets: {', '.join((*GENERATED, *REAL))}, FILE.npz or IMAGE.tif (with --labels)",
    )
    p.add_argument("--labels", help="labels file for an image file given to --data")
    p.add_argument("--axes", choices=["yx", "zyx", "tyx"], help="override the axes of a file")
    p.add_argument(
        "--window",
        type=parse.parse_window,
        default=None,
        help="LOW,HIGH or a CT preset (default 'auto': the model's own window -- the demo model's, "
        "MedSAM2's --, else robust percentiles)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated datasets")
    p.add_argument("--max-objects", type=parse.positive_int, help="evaluate only the first N objects")
    p.add_argument("--no-propagate", action="store_true", help="skip propagation through stacks")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--summary-only", action="store_true", help="print only the summary table")
    p.add_argument("--output", help="also write the Markdown to this file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=evaluate)


def evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..engine.models import load_model
    from ..training import datasets as ds
    from ..training import evaluate as ev

    model = load_model(args.model, config=args.config, device=args.device)
    reports, blocks = [], []
    for spec in args.data:
        try:
            image, labels, axes = ds.load_dataset(spec, seed=args.seed, labels_path=args.labels)
            with tqdm(desc=spec, unit="step", file=sys.stderr, leave=False, disable=args.quiet) as bar:

                def progress(done: int, total: int, bar=bar) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                report = ev.evaluate(
                    model,
                    image,
                    labels,
                    axes=args.axes or axes,
                    max_objects=args.max_objects,
                    propagate=not args.no_propagate,
                    progress=progress,
                    window=args.window,
                    data_name=spec,
                )
        except (ev.EvaluationError, ds.DatasetError) as err:
            raise UsageError(str(err)) from err
        except ds.DatasetUnavailableError as err:
            raise MissingDataError(str(err)) from err
        reports.append(report)
        if not args.summary_only:
            blocks.append(report.as_markdown())
            print(blocks[-1] + "\n", flush=True)
    blocks.append(ev.summary_table(reports))
    print(blocks[-1])
    if args.output:
        Path(args.output).write_text("\n\n".join(blocks) + "\n")
    return 0


# ---------------------------------------------------------------------------------------------- demo-model
def add_demo_model(sub: argparse._SubParsersAction) -> None:
    from ..training.real_data import PLANTSEG_CROPS

    p = sub.add_parser(
        "demo-model",
        help="train the shipped demo model from its recipe, or score a checkpoint on held-out data",
        description="The demo model's seeded recipe (docs/training.md).",
    )
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = dsub.add_parser("train", help="train the demo model from scratch on generated data")
    t.add_argument("--out", required=True, help="checkpoint to write (the recipe goes next to it as .json)")
    t.add_argument("--steps", type=parse.positive_int, default=None, help="override the recipe's steps")
    t.add_argument("--lr", type=float, default=None, help="override the recipe's peak learning rate")
    t.add_argument(
        "--finetune-steps",
        type=parse.positive_int,
        nargs="+",
        default=None,
        metavar="N",
        help="override the steps of the recipe's later stages, one number per stage (2, 3, ...)",
    )
    t.add_argument(
        "--start-from",
        default=None,
        metavar="CHECKPOINT",
        help="resume: the checkpoint the stage before --start-stage wrote (e.g. the previous demo model)",
    )
    t.add_argument("--start-stage", type=parse.positive_int, default=1, help="resume: first stage to run")
    t.add_argument(
        "--recipe",
        choices=["v1", "v1.1", "v1.2", "v2"],
        default="v1.2",
        help="v1.2 (shipped): v1.1, then a fifth stage that trains only the image encoder to read "
        "textured, noisy planes as plain ones, a sixth that fits decoder and memory to it, and a blend "
        "of the result (0.8) with the v1.1 weights (0.2); v1.1: v1's three stages on generated data, then a fourth "
        "that trains only the multimask outputs 1 and 2; v1: the three stages; v2: v1 then a fourth full "
        "stage on widened generated data and the PlantSeg crops (docs/training.md)",
    )
    t.add_argument(
        "--hold-out-plantseg",
        choices=PLANTSEG_CROPS,
        default=None,
        metavar="CROP",
        help=f"leave this PlantSeg crop ({' or '.join(PLANTSEG_CROPS)}) out of the recipe's real data, so "
        "that it is held out for evaluation: a fold of a recipe that uses the crops (v1.1, v1.2, v2)",
    )
    t.set_defaults(func=demo_model_train)
    e = dsub.add_parser("evaluate", help="score a checkpoint on held-out generated data")
    e.add_argument("--model", required=True, help="checkpoint file")
    e.add_argument(
        "--images",
        type=parse.positive_int,
        default=6,
        help="held-out 2D images for the click and box figures (default 6, as the shipped record)",
    )
    e.add_argument(
        "--stacks",
        type=parse.positive_int,
        default=2,
        help="held-out z-stacks of 8 nuclei for the z-propagation figures (default 2, as the shipped record; "
        "more give a steadier figure, about 12 s a stack on one thread)",
    )
    e.set_defaults(func=demo_model_evaluate)


def demo_model_train(args: argparse.Namespace) -> int:
    from ..training.demo import RECIPES, train_demo

    recipe = RECIPES[args.recipe]
    changes = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
    recipe = dataclasses.replace(recipe, training=dataclasses.replace(recipe.training, **changes))
    if args.finetune_steps is not None:
        if len(args.finetune_steps) != len(recipe.finetune):
            raise UsageError(
                f"--finetune-steps: the recipe has {len(recipe.finetune)} later stage(s); "
                f"give one number for each, got {len(args.finetune_steps)}"
            )
        finetune = tuple(
            dataclasses.replace(stage, steps=n) for stage, n in zip(recipe.finetune, args.finetune_steps)
        )
        recipe = dataclasses.replace(recipe, finetune=finetune)
    if args.hold_out_plantseg is not None:
        if not recipe.n_plantseg:
            raise UsageError(
                f"--hold-out-plantseg: recipe {args.recipe} does not train on the PlantSeg crops"
            )
        kept = tuple(c for c in recipe.plantseg_crops if c != args.hold_out_plantseg)
        recipe = dataclasses.replace(recipe, plantseg_crops=kept)
    train_demo(
        args.out,
        recipe,
        log=lambda msg: print(msg, flush=True),
        command=" ".join(["napari-sam2", *args.argv]),
        start_from=args.start_from,
        start_stage=args.start_stage,
    )
    return 0


def demo_model_evaluate(args: argparse.Namespace) -> int:
    from ..model.checkpoint import load_checkpoint
    from ..training.demo import evaluate_demo

    print(json.dumps(evaluate_demo(load_checkpoint(args.model), args.images, args.stacks), indent=2))
    return 0
