"""The ``napari-sam2`` command: the scripting API on files, with progress bars and exit codes.

Exit codes (also in docs/cli.md):

* 0 -- success;
* 1 -- the run failed (unreadable or malformed input, a model that does not fit, labels that
  differ on replay, failed batch jobs);
* 2 -- bad arguments (unknown option or model name, malformed values, generator options of
  ``auto`` out of range);
* 3 -- a file or model weights that do not exist (image, prompts, labels, checkpoint, weights
  not cached and not downloadable);
* 130 -- interrupted (Ctrl-C).

Errors are one line on stderr, ``napari-sam2: error: ...``, without a traceback (``--debug``
shows it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from ..engine.automask import AutoMaskConfig, AutoMaskError
from ..model.checkpoint import CheckpointError
from ..model.weights import UnknownWeightsError, WeightsUnavailableError
from . import _commands as cmd
from . import _parsing as parse
from . import _tools

__all__ = [
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_MISSING",
    "EXIT_INTERRUPTED",
    "build_parser",
    "main",
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_MISSING, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
PROG = "napari-sam2"


def _common(p: argparse.ArgumentParser, *, image: bool = True) -> None:
    if image:
        p.add_argument(
            "image", help="image: TIFF file, zarr / OME-Zarr folder, NIfTI/NRRD file or DICOM folder"
        )
    p.add_argument(
        "--model",
        default=None,
        help="model name (see 'models list', e.g. sam2.1_hiera_tiny, edgetam, efficienttam_ti), checkpoint file "
        "or 'demo' (default: best offline)",
    )
    p.add_argument("--device", default="cpu", help="cpu (default, reproducible), cuda, mps or auto")
    p.add_argument(
        "--window",
        type=parse.parse_window,
        default=None,
        help="auto (default: the model's own window for MedSAM2 and the demo model, a CT preset for CT "
        "volumes, else robust percentiles), LOW,HIGH or a CT preset",
    )
    p.add_argument("--axes", default=None, help="axes of the image if not inferable, e.g. zyx or tczyx")
    p.add_argument("--channel", type=int, default=None, help="channel to use of a multichannel image")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _run_options(p: argparse.ArgumentParser, *, out: bool = True) -> None:
    p.add_argument("--prompts", required=True, help="prompts: .json, .csv, or a napari Points/Shapes .csv")
    if out:
        p.add_argument(
            "--out",
            required=True,
            help="labels to write: .tif/.tiff, .zarr, or .nii.gz/.nrrd for a medical input",
        )
        p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--overwrite-objects", action="store_true", help="masks may take other objects' voxels")


def _segment_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tile-size", type=parse.positive_int, default=None, help="tile side (default: model input)"
    )
    p.add_argument(
        "--overlap", type=parse.nonnegative_int, default=None, help="tile overlap (default: tile/4)"
    )
    p.add_argument("--multimask", action="store_true", help="keep the best of three candidate masks")
    p.add_argument("--cache-dir", default=None, help="embedding cache folder (see `embed`)")


def _propagate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--axis",
        choices=("z", "t", "z+t"),
        default=None,
        help="propagate along z or t (default: z if present); z+t: 3D objects through time on t,z data",
    )
    p.add_argument("--fixed", type=parse.parse_fixed, default=None, help="other axis of t,z data, e.g. t=3")
    p.add_argument(
        "--tracker-crop",
        "--tracker-window",
        dest="tracker_crop",
        type=parse.parse_crop,
        default="auto",
        help="side of the tracker's crop around each object: auto, none or N",
    )
    p.add_argument(
        "--max-crop",
        "--max-window",
        dest="max_crop",
        type=parse.positive_int,
        default=None,
        help="largest crop side in pixels",
    )
    p.add_argument(
        "--stop-after-absent", type=parse.positive_int, default=None, help="stop after N absent frames"
    )


def _auto_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        required=True,
        help="labels to write: .tif/.tiff, .zarr, or .nii.gz/.nrrd for a medical input",
    )
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--axis", choices=("z", "t"), default=None, help="frame axis of a stack (default: z if present)"
    )
    p.add_argument("--fixed", type=parse.parse_fixed, default=None, help="other axis of t,z data, e.g. t=3")
    p.add_argument(
        "--seed-frames",
        type=parse.parse_seed_frames,
        default=None,
        help="frames to find objects on, in order",
    )
    p.add_argument("--seed-spacing", type=parse.positive_int, default=4, help="default seeds: every N frames")
    p.add_argument("--min-area", type=parse.nonnegative_int, default=0, help="drop smaller objects (pixels)")
    p.add_argument(
        "--tile-size", type=parse.positive_int, default=None, help="tile side (default: model input)"
    )
    p.add_argument(
        "--overlap", type=parse.nonnegative_int, default=None, help="tile overlap (default: tile/4)"
    )
    p.add_argument(
        "--tracker-crop",
        "--tracker-window",
        dest="tracker_crop",
        type=parse.parse_crop,
        default="auto",
        help="side of the tracker's crop around each object: auto, none or N",
    )
    p.add_argument(
        "--stop-after-absent", type=parse.parse_optional_count, default=3, help="N frames (default 3) or none"
    )
    p.add_argument("--cache-dir", default=None, help="embedding cache folder (see `embed`)")
    g = p.add_argument_group("generator options (default: SAM2's; see docs/automatic.md)")
    for f in dataclasses.fields(AutoMaskConfig):  # one option per field, so they cannot drift apart
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            on = "on" if f.default else "off"
            g.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=f"default {on}"
            )
        else:
            kind = int if isinstance(f.default, int) else float
            g.add_argument(
                flag,
                dest=f.name,
                type=kind,
                default=None,
                metavar=kind.__name__.upper(),
                help=f"default {f.default:g}",
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Segment Anything 2 for microscopy, without the GUI."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    models = sub.add_parser("models", help="list, download and verify model weights")
    msub = models.add_subparsers(dest="action", metavar="ACTION", required=True)
    msub.add_parser(
        "list",
        help="SAM 2/2.1, EdgeTAM, EfficientTAM, MedSAM2 and the demo model, with sizes and whether cached",
    )
    d = msub.add_parser("download", help="download official weights (checksums verified)")
    d.add_argument("names", nargs="+")
    v = msub.add_parser("verify", help="check cached weights against their SHA-256")
    v.add_argument("names", nargs="*", help="default: every cached file")
    msub.add_parser("path", help="print the weights cache folder")
    models.set_defaults(func=cmd.models)

    p = sub.add_parser("embed", help="precompute the embedding cache of an image")
    _common(p)
    p.add_argument("--cache-dir", default=None, help="default: <weights cache>/embeddings")
    p.add_argument(
        "--frames", type=parse.parse_frames, default=None, help="planes, e.g. 0-3,7 (default: all)"
    )
    p.add_argument("--tile-size", type=parse.positive_int, default=None)
    p.add_argument("--overlap", type=parse.nonnegative_int, default=None)
    p.set_defaults(func=cmd.embed)

    p = sub.add_parser("segment", help="segment prompted planes into labels")
    _common(p)
    _run_options(p)
    _segment_options(p)
    p.set_defaults(func=cmd.segment)

    p = sub.add_parser("propagate", help="propagate prompted objects through z or t")
    _common(p)
    _run_options(p)
    _propagate_options(p)
    p.set_defaults(func=cmd.propagate)

    p = sub.add_parser("auto", help="segment everything: instance labels without prompts")
    _common(p)
    _auto_options(p)
    p.set_defaults(func=cmd.auto)

    p = sub.add_parser("replay", help="re-run the provenance of a labels file and compare")
    p.add_argument("record", help="labels (.tif/.zarr) written by napari-sam2, or a record .json")
    p.add_argument("--out", default=None, help="write the new labels here (default: only compare)")
    p.add_argument("--image", default=None, help="the image, if it moved or was in memory")
    p.add_argument("--model", default=None, help="another model (default: the recorded one)")
    p.add_argument("--device", default=None)
    p.add_argument("--script", action="store_true", help="print an equivalent Python script instead")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd.replay)

    p = sub.add_parser("batch", help="segment or propagate many images, resumably")
    p.add_argument("inputs", nargs="+", help="images, folders or glob patterns")
    p.add_argument(
        "--out-dir",
        required=True,
        help="where the labels go: <stem>_labels.tif; NIfTI/DICOM inputs <stem>_labels.nii.gz, NRRD .nrrd",
    )
    p.add_argument("--mode", choices=("segment", "propagate"), default="segment")
    p.add_argument(
        "--format",
        choices=("tif", "zarr"),
        default="tif",
        help="labels of TIFF/zarr images (medical volumes keep their format and geometry)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace outputs that are not this batch's verified results"
    )
    p.add_argument("--scheduler", default=None, help="dask.distributed scheduler address (default: local)")
    p.add_argument(
        "--workers", type=parse.nonnegative_int, default=None, help="local processes (0: in this one)"
    )
    p.add_argument("--threads", type=parse.positive_int, default=1, help="torch threads per job (default 1)")
    _common(p, image=False)
    _run_options(p, out=False)
    p.set_defaults(func=cmd.batch)

    p = sub.add_parser("demo", help="open napari on the sample data with the demo model")
    p.add_argument("--no-gui", action="store_true", help="set everything up, print it, do not show napari")
    p.add_argument(
        "--headless",
        action="store_true",
        help="no napari: click every sample nucleus once, propagate through z, print IoU, write labels",
    )
    p.add_argument(
        "--out", default="demo_labels.tif", help="labels file of --headless (default: %(default)s)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd.demo)

    _tools.add_train(sub)
    _tools.add_evaluate(sub)
    _tools.add_demo_model(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on bad arguments
    args.argv = argv  # what the user typed, for the commands that record it
    try:
        return int(args.func(args) or EXIT_OK)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if args.debug:
            raise
        code = _exit_code(err)
        if code is None:
            raise  # a bug, not a user error: keep the traceback
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return code


def _one_line(err: Exception) -> str:
    """The first line of an error's message; the rest (sources tried, manual steps) under --debug."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(err).__name__
    return f"{lines[0]} (details: {PROG} --debug ...)"


def _exit_code(err: Exception) -> int | None:
    if isinstance(err, (UnknownWeightsError, AutoMaskError, _tools.UsageError)):
        return EXIT_USAGE
    if isinstance(err, (FileNotFoundError, WeightsUnavailableError)):
        return EXIT_MISSING
    if isinstance(err, CheckpointError) and ("not found" in str(err) or "no demo model" in str(err)):
        return EXIT_MISSING
    if isinstance(err, (ValueError, RuntimeError, OSError)):
        return EXIT_FAILURE
    return None


if __name__ == "__main__":
    raise SystemExit(main())
