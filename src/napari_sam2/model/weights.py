"""Meta's official SAM 2 / SAM 2.1 checkpoints: registry, cache folder and verified download.

The registry (`OFFICIAL_WEIGHTS`) names the eight checkpoints Meta released, with the URL on Meta's server,
the Hugging Face copy, and the SHA-256 and size in bytes where a public source states them. `FAMILY_WEIGHTS`
names the other published models of the SAM2 family that our model package builds (EdgeTAM, MedSAM2,
EfficientTAM), each
with the architecture it needs (``WeightsInfo.config``); `get_weights_info` looks in both.

Downloads stream into a temporary file next to the target (``<file>.part-<random>``), check the length the
server announced, verify the SHA-256 where one is known, and only then move the file into place with
`os.replace`, so a failed, interrupted or cancelled download never leaves a file under the final name.
After every download the digest is written to a sidecar ``<file>.sha256`` (``sha256sum`` format), so a
later load detects corruption even for weights without a published checksum.

Environment variables:

- ``NAPARI_SAM2_CACHE``: the folder that holds the weights (default: the platform's cache folder, see
  `cache_dir`).
- ``NAPARI_SAM2_WEIGHTS_MIRROR``: a base URL tried before Meta and Hugging Face, as
  ``<mirror>/<filename>`` (for example an institute mirror for machines without internet access).

The engine and the GUI drive progress with ``progress(done_bytes, total_bytes_or_None)`` and stop a
download with ``cancel() -> bool``; this module imports neither napari nor Qt.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "CACHE_ENV_VAR",
    "MIRROR_ENV_VAR",
    "OFFICIAL_WEIGHTS",
    "FAMILY_WEIGHTS",
    "ALIASES",
    "FAMILIES",
    "family_of",
    "ChecksumMismatchError",
    "DownloadCancelled",
    "UnknownWeightsError",
    "WeightsError",
    "WeightsInfo",
    "WeightsUnavailableError",
    "cache_dir",
    "cached_weights_path",
    "download_weights",
    "ensure_weights",
    "get_weights_info",
    "tqdm_progress",
]

CACHE_ENV_VAR = "NAPARI_SAM2_CACHE"
MIRROR_ENV_VAR = "NAPARI_SAM2_WEIGHTS_MIRROR"

ProgressCallback = Callable[[int, int | None], None]
"""``progress(done_bytes, total_bytes)``; ``total_bytes`` is None when the size is unknown."""
CancelCallback = Callable[[], bool]
"""``cancel()`` returns True to stop the download."""

_CHUNK_BYTES = 1 << 20  # 1 MiB per read
_USER_AGENT = "napari-sam2 weights downloader (urllib)"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# ----------------------------------------------------------------------------------------------------------
# Errors


class WeightsError(RuntimeError):
    """Base class for problems with finding, downloading or verifying checkpoint files."""


class WeightsUnavailableError(WeightsError):
    """The weights are not cached and could not be downloaded.

    The message tells the user which file is needed, where to get it by hand and which folder to put it in.
    """

    def __init__(
        self,
        message: str,
        *,
        info: WeightsInfo | None = None,
        folder: Path | None = None,
        urls: Sequence[str] = (),
        failures: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.info = info
        self.folder = folder
        self.urls = tuple(urls)
        self.failures = tuple(failures)


class ChecksumMismatchError(WeightsError):
    """A downloaded file does not have the SHA-256 the registry expects; it was discarded."""

    def __init__(self, message: str, *, url: str = "", expected: str = "", actual: str = "") -> None:
        super().__init__(message)
        self.url = url
        self.expected = expected
        self.actual = actual


class UnknownWeightsError(WeightsError, KeyError):
    """A weights name that is not in `OFFICIAL_WEIGHTS` (also a `KeyError`)."""

    def __str__(self) -> str:  # KeyError would show repr() of the message
        return str(self.args[0]) if self.args else ""


class DownloadCancelled(Exception):
    """The ``cancel`` callback asked to stop; the partial file was deleted.

    Deliberately not a `WeightsError`: cancelling is the user's choice, not an error to report.
    """


# ----------------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class WeightsInfo:
    """One checkpoint file and where to get it.

    Attributes:
        name: registry key, e.g. ``"sam2.1_hiera_tiny"``.
        filename: file name on disk, e.g. ``"sam2.1_hiera_tiny.pt"``.
        url: the publisher's download URL (Meta's server for SAM2).
        hf_repo: Hugging Face model repository, e.g. ``"facebook/sam2.1-hiera-tiny"``; empty where the
            publisher has no Hugging Face copy.
        hf_filename: file name inside ``hf_repo``.
        sha256: lowercase hex SHA-256 of the file, or None where no source states it.
        size_bytes: file size in bytes, or None where no source states it.
        config: name of the model variant (``napari_sam2.model.get_config``) the file is built for, where
            its weights alone do not tell (e.g. MedSAM2: SAM 2.1 tiny weights for a 512 input); None when
            the architecture is recognised from the weights.
    """

    name: str
    filename: str
    url: str
    hf_repo: str
    hf_filename: str
    sha256: str | None = None
    size_bytes: int | None = None
    config: str | None = None

    @property
    def hf_url(self) -> str | None:
        """Direct download URL of the Hugging Face copy (None without one)."""
        if not self.hf_repo:
            return None
        return f"https://huggingface.co/{self.hf_repo}/resolve/main/{self.hf_filename}"


_META_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2"

# SHA-256 and byte sizes, as stated by public sources (none were downloaded to compute them):
# - sam2_hiera_tiny: huggingface.co/facebook/sam2-hiera-tiny, commit a8e4b46 "Upload sam2_hiera_tiny.pt"
#   (Git LFS pointer: oid sha256 + size).
# - sam2_hiera_small: SHA-256 from huggingface.co/facebook/sam2-hiera-small/blob/refs%2Fpr%2F1/sam2_hiera_small.pt
#   (commit 4868896, "Git LFS Details"). Size 184,309,650 bytes from SAMJ (ai.nets.samj.install.Sam2EnvManager,
#   SAM2_BYTE_SIZES_MAP), whose tiny and large sizes equal the LFS pointers cited here; public download manifests
#   pin the same size together with this SHA-256. No Git LFS pointer of this object was found.
# - sam2_hiera_base_plus: SHA-256 from huggingface.co/facebook/sam2-hiera-base-plus (commit b470a6f);
#   size from the LFS pointer of the same object (same oid) in huggingface.co/merve/sam2-hiera-base-plus,
#   commit 838f027.
# - sam2_hiera_large: LFS pointer in huggingface.co/merve/sam2-hiera-large, commit 9551b5a (HF staff copy).
# - sam2.1_hiera_{tiny,small}: SHA-256 from huggingface.co/facebook/sam2.1-hiera-{tiny,small}/blob/main/...
#   ("Git LFS Details"); sizes from the LFS pointers of the same objects in huggingface.co/camenduru/sam2-1-hiera,
#   commit cdd35a4.
# - sam2.1_hiera_{base_plus,large}: LFS pointers in huggingface.co/camenduru/sam2-1-hiera, commit cdd35a4.
# The same eight digests are pinned against the dl.fbaipublicfiles.com URLs in
# computational-cell-analytics/micro-sam, micro_sam/v2/util.py (HASHES, used with pooch known_hash), so Meta's
# files and the Hugging Face copies are byte-identical.
_OFFICIAL_TABLE: tuple[tuple[str, str, str, str | None, int | None], ...] = (
    # (name, Meta folder, HF repo, sha256, size_bytes)
    (
        "sam2_hiera_tiny",
        "072824",
        "facebook/sam2-hiera-tiny",
        "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125",
        155_906_050,
    ),
    (
        "sam2_hiera_small",
        "072824",
        "facebook/sam2-hiera-small",
        "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3",
        184_309_650,
    ),
    (
        "sam2_hiera_base_plus",
        "072824",
        "facebook/sam2-hiera-base-plus",
        "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071",
        323_493_298,
    ),
    (
        "sam2_hiera_large",
        "072824",
        "facebook/sam2-hiera-large",
        "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b",
        897_952_466,
    ),
    (
        "sam2.1_hiera_tiny",
        "092824",
        "facebook/sam2.1-hiera-tiny",
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        156_008_466,
    ),
    (
        "sam2.1_hiera_small",
        "092824",
        "facebook/sam2.1-hiera-small",
        "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
        184_416_285,
    ),
    (
        "sam2.1_hiera_base_plus",
        "092824",
        "facebook/sam2.1-hiera-base-plus",
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        323_606_802,
    ),
    (
        "sam2.1_hiera_large",
        "092824",
        "facebook/sam2.1-hiera-large",
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        898_083_611,
    ),
)

OFFICIAL_WEIGHTS: dict[str, WeightsInfo] = {
    name: WeightsInfo(
        name=name,
        filename=f"{name}.pt",
        url=f"{_META_BASE}/{folder}/{name}.pt",
        hf_repo=hf_repo,
        hf_filename=f"{name}.pt",
        sha256=sha256,
        size_bytes=size_bytes,
    )
    for name, folder, hf_repo, sha256, size_bytes in _OFFICIAL_TABLE
}
"""The eight official checkpoints, keyed by name (the file name without ``.pt``)."""

# Other models of the family. No publisher states a SHA-256 or a byte size for these files (none was found
# in their READMEs, model cards or packages), so both are None: a download is accepted by its length as the
# server announces it, and its digest is written to the ``.sha256`` sidecar so that later loads detect
# corruption; the strict checkpoint loader then checks every tensor name and shape.
# - edgetam: facebookresearch/EdgeTAM README, "Downloading the model" (checkpoints/edgetam.pt in the git
#   repository; Apache-2.0). No Hugging Face model repository is named there.
# - MedSAM2_*: bowang-lab/MedSAM2 README download list, Hugging Face repository wanglab/MedSAM2 (the
#   repository and MedSAM2_CTLesion.pt are also named by the medsam2-mlx 0.2.1 package). All are SAM 2.1
#   tiny weights fine-tuned for a 512 input (the authors' sam2.1_hiera_t512.yaml), hence ``config``.
_MEDSAM2_FILES = (
    "MedSAM2_latest",
    "MedSAM2_2411",
    "MedSAM2_US_Heart",
    "MedSAM2_MRI_LiverLesion",
    "MedSAM2_CTLesion",
)

FAMILY_WEIGHTS: dict[str, WeightsInfo] = {
    "edgetam": WeightsInfo(
        name="edgetam",
        filename="edgetam.pt",
        url="https://github.com/facebookresearch/EdgeTAM/raw/main/checkpoints/edgetam.pt",
        hf_repo="",
        hf_filename="",
        config="edgetam",
    ),
    **{
        name: WeightsInfo(
            name=name,
            filename=f"{name}.pt",
            url=f"https://huggingface.co/wanglab/MedSAM2/resolve/main/{name}.pt",
            hf_repo="wanglab/MedSAM2",
            hf_filename=f"{name}.pt",
            config="medsam2",
        )
        for name in _MEDSAM2_FILES
    },
}

# EfficientTAM (yformer/EfficientTAM README, "Model": checkpoints at huggingface.co/yunyangx/efficient-track-anything,
# Apache-2.0). SHA-256 and sizes as that repository states them for commit b308d79 "A family of efficient track
# anything models" (Dec 22, 2024): the Git LFS pointers in the commit's diff give oid and size for efficienttam_s,
# _s_1, _s_2, _s_512x512 and _ti; for efficienttam_ti_1, _ti_2 and _ti_512x512 the files' pages ("Git LFS
# Details" / "SHA256") give the digest but only a rounded size ("71.6 MB"), so their size is None (the digest
# verifies them). The files of one trunk hold one layout; ``config`` says how each is run.
_EFFICIENTTAM_FILES: tuple[tuple[str, str, int | None], ...] = (
    ("efficienttam_s", "2b572be30d9e96ee29c8d785fe157c6b079ede7d56fbc8a3671d4120e63c89cd", 136_375_868),
    ("efficienttam_s_1", "4fd5d1f7ae08a7e15086623bf8b12f0b111b773b15564b43c0a5d451fc1a4267", 136_376_327),
    ("efficienttam_s_2", "253e490b4a3d56eedd64e4d466155ec538d1289f52abe78b091b14caefd92343", 136_376_327),
    (
        "efficienttam_s_512x512",
        "67b5840012737ed2c94a4cb8787c5c1b27b3a946045d2e602e65ef77230b6085",
        136_379_145,
    ),
    ("efficienttam_ti", "acbb17b28cca1f860acee09c9ecb6efdb732080dc7a85a07292c31813175fa7d", 71_616_316),
    ("efficienttam_ti_1", "5294bd68820ee1ee5203d54065d4384a6aa1fb4fc632c147417478fcac9576ea", None),
    ("efficienttam_ti_2", "d2a9ca0a736257ee9bb238d335ba7c794ad853e594cb4f679019ecc0854ee587", None),
    ("efficienttam_ti_512x512", "7d4d652a465f0081391050932f45d8a66768ccc99c8ea393ce8a5927e83f3b9b", None),
)
_EFFICIENTTAM_HF = "yunyangx/efficient-track-anything"

FAMILY_WEIGHTS.update(
    {
        name: WeightsInfo(
            name=name,
            filename=f"{name}.pt",
            url=f"https://huggingface.co/{_EFFICIENTTAM_HF}/resolve/main/{name}.pt",
            hf_repo=_EFFICIENTTAM_HF,
            hf_filename=f"{name}.pt",
            sha256=sha256,
            size_bytes=size,
            config=name,
        )
        for name, sha256, size in _EFFICIENTTAM_FILES
    }
)
"""Checkpoints of other SAM2-family models (EdgeTAM, MedSAM2, EfficientTAM), keyed by name (file name without
``.pt``)."""

ALIASES: dict[str, str] = {
    "efficienttam_ti_512": "efficienttam_ti_512x512",
    "efficienttam_s_512": "efficienttam_s_512x512",
    "medsam2": "MedSAM2_latest",
}
"""Short names accepted for some checkpoints (``load_model("efficienttam_ti_512")``)."""

FAMILIES: dict[str, tuple[str, str]] = {
    "sam2": ("SAM 2 / 2.1", "best quality"),
    "edgetam": ("EdgeTAM", "fast on CPU"),
    "efficienttam": ("EfficientTAM", "fast on CPU"),
    "medsam2": ("MedSAM2", "medical images (CT, MRI, ultrasound)"),
}
"""Family key -> (display name, one-line hint), for model lists and pickers."""


def family_of(name: str) -> str:
    """The family key (see `FAMILIES`) of a registry name: ``"efficienttam_ti"`` -> ``"efficienttam"``."""
    key = ALIASES.get(name, name).lower()
    for family in ("edgetam", "efficienttam", "medsam2"):
        if key.startswith(family):
            return family
    return "sam2"


def get_weights_info(name_or_info: str | WeightsInfo) -> WeightsInfo:
    """Look up a checkpoint by name (``"sam2.1_hiera_tiny"``; the file name with ``.pt`` also works).

    A `WeightsInfo` is returned unchanged, so callers can pass custom entries (other URLs, local mirrors).

    Raises:
        UnknownWeightsError: the name is in neither `OFFICIAL_WEIGHTS` nor `FAMILY_WEIGHTS`; the message
            lists the valid names.
    """
    if isinstance(name_or_info, WeightsInfo):
        return name_or_info
    key = str(name_or_info).strip()
    if key.endswith(".pt"):
        key = key[: -len(".pt")]
    key = ALIASES.get(key, key)
    info = OFFICIAL_WEIGHTS.get(key) or FAMILY_WEIGHTS.get(key)
    if info is not None:
        return info
    valid = [*OFFICIAL_WEIGHTS, *FAMILY_WEIGHTS]
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownWeightsError(
        f"Unknown SAM2 weights {name_or_info!r}.{hint} Valid names: {', '.join(valid)}."
    )


# ----------------------------------------------------------------------------------------------------------
# Cache folder


def cache_dir() -> Path:
    """The folder that holds downloaded weights (not created here; downloads create it).

    ``$NAPARI_SAM2_CACHE`` wins when set. Otherwise the platform's cache folder:
    Linux and other Unix ``$XDG_CACHE_HOME/napari-sam2`` (default ``~/.cache/napari-sam2``),
    macOS ``~/Library/Caches/napari-sam2``, Windows ``%LOCALAPPDATA%\\napari-sam2\\Cache``.
    """
    override = os.environ.get(CACHE_ENV_VAR, "").strip()
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA", "").strip()
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "napari-sam2" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "napari-sam2"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # The XDG spec says relative paths are invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "napari-sam2"


# ----------------------------------------------------------------------------------------------------------
# Verification helpers


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _read_sidecar(path: Path) -> str | None:
    """The digest recorded next to ``path``, or None when there is no readable, well-formed sidecar."""
    try:
        text = _sidecar_path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    token = text.split()[0].lower() if text else ""
    return token if _HEX64.match(token) else None


def _write_sidecar(path: Path, digest: str) -> None:
    """Record ``digest`` for ``path`` in ``sha256sum -c`` format; best effort (a read-only cache is fine)."""
    sidecar = _sidecar_path(path)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    try:
        tmp.write_text(f"{digest}  {path.name}\n", encoding="ascii")
        os.replace(tmp, sidecar)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _problem_with_cached(info: WeightsInfo, path: Path) -> str | None:
    """Why the cached ``path`` cannot be trusted, or None if it checks out.

    Checks the size (when known), then the SHA-256 against the registry or, failing that, the sidecar.
    A file with neither is accepted and its digest recorded, so later corruption is detected.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if info.size_bytes is not None and size != info.size_bytes:
        return f"it has {size:,} bytes, expected {info.size_bytes:,}"
    expected = info.sha256.lower() if info.sha256 else _read_sidecar(path)
    try:
        actual = _sha256_of_file(path)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if expected is None:
        _write_sidecar(path, actual)
        return None
    if actual != expected:
        source = "the registry" if info.sha256 else f"{_sidecar_path(path).name}"
        return f"its SHA-256 is {actual}, but {source} expects {expected}"
    if _read_sidecar(path) != actual:
        _write_sidecar(path, actual)
    return None


