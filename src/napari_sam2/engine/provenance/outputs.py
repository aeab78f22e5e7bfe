"""Labels outputs written without risk to what is already there.

:func:`guard_output` is called before any model work: it checks that an output can be written
(a known suffix, an existing writable folder, no existing file unless it may be replaced) and
removes the leftovers of interrupted runs. :func:`atomic_output` builds the output under a hidden
name beside it and renames it into place only when complete, so a failed run leaves an existing
output as it was and no half-written one under the final name.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .record import ProvenanceError

__all__ = ["LABEL_SUFFIXES", "OutputError", "atomic_output", "guard_output", "temporary_path"]

LABEL_SUFFIXES = (".tif", ".tiff", ".zarr", ".nii", ".nii.gz", ".nrrd")


class OutputError(ProvenanceError):
    """An output that cannot be written (exists, bad suffix, folder missing or not writable)."""


def temporary_path(path: str | os.PathLike) -> Path:
    """Where ``path`` is built before it is renamed into place: ``.NAME.tmp-PID`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def guard_output(
    path: str | os.PathLike,
    *,
    force: bool = False,
    create_folder: bool = False,
    exists_hint: str = "choose another output (labels are never overwritten)",
) -> list[Path]:
    """Check, before any work, that labels can be written to ``path``.

    Leftovers of interrupted runs (``.NAME.tmp-PID`` whose process is gone) are removed here.

    Args:
        path: the ``.tif``/``.tiff``/``.zarr`` output (``.nii``/``.nii.gz``/``.nrrd`` for a medical input).
        force: an existing ``path`` may be replaced (once the new labels are complete).
        create_folder: create a missing folder (its nearest existing parent must be writable).
        exists_hint: what the "already exists" message tells the user to do.

    Returns:
        The leftovers removed (empty in the usual case), for the caller to report.

    Raises:
        OutputError: a suffix other than .tif/.tiff/.zarr/.nii/.nii.gz/.nrrd, ``path`` exists and ``force`` is False,
            or its folder is missing (and not to be created), not a folder, or not writable; the
            message names the folder.
    """
    path = Path(path).expanduser()
    if not path.name.lower().endswith(LABEL_SUFFIXES):
        raise OutputError(
            f"{path}: labels are written as .tif/.tiff or .zarr, or for a NIfTI/NRRD/DICOM input "
            ".nii.gz/.nii/.nrrd"
        )
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputError(f"{path} already exists; {exists_hint}")
    folder = path.absolute().parent
    if not folder.is_dir():
        if folder.exists():
            raise OutputError(f"cannot write {path.name}: {folder} is not a folder")
        if not create_folder:
            raise OutputError(
                f"cannot write {path.name}: the folder {folder} does not exist; create it first"
            )
        base = next(p for p in folder.parents if p.exists())
        _check_writable(base, path.name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(
                f"cannot create the folder {folder} for {path.name}: {err.strerror or err}"
            ) from None
    _check_writable(folder, path.name)
    return _remove_stale(path)


def _check_writable(folder: Path, name: str) -> None:
    if not folder.is_dir():
        raise OutputError(f"cannot write {name}: {folder} is not a folder")
    try:  # os.access would say yes to root on a read-only mount; a real file says what is true
        fd, probe = tempfile.mkstemp(prefix=f".{name}.probe-", dir=folder)
    except OSError as err:
        raise OutputError(
            f"cannot write {name}: the folder {folder} is not writable ({err.strerror or err}); "
            "choose another output folder"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process, or a system that cannot tell: keep its files
    return True


def _remove_stale(path: Path) -> list[Path]:
    """Remove ``.NAME.tmp-PID`` beside ``path`` whose process no longer runs."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:tmp|old)-(\d+)")
    removed = []
    for entry in path.absolute().parent.glob(f".{glob.escape(path.name)}.*-*"):
        m = pattern.fullmatch(entry.name)
        if m and not _pid_alive(int(m.group(1))):
            _remove(entry)
            removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Build ``path`` under :func:`temporary_path` (yielded), then rename it into place.

    An existing ``path`` is replaced only once the new one is complete (a file in one
    ``os.replace``; a folder is moved aside, the new one moved in, then the old one removed). If the
    block raises, the temporary file or folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            _remove(old)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        _remove(tmp)
