"""Embedding cache: keys, LRU byte budget, zarr disk tier, corruption and crash safety, fingerprints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
import zarr
from torch import nn

import napari_sam2.engine.cache as cache_module
from napari_sam2.engine.cache import CacheKey, EmbeddingCache, weights_fingerprint
from napari_sam2.model import ImageFeatures

KEY = CacheKey(
    data_id="/data/stack.tif@1700000000",
    frame=(3,),
    tile=(0, 0, 64, 64),
    model_id="sam2.1_hiera_tiny:0123456789abcdef",
    window=(0.0, 1000.0),
    image_size=1024,
)


def make_features(seed: int = 0, dtype: torch.dtype = torch.float32) -> ImageFeatures:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    return ImageFeatures(rand(1, 8, 4, 4), rand(1, 8, 4, 4), (rand(1, 1, 16, 16), rand(1, 2, 8, 8)))


ENTRY_BYTES = 4 * (2 * 8 * 4 * 4 + 1 * 16 * 16 + 2 * 8 * 8)


def assert_same(a: ImageFeatures, b: ImageFeatures) -> None:
    """Bitwise equal tensors, same dtypes, all on the CPU."""
    for x, y in zip((a.embed, a.pos, *a.high_res), (b.embed, b.pos, *b.high_res), strict=True):
        assert x.device.type == "cpu" and x.dtype == y.dtype
        assert torch.equal(x, y)


def entry_path(directory: Path, key: CacheKey) -> Path:
    d = key.digest()
    return directory / d[:2] / f"{d}.zarr"


# ---------------------------------------------------------------------- keys
def test_key_digest_is_canonical_and_stable():
    # a fixed value: the digest must not depend on the process, platform or dict order
    assert KEY.digest() == "fdcaf4862d44bd9f5184ca0b6107c7eb1c9b5e8f230873e43e15b311c127ac40"
    same = CacheKey(KEY.data_id, 3, (0, 0, 64, 64), KEY.model_id, (-0.0, 1000), 1024)
    assert same == KEY and hash(same) == hash(KEY) and same.digest() == KEY.digest()
    assert same.frame == (3,) and same.window == (0.0, 1000.0)


def test_key_validation():
    with pytest.raises(ValueError, match="tile"):
        replace(KEY, tile=(0, 0, 0, 64))
    # the old order (row0, row1, col0, col1) of a tile away from the origin is refused
    with pytest.raises(ValueError, match=r"tile must be \(row0, col0, row1, col1\)"):
        replace(KEY, tile=(64, 128, 0, 64))
    with pytest.raises(ValueError, match="tile"):
        replace(KEY, tile=(0, 64, 0))
    with pytest.raises(ValueError, match="window"):
        replace(KEY, window=(0.0, float("nan")))
    with pytest.raises(ValueError):
        replace(KEY, frame=(1.5,))
    with pytest.raises(ValueError, match="image_size"):
        replace(KEY, image_size=0)


CHANGES = {
    "data_id": "/data/stack.tif@1700000001",
    "frame": (4,),
    "tile": (0, 64, 32, 96),
    "model_id": "sam2.1_hiera_tiny:fedcba9876543210",
    "window": (0.0, 1000.0000000000001),  # the smallest change of a float changes the key
    "image_size": 512,
}


def test_changes_cover_every_key_field():
    assert set(CHANGES) == {f.name for f in fields(CacheKey)}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_every_key_field_invalidates(tmp_path, field):
    changed = replace(KEY, **{field: CHANGES[field]})
    assert changed != KEY and changed.digest() != KEY.digest()
    cache = EmbeddingCache(directory=tmp_path)
    cache.put(KEY, make_features())
    assert cache.get(changed) is None  # not in memory
    assert EmbeddingCache(directory=tmp_path).get(changed) is None  # nor on disk
    assert changed not in cache


# ---------------------------------------------------------------------- memory
def test_hit_and_miss():
    cache = EmbeddingCache()
    feats = make_features()
    assert cache.get(KEY) is None and KEY not in cache
    cache.put(KEY, feats)
    assert KEY in cache and len(cache) == 1 and cache.nbytes == ENTRY_BYTES
    assert cache.get(KEY) is feats and cache.get(KEY) is feats
    s = cache.stats
    assert (s.hits, s.misses, s.disk_hits, s.evictions, s.corrupt) == (2, 1, 0, 0, 0)
    s.hits = 100  # a snapshot: does not change the cache's counters
    assert cache.stats.hits == 2


def test_lru_order_and_byte_budget():
    cache = EmbeddingCache(max_bytes=int(2.5 * ENTRY_BYTES))
    keys = [replace(KEY, frame=(i,)) for i in range(4)]
    cache.put(keys[0], make_features(0))
    cache.put(keys[1], make_features(1))
    assert cache.get(keys[0]) is not None  # refreshes 0: now 1 is the least recently used
    cache.put(keys[2], make_features(2))
    assert keys[1] not in cache and keys[0] in cache and keys[2] in cache
    assert cache.stats.evictions == 1 and cache.nbytes == 2 * ENTRY_BYTES <= cache.max_bytes
    cache.put(keys[3], make_features(3))  # 0 is now the oldest
    assert keys[0] not in cache and cache.stats.evictions == 2
    cache.put(keys[2], make_features(5))  # replacing an entry does not count twice
    assert cache.nbytes == 2 * ENTRY_BYTES and len(cache) == 2


def test_entry_larger_than_budget_goes_to_disk_only(tmp_path):
    cache = EmbeddingCache(max_bytes=ENTRY_BYTES - 1, directory=tmp_path)
    cache.put(KEY, make_features())
    assert cache.nbytes == 0 and len(cache) == 0 and KEY in cache  # on disk
    assert_same(cache.get(KEY), make_features())
    assert cache.stats.disk_hits == 1


def test_put_moves_views_out_of_their_batch():
    batch = ImageFeatures(
        torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4), (torch.randn(2, 1, 16, 16), torch.randn(2, 2, 8, 8))
    )
    one = batch.select(1)
    cache = EmbeddingCache()
    cache.put(KEY, one)
    got = cache.get(KEY)
    assert cache.nbytes == ENTRY_BYTES
    assert got.embed.untyped_storage().nbytes() == got.embed.numel() * 4  # the batch is not kept alive
    assert_same(got, one)


def test_put_validates():
    cache = EmbeddingCache()
    with pytest.raises(TypeError, match="CacheKey"):
        cache.put(KEY.digest(), make_features())
    bad = make_features()
    with pytest.raises(ValueError, match="embed"):
        cache.put(KEY, ImageFeatures(bad.embed[0], bad.pos, bad.high_res))
    with pytest.raises(ValueError, match="max_bytes"):
        EmbeddingCache(max_bytes=-1)
    with pytest.raises(ValueError, match="disk_dtype"):
        EmbeddingCache(disk_dtype="bfloat16")


# ---------------------------------------------------------------------- disk
def test_disk_round_trip_across_instances(tmp_path):
    feats = make_features()
    EmbeddingCache(directory=tmp_path).put(KEY, feats)
    path = entry_path(tmp_path, KEY)
    assert sorted(p.name for p in path.iterdir()) == ["embed", "high_res_0", "high_res_1", "pos", "zarr.json"]
    meta = zarr.open_group(str(path), mode="r").attrs["napari_sam2_embedding"]
    assert meta["format_version"] == 2 and meta["key"] == KEY.to_record()
    assert meta["arrays"]["high_res_1"]["shape"] == [1, 2, 8, 8]

    other = EmbeddingCache(directory=str(tmp_path))
    assert KEY in other
    got = other.get(KEY)
    assert_same(got, feats)
    assert other.get(KEY) is got  # then kept in memory
    s = other.stats
    assert (s.hits, s.disk_hits, s.misses, s.corrupt) == (2, 1, 0, 0)


def test_entry_of_an_older_format_is_a_quiet_miss_and_replaced(tmp_path):
    """Version 1 keyed tiles as (row0, row1, col0, col1); such an entry must never be read as a
    version 2 one (same bytes, other tile), nor reported as damage: it is a miss, rebuilt on put."""
    feats, newer = make_features(0), make_features(1)
    EmbeddingCache(directory=tmp_path).put(KEY, feats)
    path = entry_path(tmp_path, KEY)
    group = zarr.open_group(str(path), mode="r+")
    meta = dict(group.attrs["napari_sam2_embedding"])
    group.attrs["napari_sam2_embedding"] = {**meta, "format_version": 1}
    cache = EmbeddingCache(directory=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unusable entry" warning
        assert cache.get(KEY) is None
    assert (cache.stats.misses, cache.stats.corrupt) == (1, 0)
    cache.put(KEY, newer)
    meta = zarr.open_group(str(path), mode="r").attrs["napari_sam2_embedding"]
    assert meta["format_version"] == cache_module.FORMAT_VERSION == 2
    assert_same(EmbeddingCache(directory=tmp_path).get(KEY), newer)


def test_float16_on_disk(tmp_path):
    feats = make_features()
    EmbeddingCache(directory=tmp_path, disk_dtype="float16").put(KEY, feats)
    got = EmbeddingCache(directory=tmp_path, disk_dtype="float16").get(KEY)
    assert got.embed.dtype == torch.float32  # the dtype it was put with
    torch.testing.assert_close(got.embed, feats.embed, rtol=1e-3, atol=1e-3)
    # a cache that wants exact float32 does not accept the float16 entry, and replaces it
    exact = EmbeddingCache(directory=tmp_path)
    assert exact.get(KEY) is None and exact.stats.corrupt == 0
    exact.put(KEY, feats)
    assert_same(EmbeddingCache(directory=tmp_path).get(KEY), feats)


def test_bfloat16_features_keep_their_dtype(tmp_path):
    feats = make_features(dtype=torch.bfloat16)  # what CUDA autocast produces
    EmbeddingCache(directory=tmp_path).put(KEY, feats)
    assert_same(EmbeddingCache(directory=tmp_path).get(KEY), feats)


def _delete_chunk(path: Path) -> None:
    (path / "embed" / "c" / "0" / "0" / "0" / "0").unlink()  # zarr would read zeros


def _truncate_chunk(path: Path) -> None:
    chunk = path / "high_res_0" / "c" / "0" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20])


def _flip_value(path: Path) -> None:
    array = zarr.open_array(str(path / "pos"), mode="r+")
    array[0, 0, 0, 0] = array[0, 0, 0, 0] + 1.0  # a valid chunk, wrong content


def _other_key_attributes(path: Path) -> None:
    other = replace(KEY, frame=(99,))
    cache = EmbeddingCache(directory=path.parent.parent)
    cache.put(other, make_features())
    src = entry_path(path.parent.parent, other) / "zarr.json"
    (path / "zarr.json").write_bytes(src.read_bytes())  # tampered: this entry now claims another key


def _bad_json(path: Path) -> None:
    (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gr')


def _missing_array(path: Path) -> None:
    for p in sorted((path / "pos").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (path / "pos").rmdir()


def _wrong_shape(path: Path) -> None:
    meta_path = path / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["napari_sam2_embedding"]["arrays"]["embed"]["shape"] = [1, 8, 2, 8]
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "damage",
    [
        _delete_chunk,
        _truncate_chunk,
        _flip_value,
        _other_key_attributes,
        _bad_json,
        _missing_array,
        _wrong_shape,
    ],
)
def test_corrupt_entry_is_detected_deleted_and_recomputed(tmp_path, damage):
    feats = make_features()
    EmbeddingCache(directory=tmp_path).put(KEY, feats)
    path = entry_path(tmp_path, KEY)
    damage(path)

    cache = EmbeddingCache(directory=tmp_path)
    with pytest.warns(RuntimeWarning, match="unusable.*recomputed"):
        assert cache.get(KEY) is None
    s = cache.stats
    assert (s.corrupt, s.misses, s.hits) == (1, 1, 0)
    assert not path.exists()

    cache.put(KEY, feats)  # the caller recomputes
    assert_same(EmbeddingCache(directory=tmp_path).get(KEY), feats)


def test_failed_write_leaves_no_entry(tmp_path, monkeypatch):
    """An error halfway through writing the arrays: no entry, no leftovers, memory still works."""
    calls = []
    original = zarr.Array.__setitem__

    def failing(self, selection, value):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("No space left on device (simulated)")
        return original(self, selection, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", failing)
    feats = make_features()
    cache = EmbeddingCache(directory=tmp_path)
    with pytest.warns(RuntimeWarning, match="could not write.*No space left"):
        cache.put(KEY, feats)
    assert cache.get(KEY) is feats  # the memory tier is unaffected
    assert not entry_path(tmp_path, KEY).exists()
    assert not list(entry_path(tmp_path, KEY).parent.iterdir())  # the temporary folder is gone
    fresh = EmbeddingCache(directory=tmp_path)
    assert fresh.get(KEY) is None and fresh.stats.corrupt == 0

    monkeypatch.setattr(zarr.Array, "__setitem__", original)
    cache.put(KEY, feats)
    assert_same(EmbeddingCache(directory=tmp_path).get(KEY), feats)


CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys, torch, zarr
    from napari_sam2.engine.cache import CacheKey, EmbeddingCache
    from napari_sam2.model import ImageFeatures

    calls = []
    original = zarr.Array.__setitem__

    def crash(self, selection, value):
        calls.append(1)
        if len(calls) == 3:
            os._exit(17)  # the process dies halfway through the arrays: no cleanup runs
        return original(self, selection, value)

    zarr.Array.__setitem__ = crash
    key = CacheKey(**{k: tuple(v) if isinstance(v, list) else v for k, v in eval(sys.argv[2]).items()})
    t = torch.zeros(1, 8, 4, 4)
    feats = ImageFeatures(t, t, (torch.zeros(1, 1, 16, 16), torch.zeros(1, 2, 8, 8)))
    EmbeddingCache(directory=sys.argv[1]).put(key, feats)
    """
)


