"""The subcommands of ``napari-sam2``: argument parsing helpers and one function per command."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path

from .. import api
from ..api._inputs import check_ids
from ..engine.automask import AutoMaskConfig
from ..engine.cache import EmbeddingCache
from ..engine.predictor import ImagePredictor
from ..engine.provenance import (
    guard_output,
    labels_digest,
    python_script,
    read_labels,
    read_prompts,
    read_record,
)
from ..engine.sources import open_image

_FAIL = 1


# ---------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def progress_bar(desc: str, quiet: bool, unit: str = "it") -> Iterator:
    """A ``progress(done, total)`` callback on a tqdm bar (stderr), or None when quiet."""
    if quiet:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


def _exists(path: str, what: str) -> None:
    if not Path(path).exists():
        raise FileNotFoundError(f"{what} not found: {path}")


def _prepare_out(args: argparse.Namespace) -> None:
    """Check ``--out`` before any work (an existing one is replaced only when the new labels are
    complete; see :func:`~napari_sam2.engine.provenance.guard_output`); create its folder."""
    removed = guard_output(
        args.out, force=args.force, create_folder=True, exists_hint="pass --force to replace it"
    )
    for stale in removed:
        _note(f"removed {stale.name}, left by an interrupted run, from {stale.parent}")


def _note(message: str) -> None:
    print(f"napari-sam2: note: {message}", file=sys.stderr)


def _notes(result: api.SegmentationResult) -> None:
    if result.axes_guessed:
        _note(result.axes_guessed)


def _inputs(args: argparse.Namespace) -> dict:
    """The image must exist; the prompts are read and their object ids checked (before any work)."""
    _exists(args.image, "image")
    _exists(args.prompts, "prompts file")
    prompts = read_prompts(args.prompts)
    check_ids(prompts)
    return prompts


def _summary(result: api.SegmentationResult) -> str:
    import numpy as np

    ids = set()
    for index in np.ndindex(*result.labels.shape[:-2]) if result.labels.ndim > 2 else [()]:
        ids |= set(np.unique(np.asarray(result.labels[index])).tolist())
    ids.discard(0)
    return (
        f"wrote {result.path}: {len(ids)} object(s), labels {list(result.labels.shape)} {result.labels.dtype}"
    )


# ---------------------------------------------------------------------------------------------- commands
def segment(args: argparse.Namespace) -> int:
    prompts = _inputs(args)
    _prepare_out(args)
    model = api.resolve_model(args.model, args.device)  # a missing model fails before the bar
    with progress_bar("segment", args.quiet, "obj") as bar:
        result = api.segment(
            args.image,
            prompts,
            model=model,
            window=args.window,
            tile_size=args.tile_size,
            overlap=args.overlap,
            multimask=args.multimask,
            axes=args.axes,
            channel=args.channel,
            cache_dir=args.cache_dir,
            overwrite=args.overwrite_objects,
            out=args.out,
            force=args.force,
            device=args.device,
            progress=bar,
        )
    _notes(result)
    print(_summary(result))
    return 0


def propagate(args: argparse.Namespace) -> int:
    prompts = _inputs(args)
    _prepare_out(args)
    model = api.resolve_model(args.model, args.device)  # a missing model fails before the bar
    with progress_bar("propagate", args.quiet, "frame") as bar:
        result = api.propagate(
            args.image,
            prompts,
            model=model,
            axis=args.axis,
            fixed=args.fixed,
            window=args.window,
            crop=args.tracker_crop,
            max_crop=args.max_crop,
            stop_after_absent=args.stop_after_absent,
            axes=args.axes,
            channel=args.channel,
            overwrite=args.overwrite_objects,
            out=args.out,
            force=args.force,
            device=args.device,
            progress=bar,
        )
    _notes(result)
    print(_summary(result))
    return 0


def auto(args: argparse.Namespace) -> int:
    options = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(AutoMaskConfig)
        if getattr(args, f.name) is not None
    }
    AutoMaskConfig.build(**options)  # bad generator options: exit 2 before any work
    _exists(args.image, "image")
    _prepare_out(args)
    model = api.resolve_model(args.model, args.device)  # a missing model fails before the bar
    with progress_bar("auto", args.quiet) as bar:
        result = api.segment_everything(
            args.image,
            model=model,
            **options,
            axis=args.axis,
            fixed=args.fixed,
            window=args.window,
            seed_frames=args.seed_frames,
            seed_spacing=args.seed_spacing,
            min_area=args.min_area,
            tile_size=args.tile_size,
            overlap=args.overlap,
            tracker_crop=args.tracker_crop,
            stop_after_absent=args.stop_after_absent,
            axes=args.axes,
            channel=args.channel,
            cache_dir=args.cache_dir,
            out=args.out,
            force=args.force,
            device=args.device,
            progress=bar,
        )
    _notes(result)
    print(_summary(result))
    return 0


def embed(args: argparse.Namespace) -> int:
    from ..model.weights import cache_dir

    _exists(args.image, "image")
    folder = Path(args.cache_dir) if args.cache_dir else cache_dir() / "embeddings"
    net = api.resolve_model(args.model, args.device)
    cache = EmbeddingCache(directory=folder)
    pred = ImagePredictor(net, tile_size=args.tile_size, overlap=args.overlap, cache=cache)
    with open_image(args.image, axes=args.axes, channel=args.channel) as source:
        frames = list(source.frame_indices())
        if args.frames is not None:
            bad = [f for f in args.frames if f >= len(frames)]
            if bad:
                raise ValueError(
                    f"--frames {bad} are beyond the image's {len(frames)} planes (0..{len(frames) - 1})"
                )
            frames = [frames[i] for i in args.frames]
        pred.set_image(source, frame=frames[0], window=args.window)
        per_plane = len(pred.grid.tiles)
        total = per_plane * len(frames)
        with progress_bar("embed", args.quiet, "tile") as bar:
            for i, frame in enumerate(frames):
                pred.set_image(source, frame=frame, window=args.window)
                pred.encode_all(
                    progress=None if bar is None else lambda d, _t, i=i: bar(i * per_plane + d, total)
                )
    stats = cache.stats
    print(
        f"{total} tile embedding(s) of {len(frames)} plane(s) in {folder}: "
        f"{stats.misses} computed, {stats.hits} already cached"
    )
    return 0


def replay(args: argparse.Namespace) -> int:
    _exists(args.record, "labels or record")
    record = read_record(args.record)
    if args.script:
        sys.stdout.write(python_script(record))
        return 0
    if args.out is not None:
        args.force = False
        _prepare_out(args)
    with progress_bar("replay", args.quiet) as bar:
        result = api.replay(
            record, image=args.image, model=args.model, out=args.out, device=args.device, progress=bar
        )
    digest = labels_digest(result.labels)
    expected = record.labels.get("sha256")
    stored = Path(args.record)
    if stored.suffix.lower() == ".json" or Path(str(stored) + ".sam2.json").is_file():
        if digest == expected:
            print(f"identical: the labels were reproduced bit for bit (sha256 {digest})")
            return 0
        print(
            f"napari-sam2: the replayed labels differ (sha256 {digest}, recorded {expected})", file=sys.stderr
        )
        return _FAIL
    import numpy as np

    old, new = read_labels(stored), result.labels
    differ = sum(
        int(np.count_nonzero(np.asarray(old[i]) != np.asarray(new[i])))
        for i in (np.ndindex(*old.shape[:-2]) if old.ndim > 2 else [()])
    )
    if digest == expected and not differ:
        print(f"identical: the labels were reproduced bit for bit (sha256 {digest})")
        return 0
    edited = " (the file was changed after napari-sam2 wrote it)" if labels_digest(old) != expected else ""
    print(
        f"napari-sam2: the replayed labels differ from {stored} in {differ} voxel(s){edited}", file=sys.stderr
    )
    return _FAIL


def models(args: argparse.Namespace) -> int:
    from ..engine import models as m
    from ..model import weights as w

    if args.action == "path":
        print(w.cache_dir())
        return 0
    if args.action == "list":
        folder = w.cache_dir()
        print(f"{'name':24} {'family':13} {'size':>9}  {'cached':6}  {'sha256':16}  hint")
        for name, info in {**w.OFFICIAL_WEIGHTS, **w.FAMILY_WEIGHTS}.items():
            size = f"{info.size_bytes / 2**20:.0f} MiB" if info.size_bytes else "?"
            cached = "yes" if (folder / info.filename).is_file() else "no"
            family, hint = w.FAMILIES[w.family_of(name)]
            print(f"{name:24} {family:13} {size:>9}  {cached:6}  {(info.sha256 or '?')[:16]:16}  {hint}")
        print(
            f"{m.DEMO_NAME:24} {'':>9}  {'yes' if m.DEMO_FILE.is_file() else 'no':6}  (shipped with the package)"
        )
        print(f"cache folder: {folder}")
        return 0
    if args.action == "download":
        for name in args.names:
            info = w.get_weights_info(name)
            with w.tqdm_progress(f"downloading {info.filename}") as bar:
                path = w.ensure_weights(info, progress=bar)
            print(f"{info.name}: {path} (verified)")
        return 0
    # verify
    every = {**w.OFFICIAL_WEIGHTS, **w.FAMILY_WEIGHTS}
    names = args.names or [n for n, i in every.items() if (w.cache_dir() / i.filename).is_file()]
    if not names:
        print(f"no official weights cached in {w.cache_dir()}")
        return 0
    failed = missing = 0
    for name in names:
        info = w.get_weights_info(name)
        path = w.cache_dir() / info.filename
        if not path.is_file():
            print(f"{info.name}: not cached ({path})")
            missing += 1
            continue
        problem = w._problem_with_cached(info, path)
        print(f"{info.name}: {'ok' if problem is None else 'FAILED: ' + problem}")
        failed += problem is not None
    return _FAIL if failed else (3 if missing else 0)


def batch(args: argparse.Namespace) -> int:
    from ..api import batch as b

    options = {
        "window": args.window,
        "axes": args.axes,
        "channel": args.channel,
        "overwrite": args.overwrite_objects,
    }
    jobs = b.plan(
        args.inputs,
        args.out_dir,
        prompts=args.prompts,
        mode=args.mode,
        model=args.model,
        suffix=f".{args.format}",
        device=args.device,
        threads=args.threads,
        options=options,
        force=args.force,
    )
    with progress_bar("batch", args.quiet, "image") as bar:
        report = b.run_batch(jobs, scheduler=args.scheduler, workers=args.workers, progress=bar)
    print(
        f"{len(report.done)} written, {len(report.skipped)} already done (verified), {len(report.failed)} failed"
    )
    for out, message in report.failed:
        print(f"napari-sam2: error: {out}: {message}", file=sys.stderr)
    return _FAIL if report.failed else 0


def headless_demo(args_out: str, quiet: bool = False) -> float:
    """The demo without a screen: one click per nucleus of the sample volume (at its interior point
    on its largest slice), propagation through z with the demo model, labels with provenance to
    ``args_out``, and each nucleus's IoU against the generator's ground truth printed. The sample
    image is saved beside it (``demo_sample.tif``) and read from there, so the labels' record can be
    replayed. Existing files are never replaced: a re-run writes ``<stem>_2`` and ``demo_sample_2.tif``
    (then 3, ...). Returns the mean IoU."""
    import numpy as np
    import tifffile

    from ..engine.models import demo_checkpoint_path
    from ..engine.prompts import Prompt
    from ..training.evaluate import click_point, iou, largest_frame
    from ..training.synthetic import sample_nuclei_3d

    demo_checkpoint_path()  # a clear error (exit 3) before any work
    stack = sample_nuclei_3d()
    out, image = Path(args_out), Path(args_out).with_name("demo_sample.tif")
    n = 1
    while out.exists() or image.exists():  # never replace earlier results (or anyone's files)
        n += 1
        out = Path(args_out).with_name(f"{Path(args_out).stem}_{n}{Path(args_out).suffix}")
        image = Path(args_out).with_name(f"demo_sample_{n}.tif")
    tifffile.imwrite(image, stack.image, photometric="minisblack", metadata={"axes": "ZYX"})
    prompts = {}
    for obj in np.unique(stack.labels)[1:]:
        z = largest_frame((stack.labels == obj).sum(axis=(1, 2)))  # as engine.evaluate clicks
        prompts[(z, int(obj))] = Prompt(points=[click_point(stack.labels[z] == obj)], labels=[1])
    with progress_bar("propagate", quiet, "frame") as bar:
        result = api.propagate(str(image), prompts, model="demo", axis="z", out=out, progress=bar)
    scores = [iou(result.labels == obj, stack.labels == obj) for _, obj in prompts]
    print("nucleus  clicked z  3D IoU")
    for (z, obj), score in zip(prompts, scores):
        print(f"{obj:7d}  {z:9d}  {score:6.3f}")
    mean = float(np.mean(scores))
    print(f"mean 3D IoU over {len(scores)} nuclei: {mean:.3f}; labels written to {out}")
    return mean


def demo(args: argparse.Namespace) -> int:
    if args.headless:
        headless_demo(args.out, args.quiet)
        return 0
    from ..engine.models import demo_checkpoint_path

    demo_checkpoint_path()  # a clear error (exit 3) before napari loads
    from ..plugin._demo import run_demo

    run_demo(show=not args.no_gui)
    return 0