# ----------------------------------------------------------------------------------------------------------
# Download


class _SourceFailed(Exception):
    """This URL did not deliver the file (network error, HTTP error, short read); try the next one."""


def _default_urls(info: WeightsInfo) -> list[str]:
    urls = []
    mirror = os.environ.get(MIRROR_ENV_VAR, "").strip()
    if mirror:
        urls.append(f"{mirror.rstrip('/')}/{info.filename}")
    urls += [u for u in (info.url, info.hf_url) if u]
    return list(dict.fromkeys(urls))  # drop duplicates, keep order


def _describe_network_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            return f"no answer within {timeout:g} s"
        return f"cannot connect ({getattr(reason, 'strerror', None) or reason})"
    if isinstance(exc, TimeoutError):
        return f"no data for {timeout:g} s"
    if isinstance(exc, http.client.HTTPException):
        return f"broken HTTP response ({type(exc).__name__}: {exc})"
    if isinstance(exc, ValueError):
        return f"invalid URL ({exc})"
    return f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"


_NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)  # URLError, timeouts, resets are OSErrors


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None


def _download_from(
    url: str,
    info: WeightsInfo,
    final: Path,
    progress: ProgressCallback | None,
    cancel: CancelCallback | None,
    timeout: float,
) -> Path:
    """Fetch ``url`` into ``final`` via a temporary file in the same folder; on any failure delete it."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{final.name}.part-", dir=final.parent)
    except OSError as exc:
        raise WeightsError(
            f"Cannot write to the weights folder {final.parent} ({exc.strerror or exc}). "
            f"Make it writable or set {CACHE_ENV_VAR} to another folder."
        ) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual, done = _stream(url, info, out, final.parent, progress, cancel, timeout)
        if info.sha256 and actual != info.sha256.lower():
            raise ChecksumMismatchError(
                f"The file downloaded from {url} does not match the expected checksum of {info.filename}: "
                f"expected SHA-256 {info.sha256.lower()}, got {actual} ({done:,} bytes). "
                "The download was discarded. The server may serve a different or damaged file; try again "
                "later or another source.",
                url=url,
                expected=info.sha256.lower(),
                actual=actual,
            )
        sidecar = _sidecar_path(final)
        with contextlib.suppress(FileNotFoundError):
            sidecar.unlink()  # never leave an old digest next to a new file
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _write_sidecar(final, actual)
    return final


def _stream(
    url: str,
    info: WeightsInfo,
    out: BinaryIO,
    folder: Path,
    progress: ProgressCallback | None,
    cancel: CancelCallback | None,
    timeout: float,
) -> tuple[str, int]:
    """Copy the body of ``url`` into ``out``; return the hex SHA-256 and the number of bytes."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    if cancel is not None and cancel():
        raise DownloadCancelled(f"Download of {info.filename} cancelled.")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except _NETWORK_ERRORS as exc:
        raise _SourceFailed(_describe_network_error(exc, timeout)) from None
    with response:
        announced = _content_length(response)
        if announced is not None and info.size_bytes is not None and announced != info.size_bytes:
            raise _SourceFailed(
                f"the server announces {announced:,} bytes, but {info.filename} has {info.size_bytes:,}"
            )
        total = announced if announced is not None else info.size_bytes
        digest = hashlib.sha256()
        done = 0
        if progress is not None:
            progress(0, total)
        while True:
            if cancel is not None and cancel():
                raise DownloadCancelled(f"Download of {info.filename} cancelled after {done:,} bytes.")
            try:
                chunk = response.read(_CHUNK_BYTES)
            except _NETWORK_ERRORS as exc:
                raise _SourceFailed(
                    f"transfer broke off after {done:,} bytes ({_describe_network_error(exc, timeout)})"
                ) from None
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as exc:
                raise WeightsError(
                    f"Cannot write {info.filename} into {folder} ({exc.strerror or exc}). "
                    f"Free some disk space or set {CACHE_ENV_VAR} to another folder."
                ) from None
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    # http.client returns b"" (no exception) when the peer closes before Content-Length is reached.
    if announced is not None and done != announced:
        raise _SourceFailed(f"connection closed after {done:,} of {announced:,} bytes")
    if info.size_bytes is not None and done != info.size_bytes:
        raise _SourceFailed(f"received {done:,} bytes, but {info.filename} has {info.size_bytes:,}")
    return digest.hexdigest(), done