def test_crash_mid_write_leaves_only_an_ignored_tmp_folder(tmp_path):
    fields_ = {f.name: getattr(KEY, f.name) for f in fields(CacheKey)}
    proc = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(tmp_path), repr(fields_)], capture_output=True, text=True
    )
    assert proc.returncode == 17, proc.stderr
    final = entry_path(tmp_path, KEY)
    assert not final.exists()
    leftovers = list(final.parent.glob(f"{final.name}.tmp-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "embed").is_dir()  # half written, under a tmp name

    cache = EmbeddingCache(directory=tmp_path)
    assert cache.get(KEY) is None and KEY not in cache and cache.stats.corrupt == 0
    feats = make_features()
    cache.put(KEY, feats)  # succeeds; a recent tmp folder may be another process's write in progress
    assert leftovers[0].exists()
    assert_same(EmbeddingCache(directory=tmp_path).get(KEY), feats)

    old = time.time() - 2 * cache_module.STALE_TMP_SECONDS
    os.utime(leftovers[0], (old, old))
    cache.put(KEY, feats)  # a stale one is removed by the next put of the same key
    assert not leftovers[0].exists()
    assert_same(EmbeddingCache(directory=tmp_path).get(KEY), feats)


def test_clear_removes_entries_and_leftovers_only(tmp_path):
    cache = EmbeddingCache(directory=tmp_path)
    keys = [replace(KEY, frame=(i,)) for i in range(3)]
    for i, k in enumerate(keys):
        cache.put(k, make_features(i))
    final = entry_path(tmp_path, keys[0])
    (final.parent / f"{final.name}.tmp-123-abcd").mkdir()  # a crash leftover
    (tmp_path / "README.txt").write_text("not ours")
    (tmp_path / "ab").mkdir(exist_ok=True)
    (tmp_path / "ab" / "notes.txt").write_text("not ours either")

    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
    assert all(k not in cache for k in keys)
    remaining = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert remaining == ["README.txt", "ab", os.path.join("ab", "notes.txt")]
    cache.put(keys[0], make_features(0))
    assert_same(EmbeddingCache(directory=tmp_path).get(keys[0]), make_features(0))


# ---------------------------------------------------------------------- fingerprints
def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 300), nn.ReLU(), nn.Linear(300, 2), nn.BatchNorm1d(2))


def test_weights_fingerprint():
    model = _model(0)
    fp = weights_fingerprint(model)
    assert len(fp) == 16 and int(fp, 16) >= 0
    reloaded = _model(1)
    assert weights_fingerprint(reloaded) != fp
    reloaded.load_state_dict(model.state_dict())
    assert weights_fingerprint(reloaded) == fp
    assert weights_fingerprint(model.state_dict()) == fp
    with torch.no_grad():
        model[2].weight[0, 0] += 1e-3  # one weight (first element: always sampled)
    assert weights_fingerprint(model) != fp
    with torch.no_grad():
        model[2].weight[0, 0] -= 1e-3
        model[0].weight.view(-1)[-1] += 1e-3  # the last element of a 1200-value tensor
    assert weights_fingerprint(model) != fp


def test_weights_fingerprint_is_stable_across_processes():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.arange(6, dtype=torch.float32).reshape(2, 3))
        model.bias.copy_(torch.tensor([0.5, -0.5]))
    assert weights_fingerprint(model) == "f017b180f1ea353e"
