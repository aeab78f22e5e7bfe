"""Weights registry, cache folder and download: against a real HTTP server on 127.0.0.1, no internet."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import socket
import sys
import threading
from pathlib import Path

import pytest
import torch

from napari_sam2.model import weights as W
from napari_sam2.model.weights import (
    OFFICIAL_WEIGHTS,
    ChecksumMismatchError,
    DownloadCancelled,
    UnknownWeightsError,
    WeightsError,
    WeightsInfo,
    WeightsUnavailableError,
    cache_dir,
    cached_weights_path,
    download_weights,
    ensure_weights,
    get_weights_info,
    tqdm_progress,
)

# ----------------------------------------------------------------------------------------------------------
# Fixtures: a checkpoint in the official layout and a local HTTP server that serves it


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    """A small checkpoint in Meta's format, ``{"model": state_dict}``, about 2.6 MB (3 download chunks)."""
    gen = torch.Generator().manual_seed(0)
    state_dict = {
        "image_encoder.trunk.patch_embed.proj.weight": torch.randn(96, 3, 7, 7, generator=gen),
        "image_encoder.neck.convs.0.conv.weight": torch.randn(640, 1024, generator=gen),
        "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": torch.randn(2, 128, generator=gen),
        "sam_mask_decoder.iou_prediction_head.layers.2.bias": torch.randn(4, generator=gen),
    }
    path = tmp_path_factory.mktemp("ckpt") / "tiny_test.pt"
    torch.save({"model": state_dict}, path)
    data = path.read_bytes()
    assert len(data) > 2 * W._CHUNK_BYTES  # several chunks, so progress and cancel are exercised
    return data


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, tuple[bytes, str]] = {}  # path -> (body, mode)
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def handle_error(self, request, client_address) -> None:  # a client that hangs up is expected here
        pass

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, mode = route
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode != "no-length":
            self.send_header("Content-Length", str(len(body)))  # always the full length
        self.end_headers()
        if mode == "truncate":
            self.wfile.write(body[: len(body) // 2])  # then hang up: a short read for the client
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/sam2_test.pt"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Every test gets its own cache folder and no mirror, so nothing touches the user's cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(W.CACHE_ENV_VAR, str(folder))
    monkeypatch.delenv(W.MIRROR_ENV_VAR, raising=False)
    return folder


def _info(url: str, data: bytes | None, *, sha: bool = True, size: bool = False, **kw) -> WeightsInfo:
    fields = {
        "name": "sam2_test",
        "filename": "sam2_test.pt",
        "url": url,
        "hf_repo": "example/sam2-test",
        "hf_filename": "sam2_test.pt",
        "sha256": hashlib.sha256(data).hexdigest() if (sha and data is not None) else None,
        "size_bytes": len(data) if (size and data is not None) else None,
    }
    return WeightsInfo(**{**fields, **kw})


def _leftovers(folder: Path) -> list[str]:
    """Temporary files left in ``folder`` by a download."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if ".part-" in p.name or p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------------------------------------
# Registry


SPEC_FOLDERS = {"sam2": "072824", "sam2.1": "092824"}
SPEC_SIZES = {"tiny": "tiny", "small": "small", "base_plus": "base-plus", "large": "large"}


def test_registry_has_the_eight_official_checkpoints_with_spec_urls():
    expected = {f"{v}_hiera_{s}" for v in SPEC_FOLDERS for s in SPEC_SIZES}
    assert set(OFFICIAL_WEIGHTS) == expected
    for version, folder in SPEC_FOLDERS.items():
        for size, hf_size in SPEC_SIZES.items():
            info = OFFICIAL_WEIGHTS[f"{version}_hiera_{size}"]
            assert info.name == f"{version}_hiera_{size}"
            assert info.filename == info.hf_filename == f"{info.name}.pt"
            assert info.url == f"https://dl.fbaipublicfiles.com/segment_anything_2/{folder}/{info.filename}"
            assert info.hf_repo == f"facebook/{version}-hiera-{hf_size}"
            assert info.hf_url == f"https://huggingface.co/{info.hf_repo}/resolve/main/{info.filename}"


def test_registry_checksums_and_sizes_are_well_formed():
    digests = [i.sha256 for i in OFFICIAL_WEIGHTS.values() if i.sha256 is not None]
    assert len(set(digests)) == len(digests)  # no copy-paste duplicates
    for info in OFFICIAL_WEIGHTS.values():
        assert info.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", info.sha256), info.name
        assert info.size_bytes is None or 100_000_000 < info.size_bytes < 1_000_000_000, info.name
    # SAM 2.1 files are slightly larger than their SAM 2 counterparts (same sizes otherwise).
    for size in SPEC_SIZES:
        old, new = OFFICIAL_WEIGHTS[f"sam2_hiera_{size}"], OFFICIAL_WEIGHTS[f"sam2.1_hiera_{size}"]
        if old.size_bytes and new.size_bytes:
            assert 0 < new.size_bytes - old.size_bytes < 1_000_000


def test_weights_info_is_frozen():
    info = OFFICIAL_WEIGHTS["sam2.1_hiera_tiny"]
    with pytest.raises(AttributeError):
        info.url = "http://example.invalid/x.pt"  # type: ignore[misc]


def test_lookup_by_name_or_filename():
    assert get_weights_info("sam2.1_hiera_small") is OFFICIAL_WEIGHTS["sam2.1_hiera_small"]
    assert get_weights_info("sam2.1_hiera_small.pt") is OFFICIAL_WEIGHTS["sam2.1_hiera_small"]
    custom = _info("http://127.0.0.1:1/x.pt", b"x")
    assert get_weights_info(custom) is custom


def test_unknown_name_lists_valid_names_and_close_matches():
    with pytest.raises(UnknownWeightsError) as excinfo:
        ensure_weights("sam2.1_hiera_tinny", download=False)
    err = excinfo.value
    assert isinstance(err, KeyError)
    assert isinstance(err, WeightsError)
    message = str(err)
    assert "Did you mean 'sam2.1_hiera_tiny'" in message
    for name in OFFICIAL_WEIGHTS:
        assert name in message
    with pytest.raises(KeyError):
        cached_weights_path("vit_h")


# ----------------------------------------------------------------------------------------------------------
# Cache folder


def test_cache_dir_env_override_is_respected_and_not_created(isolated_cache, monkeypatch, tmp_path):
    assert cache_dir() == isolated_cache
    assert not isolated_cache.exists()  # created on demand only
    monkeypatch.setenv(W.CACHE_ENV_VAR, str(tmp_path / "elsewhere"))
    assert cache_dir() == tmp_path / "elsewhere"


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {"XDG_CACHE_HOME": "/xdg/cache"}, "/xdg/cache/napari-sam2"),
        ("linux", {"XDG_CACHE_HOME": "relative/ignored"}, "{home}/.cache/napari-sam2"),
        ("linux", {}, "{home}/.cache/napari-sam2"),
        ("darwin", {}, "{home}/Library/Caches/napari-sam2"),
        ("win32", {"LOCALAPPDATA": "/appdata/local"}, "/appdata/local/napari-sam2/Cache"),
    ],
)
def test_cache_dir_platform_defaults(monkeypatch, tmp_path, platform, env, expected):
    home = tmp_path / "home"
    monkeypatch.delenv(W.CACHE_ENV_VAR)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("LOCALAPPDATA", raising=False)
    monkeypatch.setenv("HOME", str(home))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "platform", platform)
    assert cache_dir() == Path(expected.format(home=home))


# ----------------------------------------------------------------------------------------------------------
# download_weights


def test_download_verifies_and_reports_monotone_progress(server, checkpoint_bytes, tmp_path):
    server.routes["/w.pt"] = (checkpoint_bytes, "ok")
    info = _info(server.url("/w.pt"), checkpoint_bytes, size=True)
    calls: list[tuple[int, int | None]] = []

    path = download_weights(info, dest_dir=tmp_path / "dl", progress=lambda d, t: calls.append((d, t)))

    assert path == tmp_path / "dl" / "sam2_test.pt"
    assert path.read_bytes() == checkpoint_bytes
    total = len(checkpoint_bytes)
    assert calls[0] == (0, total)
    assert calls[-1] == (total, total)
    assert len(calls) >= 4  # 0 plus at least three chunks
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert {t for _, t in calls} == {total}
    sidecar = path.with_name("sam2_test.pt.sha256")
    assert sidecar.read_text().split() == [info.sha256, "sam2_test.pt"]
    assert _leftovers(path.parent) == []
    # The file is the official layout and loads safely.
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert set(loaded) == {"model"}
    gaussian = loaded["model"]["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    assert gaussian.shape == (2, 128)


def test_download_without_content_length_uses_registry_size_for_progress(server, checkpoint_bytes, tmp_path):
    server.routes["/w.pt"] = (checkpoint_bytes, "no-length")
    info = _info(server.url("/w.pt"), checkpoint_bytes, size=True)
    calls: list[tuple[int, int | None]] = []
    path = download_weights(info, dest_dir=tmp_path, progress=lambda d, t: calls.append((d, t)))
    assert path.read_bytes() == checkpoint_bytes
    assert calls[-1] == (len(checkpoint_bytes), len(checkpoint_bytes))


def test_checksum_mismatch_is_refused_and_leaves_nothing(server, checkpoint_bytes, tmp_path):
    server.routes["/w.pt"] = (checkpoint_bytes, "ok")
    url = server.url("/w.pt")
    info = _info(url, checkpoint_bytes, sha256="0" * 64)

    with pytest.raises(ChecksumMismatchError) as excinfo:
        download_weights(info, dest_dir=tmp_path)

    err = excinfo.value
    actual = hashlib.sha256(checkpoint_bytes).hexdigest()
    assert (err.expected, err.actual, err.url) == ("0" * 64, actual, url)
    for text in ("0" * 64, actual, url):
        assert text in str(err)
    assert not (tmp_path / "sam2_test.pt").exists()
    assert not (tmp_path / "sam2_test.pt.sha256").exists()
    assert _leftovers(tmp_path) == []


def test_checksum_mismatch_does_not_replace_an_existing_file(server, checkpoint_bytes, tmp_path):
    (tmp_path / "sam2_test.pt").write_bytes(b"previous version")
    server.routes["/w.pt"] = (checkpoint_bytes, "ok")
    with pytest.raises(ChecksumMismatchError):
        download_weights(_info(server.url("/w.pt"), checkpoint_bytes, sha256="f" * 64), dest_dir=tmp_path)
    assert (tmp_path / "sam2_test.pt").read_bytes() == b"previous version"


def test_interrupted_transfer_is_an_error_then_a_retry_succeeds(server, checkpoint_bytes, tmp_path):
    server.routes["/w.pt"] = (checkpoint_bytes, "truncate")
    url = server.url("/w.pt")
    info = _info(url, checkpoint_bytes, sha=False)  # no checksum: only the length check can catch it

    with pytest.raises(WeightsUnavailableError) as excinfo:
        download_weights(info, dest_dir=tmp_path)
    n = len(checkpoint_bytes)
    assert f"closed after {n // 2:,} of {n:,} bytes" in str(excinfo.value)
    assert not (tmp_path / "sam2_test.pt").exists()
    assert _leftovers(tmp_path) == []

    server.routes["/w.pt"] = (checkpoint_bytes, "ok")
    path = download_weights(info, dest_dir=tmp_path)
    assert path.read_bytes() == checkpoint_bytes
    assert _leftovers(tmp_path) == []


def test_short_body_without_content_length_is_caught_by_the_known_size(server, checkpoint_bytes, tmp_path):
    server.routes["/w.pt"] = (checkpoint_bytes[:1000], "no-length")
    info = _info(server.url("/w.pt"), checkpoint_bytes, sha=False, size=True)
    with pytest.raises(WeightsUnavailableError, match="received 1,000 bytes"):
        download_weights(info, dest_dir=tmp_path)
    assert not (tmp_path / "sam2_test.pt").exists()
    assert _leftovers(tmp_path) == []


def test_cancel_mid_download_cleans_up_and_stops(server, checkpoint_bytes, tmp_path):
    server.routes["/a.pt"] = (checkpoint_bytes, "ok")
    server.routes["/b.pt"] = (checkpoint_bytes, "ok")
    info = _info(server.url("/a.pt"), checkpoint_bytes)
    calls: list[int] = []

    with pytest.raises(DownloadCancelled):
        download_weights(
            info,
            dest_dir=tmp_path,
            urls=[server.url("/a.pt"), server.url("/b.pt")],
            progress=lambda d, t: calls.append(d),
            cancel=lambda: len(calls) >= 2,  # after the first chunk arrived
        )
    assert 0 < calls[-1] < len(checkpoint_bytes)
    assert server.requests == ["/a.pt"]  # cancelling does not fall through to the next source
    assert not (tmp_path / "sam2_test.pt").exists()
    assert _leftovers(tmp_path) == []


def test_offline_raises_unavailable_with_instructions(closed_port_url, checkpoint_bytes, isolated_cache):
    info = _info(closed_port_url, checkpoint_bytes, hf_repo="example/unreachable")

    with pytest.raises(WeightsUnavailableError) as excinfo:
        download_weights(info, urls=[closed_port_url], timeout=5)

    err = excinfo.value
    message = str(err)
    assert "sam2_test.pt" in message
    assert closed_port_url in message
    assert str(isolated_cache) in message
    assert str(isolated_cache / "sam2_test.pt") in message
    assert W.CACHE_ENV_VAR in message and W.MIRROR_ENV_VAR in message
    assert info.hf_url in message  # the by-hand instructions list the official sources too
    assert err.__cause__ is None and err.__suppress_context__  # no urllib traceback attached
    assert err.failures and err.failures[0][0] == closed_port_url
    assert err.folder == isolated_cache
    assert _leftovers(isolated_cache) == []


def test_falls_back_to_the_next_url(server, closed_port_url, checkpoint_bytes, tmp_path):
    server.routes["/w.pt"] = (checkpoint_bytes, "ok")
    urls = [closed_port_url, server.url("/missing.pt"), server.url("/w.pt")]
    path = download_weights(_info(urls[0], checkpoint_bytes), dest_dir=tmp_path, urls=urls)
    assert path.read_bytes() == checkpoint_bytes
    assert server.requests == ["/missing.pt", "/w.pt"]


def test_default_sources_try_the_mirror_first(server, closed_port_url, checkpoint_bytes, monkeypatch):
    server.routes["/mirror/sam2_test.pt"] = (checkpoint_bytes, "ok")
    server.routes["/meta/sam2_test.pt"] = (checkpoint_bytes, "ok")
    monkeypatch.setenv(W.MIRROR_ENV_VAR, server.url("/mirror/"))
    info = _info(server.url("/meta/sam2_test.pt"), checkpoint_bytes)

    path = download_weights(info)

    assert path == cache_dir() / "sam2_test.pt"
    assert path.read_bytes() == checkpoint_bytes
    assert server.requests == ["/mirror/sam2_test.pt"]


def test_default_sources_are_meta_then_hugging_face(monkeypatch):
    info = OFFICIAL_WEIGHTS["sam2.1_hiera_large"]
    assert W._default_urls(info) == [info.url, info.hf_url]
    monkeypatch.setenv(W.MIRROR_ENV_VAR, "https://mirror.example.org/sam2")
    assert W._default_urls(info)[0] == "https://mirror.example.org/sam2/sam2.1_hiera_large.pt"


# ----------------------------------------------------------------------------------------------------------
# ensure_weights / cached_weights_path


def test_ensure_weights_downloads_once_then_reuses_without_network(server, checkpoint_bytes, isolated_cache):
    server.routes["/w.pt"] = (checkpoint_bytes, "ok")
    info = _info(server.url("/w.pt"), checkpoint_bytes, hf_repo="example/not-served")

    first = ensure_weights(info)
    assert first == isolated_cache / "sam2_test.pt"
    assert len(server.requests) == 1

    second = ensure_weights(info)
    third = ensure_weights(info, download=False)
    assert second == third == first
    assert cached_weights_path(info) == first
    assert len(server.requests) == 1  # verified from disk, no network
    assert first.read_bytes() == checkpoint_bytes


@pytest.mark.parametrize("known_checksum", [True, False], ids=["registry-sha256", "sidecar-only"])
def test_corrupted_cache_is_detected_and_downloaded_again(
    server, checkpoint_bytes, isolated_cache, known_checksum
):
    server.routes["/w.pt"] = (checkpoint_bytes, "ok")
    info = _info(server.url("/w.pt"), checkpoint_bytes, sha=known_checksum)
    path = ensure_weights(info)
    assert path.with_name("sam2_test.pt.sha256").exists()

    corrupted = bytearray(checkpoint_bytes)
    corrupted[len(corrupted) // 2] ^= 0xFF  # same size, one flipped byte
    path.write_bytes(bytes(corrupted))
    assert cached_weights_path(info) is None

    with pytest.raises(WeightsUnavailableError, match="unusable"):
        ensure_weights(info, download=False)
    assert len(server.requests) == 1

    with pytest.warns(UserWarning, match="failed verification"):
        again = ensure_weights(info)
    assert again == path
    assert again.read_bytes() == checkpoint_bytes
    assert len(server.requests) == 2
    assert cached_weights_path(info) == path


def test_file_copied_by_hand_without_checksum_is_trusted_once_and_then_guarded(tmp_path, checkpoint_bytes):
    info = _info("http://127.0.0.1:1/unused.pt", checkpoint_bytes, sha=False)
    cache_dir().mkdir(parents=True)
    path = cache_dir() / info.filename
    path.write_bytes(checkpoint_bytes)
    assert cached_weights_path(info) == path  # first use records a sidecar
    assert (
        path.with_name("sam2_test.pt.sha256").read_text().split()[0]
        == hashlib.sha256(checkpoint_bytes).hexdigest()
    )
    path.write_bytes(checkpoint_bytes[:-1] + bytes([checkpoint_bytes[-1] ^ 0xFF]))
    assert cached_weights_path(info) is None


def test_wrong_size_in_cache_is_rejected_without_hashing(checkpoint_bytes, monkeypatch):
    info = _info("http://127.0.0.1:1/unused.pt", checkpoint_bytes, size=True)
    cache_dir().mkdir(parents=True)
    (cache_dir() / info.filename).write_bytes(checkpoint_bytes[:100])

    def no_hashing(path):
        raise AssertionError("a file of the wrong size should not be hashed")

    monkeypatch.setattr(W, "_sha256_of_file", no_hashing)
    assert cached_weights_path(info) is None


def test_ensure_weights_offline_mode_explains_the_next_step(isolated_cache):
    with pytest.raises(WeightsUnavailableError) as excinfo:
        ensure_weights("sam2.1_hiera_tiny", download=False)
    message = str(excinfo.value)
    info = OFFICIAL_WEIGHTS["sam2.1_hiera_tiny"]
    assert str(isolated_cache / "sam2.1_hiera_tiny.pt") in message
    assert info.url in message and info.hf_url in message
    assert info.sha256 in message
    assert W.CACHE_ENV_VAR in message
    assert not isolated_cache.exists()  # asking does not create folders


def test_cached_official_weights_are_found_only_when_they_verify(monkeypatch, checkpoint_bytes):
    """An official name resolves to cache_dir()/<file>; here with a patched registry entry for a small file."""
    fake = _info(
        "https://example.invalid/x.pt",
        checkpoint_bytes,
        name="sam2.1_hiera_tiny",
        filename="sam2.1_hiera_tiny.pt",
        size=True,
    )
    monkeypatch.setitem(OFFICIAL_WEIGHTS, "sam2.1_hiera_tiny", fake)
    assert cached_weights_path("sam2.1_hiera_tiny") is None
    cache_dir().mkdir(parents=True)
    (cache_dir() / "sam2.1_hiera_tiny.pt").write_bytes(checkpoint_bytes)
    assert cached_weights_path("sam2.1_hiera_tiny") == cache_dir() / "sam2.1_hiera_tiny.pt"


# ----------------------------------------------------------------------------------------------------------
# tqdm adapter


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tqdm_progress_is_silent_without_a_terminal(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with tqdm_progress("weights") as progress:
        progress(0, 100)
        progress(100, 100)
    assert stream.getvalue() == ""


def test_tqdm_progress_drives_a_bar_on_a_terminal(monkeypatch):
    stream = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    with tqdm_progress("sam2_test") as progress:
        progress(0, 2048)
        progress(1024, 2048)
        progress(2048, 2048)
    out = stream.getvalue()
    assert "sam2_test" in out
    assert "100%" in out