def _manual_instructions(info: WeightsInfo, folder: Path, urls: Sequence[str]) -> str:
    lines = ["To install it by hand, download the file from one of:"]
    lines += [f"    {u}" for u in urls]
    lines.append(f"and save it as:\n    {folder / info.filename}")
    if info.sha256:
        lines.append(f"(expected SHA-256 {info.sha256}).")
    lines.append(
        f"Set {CACHE_ENV_VAR} to use another folder, or {MIRROR_ENV_VAR} to a base URL that serves "
        f"the file (tried first, as <mirror>/{info.filename})."
    )
    return "\n".join(lines)


def _manual_urls(info: WeightsInfo, tried: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(u for u in (*tried, info.url, info.hf_url) if u))


def download_weights(
    name_or_info: str | WeightsInfo,
    *,
    dest_dir: str | os.PathLike[str] | None = None,
    urls: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download a checkpoint, verify it and move it into ``dest_dir``; return its path.

    Sources are tried in order until one delivers a complete, verified file: ``urls`` when given,
    otherwise ``$NAPARI_SAM2_WEIGHTS_MIRROR/<filename>`` (when set), Meta's URL, then Hugging Face.
    An existing file of the same name is replaced only after the new one has been verified.

    Args:
        name_or_info: a name from `OFFICIAL_WEIGHTS` or a `WeightsInfo`.
        dest_dir: target folder (created if needed); default `cache_dir()`.
        urls: sources to try instead of the defaults.
        progress: called as ``progress(done_bytes, total_bytes)`` from this thread, first with 0;
            ``total_bytes`` is None when neither the server nor the registry gives the size. The count
            restarts at 0 if a source fails and the next one is tried.
        cancel: polled before each chunk (1 MiB); returning True stops the download.
        timeout: seconds to wait for the connection and for each read.

    Returns:
        The path of the verified file, ``dest_dir / info.filename``.

    Raises:
        UnknownWeightsError: unknown name.
        DownloadCancelled: ``cancel()`` returned True; nothing is left behind.
        ChecksumMismatchError: no source delivered the expected bytes and at least one delivered a file with
            the wrong SHA-256.
        WeightsUnavailableError: every source failed (offline, HTTP error, broken transfer); the message
            says how to install the file by hand.
        WeightsError: the folder is not writable or the disk is full.
    """
    info = get_weights_info(name_or_info)
    folder = Path(dest_dir).expanduser() if dest_dir is not None else cache_dir()
    sources = list(urls) if urls is not None else _default_urls(info)
    if not sources:
        raise ValueError("download_weights needs at least one URL")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(
            f"Cannot create the weights folder {folder} ({exc.strerror or exc}). "
            f"Set {CACHE_ENV_VAR} to a writable folder."
        ) from None
    final = folder / info.filename

    failures: list[tuple[str, str]] = []
    mismatch: ChecksumMismatchError | None = None
    for url in sources:
        try:
            return _download_from(url, info, final, progress, cancel, timeout)
        except _SourceFailed as exc:
            failures.append((url, str(exc)))
        except ChecksumMismatchError as exc:
            failures.append((url, f"wrong SHA-256 {exc.actual}"))
            mismatch = exc

    tried = "\n".join(f"    {u}: {why}" for u, why in failures)
    if mismatch is not None:
        raise ChecksumMismatchError(
            f"{mismatch}\nSources tried:\n{tried}",
            url=mismatch.url,
            expected=mismatch.expected,
            actual=mismatch.actual,
        ) from None
    size = f", {info.size_bytes:,} bytes" if info.size_bytes else ""
    raise WeightsUnavailableError(
        f"Could not download the SAM2 weights {info.name!r} ({info.filename}{size}).\n"
        f"Sources tried:\n{tried}\n" + _manual_instructions(info, folder, _manual_urls(info, sources)),
        info=info,
        folder=folder,
        urls=sources,
        failures=failures,
    ) from None


# ----------------------------------------------------------------------------------------------------------
# Cache front door


def cached_weights_path(name: str | WeightsInfo) -> Path | None:
    """The cached checkpoint in `cache_dir()` if it is there and verifies, else None. No network.

    Verification reads the whole file (SHA-256 against the registry, or against the ``.sha256`` sidecar
    for weights without a published checksum).
    """
    info = get_weights_info(name)
    path = cache_dir() / info.filename
    if not path.is_file():
        return None
    return path if _problem_with_cached(info, path) is None else None


def ensure_weights(
    name: str | WeightsInfo,
    *,
    download: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> Path:
    """Return the path of a verified checkpoint in `cache_dir()`, downloading it if needed.

    A cached file that fails verification is downloaded again (with a `UserWarning` saying why).

    Args:
        name: a name from `OFFICIAL_WEIGHTS` or a `WeightsInfo`.
        download: if False, never touch the network.
        progress, cancel: passed to `download_weights`.

    Raises:
        UnknownWeightsError: unknown name.
        WeightsUnavailableError: nothing usable is cached and ``download`` is False, or every source failed;
            the message says where to get the file and which folder to put it in.
        ChecksumMismatchError, DownloadCancelled, WeightsError: see `download_weights`.
    """
    info = get_weights_info(name)
    folder = cache_dir()
    path = folder / info.filename
    problem = _problem_with_cached(info, path) if path.is_file() else None
    if path.is_file() and problem is None:
        return path
    if not download:
        state = f"The cached {path} is unusable: {problem}." if problem else f"{path} does not exist."
        raise WeightsUnavailableError(
            f"The SAM2 weights {info.name!r} are not available and downloading is switched off. {state}\n"
            + _manual_instructions(info, folder, _manual_urls(info, _default_urls(info))),
            info=info,
            folder=folder,
            urls=_default_urls(info),
        )
    if problem is not None:
        warnings.warn(
            f"The cached weights {path} failed verification ({problem}); downloading them again.",
            UserWarning,
            stacklevel=2,
        )
    return download_weights(info, dest_dir=folder, progress=progress, cancel=cancel)


# ----------------------------------------------------------------------------------------------------------
# Terminal progress


def _no_progress(done: int, total: int | None) -> None:
    return None


@contextlib.contextmanager
def tqdm_progress(desc: str) -> Iterator[ProgressCallback]:
    """A ``progress(done_bytes, total_bytes)`` callback that drives a tqdm bar on an interactive stderr.

    When stderr is not a terminal (logs, pipes, notebooks' captured streams) the callback does nothing.
    The bar is closed when the ``with`` block ends::

        with tqdm_progress("sam2.1_hiera_tiny") as progress:
            ensure_weights("sam2.1_hiera_tiny", progress=progress)
    """
    stream = sys.stderr
    isatty = getattr(stream, "isatty", None)
    if stream is None or isatty is None or not isatty():
        yield _no_progress
        return

    from tqdm import tqdm

    bar = tqdm(desc=desc, total=None, unit="B", unit_scale=True, unit_divisor=1024, file=stream, leave=True)

    def update(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
