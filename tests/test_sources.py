"""Lazy image sources: every input kind reads the same values as numpy, touching only needed chunks."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import tifffile
import zarr
from zarr.storage import MemoryStore

from counting_store import CountingStore
from napari_sam2.engine.sources import ImageSource, SourceError, open_image


def _dask():
    """dask.array, which is not a runtime dependency: tests that need it skip without it."""
    return pytest.importorskip("dask.array")


VOLUME = np.random.default_rng(0).integers(0, 60000, (5, 70, 90)).astype(np.uint16)  # (z, y, x)


def _ome_zarr(path, levels, axes, zarr_format):
    """An OME-Zarr multiscale group: v0.4 in zarr v2 attributes, v0.5 under attributes["ome"] in zarr v3."""
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    for i, level in enumerate(levels):
        group.create_array(str(i), data=level, chunks=(1, 32, 32) if level.ndim == 3 else (32, 32))
    multiscales = [
        {
            "axes": [{"name": a, "type": {"c": "channel", "t": "time"}.get(a, "space")} for a in axes],
            "datasets": [{"path": str(i)} for i in range(len(levels))],
        }
    ]
    if zarr_format == 2:
        group.attrs["multiscales"] = [{"version": "0.4", **multiscales[0]}]
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
    return path


def _make(kind, tmp_path, a=VOLUME):
    """``a`` (3D, z y x) as the input kind ``kind``."""
    if kind == "numpy":
        return a
    if kind == "dask":
        return _dask().from_array(a, chunks=(1, 32, 32))
    if kind in ("zarr2", "zarr3"):
        z = zarr.create_array(
            MemoryStore(), shape=a.shape, chunks=(1, 32, 32), dtype=a.dtype, zarr_format=int(kind[-1])
        )
        z[:] = a
        return z
    if kind in ("zarr2-path", "zarr3-path"):
        path = str(tmp_path / "image.zarr")
        z = zarr.create_array(
            path, shape=a.shape, chunks=(2, 32, 32), dtype=a.dtype, zarr_format=int(kind[4])
        )
        z[:] = a
        return path
    if kind in ("ome-zarr-v0.4", "ome-zarr-v0.5"):
        fmt = 2 if kind.endswith("0.4") else 3
        return _ome_zarr(str(tmp_path / "image.ome.zarr"), [a, a[:, ::2, ::2]], "zyx", fmt)
    if kind == "tiff-tiled-zlib-bigtiff":
        path = tmp_path / "image.btf"
        tifffile.imwrite(path, a, tile=(32, 32), compression="zlib", bigtiff=True, photometric="minisblack")
        return path
    if kind == "tiff-plain":
        path = tmp_path / "image.tif"
        tifffile.imwrite(path, a, photometric="minisblack")
        return str(path)
    if kind == "ome-tiff-pyramid":
        path = tmp_path / "image.ome.tif"
        with tifffile.TiffWriter(path, bigtiff=True) as tw:
            tw.write(a, subifds=1, tile=(32, 32), compression="zlib", metadata={"axes": "ZYX"})
            tw.write(a[:, ::2, ::2], subfiletype=1, tile=(32, 32), compression="zlib")
        return path
    raise AssertionError(kind)


KINDS = [
    "numpy",
    "dask",
    "zarr2",
    "zarr3",
    "zarr2-path",
    "zarr3-path",
    "ome-zarr-v0.4",
    "ome-zarr-v0.5",
    "tiff-tiled-zlib-bigtiff",
    "tiff-plain",
    "ome-tiff-pyramid",
]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_reads_like_numpy(kind, tmp_path):
    with open_image(_make(kind, tmp_path)) as src:
        assert (src.axes, src.frame_shape, src.plane_hw, src.rgb, src.dtype) == (
            "zyx",
            (5,),
            (70, 90),
            False,
            np.uint16,
        )
        assert src.num_frames == 5 and list(src.frame_indices()) == [(i,) for i in range(5)]
        for z in (0, 2, 4):
            plane = src.plane((z,))
            assert plane.dtype == np.uint16 and plane.flags.c_contiguous
            np.testing.assert_array_equal(plane, VOLUME[z])
        np.testing.assert_array_equal(src.plane(3), VOLUME[3])  # a bare int for one frame axis
        np.testing.assert_array_equal(src.region((1,), slice(20, 50), slice(33, 70)), VOLUME[1, 20:50, 33:70])
        # clipped to the plane: a tile with a halo reaching past the borders
        np.testing.assert_array_equal(src.region((4,), slice(-8, 10), slice(80, 120)), VOLUME[4, :10, 80:])
        np.testing.assert_array_equal(src.region((0,), slice(None), slice(None)), VOLUME[0])
        expected_levels = 2 if kind.startswith("ome") else 1
        assert len(src.levels) == expected_levels
        if expected_levels == 2:
            np.testing.assert_array_equal(np.asarray(src.levels[1][2]), VOLUME[2, ::2, ::2])


def test_plane_is_a_copy_of_numpy_input():
    a = VOLUME.copy()
    src = open_image(a)
    src.plane(0)[:] = 0
    src.region(1, slice(0, 5), slice(0, 5))[:] = 0
    np.testing.assert_array_equal(a, VOLUME)


@pytest.mark.parametrize(
    ("shape", "kwargs", "axes", "frame_shape", "plane_hw", "rgb"),
    [
        ((40, 50), {}, "yx", (), (40, 50), False),
        ((6, 40, 50), {}, "zyx", (6,), (40, 50), False),
        ((40, 50, 3), {}, "yx", (), (40, 50), True),
        ((40, 50, 4), {}, "yx", (), (40, 50), True),  # RGBA: alpha dropped
        ((40, 50, 3), {"rgb": False}, "zyx", (40,), (50, 3), False),
        ((2, 6, 40, 50), {}, "tzyx", (2, 6), (40, 50), False),
        ((6, 40, 50, 3), {}, "zyx", (6,), (40, 50), True),
        ((2, 6, 40, 50, 3), {}, "tzyx", (2, 6), (40, 50), True),
        ((2, 1, 6, 40, 50), {}, "tzyx", (2, 6), (40, 50), False),  # tczyx with one channel
        ((7, 40, 50), {"axes": "tyx"}, "tyx", (7,), (40, 50), False),
        ((40, 50, 3), {"channel": 1}, "yx", (), (40, 50), False),  # one colour of an RGB image
    ],
)
def test_axes_inference(shape, kwargs, axes, frame_shape, plane_hw, rgb):
    a = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    src = open_image(a, **kwargs)
    assert (src.axes, src.frame_shape, src.plane_hw, src.rgb) == (axes, frame_shape, plane_hw, rgb)
    frame = next(iter(src.frame_indices()))
    assert src.plane(frame).shape == ((*plane_hw, 3) if rgb else plane_hw)
    assert len(list(src.frame_indices())) == src.num_frames == int(np.prod(frame_shape))


def test_rgb_values_and_alpha_dropped():
    rgba = np.random.default_rng(1).integers(0, 255, (3, 20, 30, 4)).astype(np.uint8)
    src = open_image(rgba)
    np.testing.assert_array_equal(src.plane(2), rgba[2, ..., :3])
    np.testing.assert_array_equal(src.region(1, slice(5, 9), slice(0, 4)), rgba[1, 5:9, :4, :3])
    assert src.levels[0].shape == (3, 20, 30, 3)


def test_explicit_axes_channel_anywhere_and_transposed():
    a = np.random.default_rng(2).integers(0, 1000, (2, 3, 4, 20, 30)).astype(np.uint16)  # t c z y x
    src = open_image(a, axes="tczyx", channel=2)
    assert (src.axes, src.frame_shape) == ("tzyx", (2, 4))
    np.testing.assert_array_equal(src.plane((1, 3)), a[1, 2, 3])
    np.testing.assert_array_equal(src.region((0, 1), slice(2, 9), slice(10, 30)), a[0, 2, 1, 2:9, 10:30])
    np.testing.assert_array_equal(src.levels[0][1, 2], a[1, 2, 2])  # a lazy view in (t, z, y, x) order

    b = np.random.default_rng(3).integers(0, 1000, (30, 20, 4)).astype(np.float32)  # x y z
    src = open_image(b, axes="XYZ")  # upper case accepted
    assert (src.axes, src.frame_shape, src.plane_hw) == ("zyx", (4,), (20, 30))
    np.testing.assert_array_equal(src.plane(1), b[:, :, 1].T)
    np.testing.assert_array_equal(src.region(3, slice(0, 5), slice(7, 9)), b[7:9, 0:5, 3].T)

    c = np.random.default_rng(4).integers(0, 255, (3, 20, 30)).astype(np.uint8)  # c y x, RGB planar
    src = open_image(c, axes="cyx")
    assert src.rgb
    np.testing.assert_array_equal(src.plane(), np.moveaxis(c, 0, -1))
    src = open_image(c, axes="cyx", rgb=False, channel=0)
    np.testing.assert_array_equal(src.plane(), c[0])

    d = np.random.default_rng(5).integers(0, 255, (5, 7, 20, 30)).astype(np.uint8)
    src = open_image(d, axes="ztyx")  # frames are reordered to (t, z)
    assert src.axes == "tzyx" and src.frame_shape == (7, 5)
    np.testing.assert_array_equal(src.plane((6, 2)), d[2, 6])


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((4, 5, 20, 30), {"axes": "czyx"}, "has 4 channels; choose one with channel=0..3"),
        ((4, 5, 20, 30), {"axes": "czyx", "channel": 4}, "valid: 0..3"),
        ((4, 5, 20, 30), {"axes": "czyx", "channel": -1}, "valid: 0..3"),
        ((3, 20, 30), {"axes": "cyx", "rgb": False}, "has 3 channels; choose one with channel=0..2"),
        ((5, 20, 30), {"axes": "cyx", "rgb": True}, "rgb=True needs 3 or 4 channels"),
        ((3, 20, 30), {"axes": "cyx", "rgb": True, "channel": 0}, "cannot be combined with channel="),
        ((5, 20, 30), {"channel": 1}, "has no channel axis"),
        ((5, 20, 30), {"rgb": True}, "rgb=True needs a channel axis"),
        ((4, 20, 30, 4), {"axes": "zyxc"}, "has 4 channels"),  # RGBA only when inferred or rgb=True
    ],
)
def test_channel_errors(shape, kwargs, message):
    with pytest.raises(SourceError, match=re.escape(message)):
        open_image(np.zeros(shape, np.uint8), **kwargs)


def test_rgba_with_explicit_axes_needs_rgb_true():
    a = np.random.default_rng(6).integers(0, 255, (20, 30, 4)).astype(np.uint8)
    np.testing.assert_array_equal(open_image(a, axes="yxc", rgb=True).plane(), a[..., :3])


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (np.zeros(5), {}, "expected a 2D to 5D image, got 1D"),
        (np.zeros((1,) * 6), {}, "got 6D"),
        (np.zeros((3, 0, 4)), {}, "zero-size axis"),
        (np.zeros((3, 4, 5)), {"axes": "zyq"}, r"unknown axis letters \['q'\]"),
        (np.zeros((3, 4, 5)), {"axes": "yyx"}, r"repeats \['y'\]"),
        (np.zeros((3, 4, 5)), {"axes": "yx"}, "names 2 axes but the image has 3 dimensions"),
        (np.zeros((3, 4, 5)), {"axes": "tzx"}, "must include the plane axes 'y' and 'x'"),
        (np.zeros((3, 4), bool), {}, "pixel type bool is not supported; images must be uint8, uint16"),
        (np.zeros((3, 4), complex), {}, "pixel type complex128 is not supported"),
        (np.array([[object(), 1]], dtype=object), {}, "object"),
        ([np.zeros((8, 8)), np.zeros((8, 8))], {}, "read as resolution levels"),
        ([np.zeros((8, 8)), np.zeros((4, 4), np.float32)], {}, "same axes and dtype"),
    ],
)
def test_input_errors(data, kwargs, message):
    with pytest.raises(SourceError, match=message):
        open_image(data, **kwargs)


def test_path_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist; check the path"):
        open_image(tmp_path / "missing.tif")
    (tmp_path / "picture.png").write_bytes(b"\x89PNG")
    with pytest.raises(SourceError, match=r"picture.png: unsupported file type; open TIFF files \(.tif"):
        open_image(tmp_path / "picture.png")
    (tmp_path / "folder").mkdir()
    with pytest.raises(SourceError, match="is a folder but not a zarr store"):
        open_image(tmp_path / "folder")
    (tmp_path / "fake.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(SourceError, match=r"could not read .* as a TIFF file"):
        open_image(tmp_path / "fake.tif")


def test_lzw_tiff_decodes(tmp_path):
    """LZW (common from microscopy software) needs imagecodecs, a dependency for this reason."""
    data = np.arange(64 * 80, dtype=np.uint16).reshape(64, 80)
    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, data, compression="lzw", tile=(32, 32))
    assert np.array_equal(open_image(path).plane(), data)


def test_tiff_with_a_codec_nobody_has(tmp_path, monkeypatch):
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8))
    with tifffile.TiffFile(path, mode="r+") as tif:  # claim LZW ...
        tif.pages[0].tags["Compression"].overwrite(5)

    class NoLzw:  # ... and pretend no LZW decoder is installed
        def __getitem__(self, key):
            raise KeyError(f"{tifffile.COMPRESSION(key)!r} requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TIFF, "DECOMPRESSORS", NoLzw())
    with pytest.raises(SourceError, match="requires the 'imagecodecs' package; install it with: pip install"):
        open_image(path)


def test_read_errors():
    src = open_image(VOLUME)
    with pytest.raises(SourceError, match=r"frame index z=5 is out of range; valid: 0\.\.4"):
        src.plane(5)
    with pytest.raises(SourceError, match=r"has 2 entries but axes 'zyx' have 1 frame axes"):
        src.plane((1, 2))
    with pytest.raises(SourceError, match="must be an integer"):
        src.plane((1.5,))
    with pytest.raises(SourceError, match=r"rows 70:80 select nothing of the plane's 0:70"):
        src.region(0, slice(70, 80), slice(0, 10))
    with pytest.raises(SourceError, match=r"cols -20:0 select nothing"):
        src.region(0, slice(0, 10), slice(-20, 0))
    with pytest.raises(SourceError, match="step 1"):
        src.region(0, slice(0, 10, 2), slice(0, 10))
    with pytest.raises(SourceError, match="max_values must be at least 1"):
        src.sample_values(0)
    src.close()
    with pytest.raises(SourceError, match="has been closed"):
        src.plane(0)


# ---- OME-Zarr and pyramids ----


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_metadata_axes_and_levels(tmp_path, zarr_format):
    a = np.random.default_rng(7).integers(0, 1000, (2, 64, 48)).astype(np.uint16)  # c y x
    coarse = (a[:, ::2, ::2] + 5000).astype(np.uint16)  # distinguishable from level 0
    path = _ome_zarr(str(tmp_path / "img.ome.zarr"), [a, coarse], "cyx", zarr_format)
    # without metadata a (2, 64, 48) array would be read as "zyx"; the OME axes win
    with pytest.raises(SourceError, match=re.escape("has 2 channels; choose one with channel=0..1")):
        open_image(path)
    src = open_image(path, channel=1)
    assert (src.axes, src.plane_hw, len(src.levels)) == ("yx", (64, 48), 2)
    np.testing.assert_array_equal(src.plane(), a[1])
    np.testing.assert_array_equal(src.region((), slice(10, 20), slice(40, 60)), a[1, 10:20, 40:48])
    values = src.sample_values()
    np.testing.assert_array_equal(np.sort(values), np.sort(coarse[1].ravel()))  # the coarse level, all of it
    assert values.min() >= 5000
    # the zarr group object works as well as the path, and explicit axes override the metadata
    src = open_image(zarr.open_group(path, mode="r"), axes="zyx")
    np.testing.assert_array_equal(src.plane(1), a[1])


def test_ome_zarr_errors(tmp_path):
    group = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3)
    group.create_array("raw", data=np.zeros((8, 8), np.uint8))
    with pytest.raises(
        SourceError,
        match=r"no OME-Zarr 'multiscales' metadata; open one of its arrays instead \(it holds \['raw'\]\)",
    ):
        open_image(tmp_path / "plain.zarr")
    np.testing.assert_array_equal(open_image(tmp_path / "plain.zarr" / "raw").plane(), np.zeros((8, 8)))
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"datasets": [{"path": "0"}]}]}
    with pytest.raises(SourceError, match=r"names level '0' but .* has no such array"):
        open_image(tmp_path / "plain.zarr")
    path = _ome_zarr(str(tmp_path / "odd.ome.zarr"), [np.zeros((3, 8, 8), np.uint8)], "qyx", 3)
    with pytest.raises(SourceError, match=r"metadata axes '\?yx' include axes other than"):
        open_image(path)
    assert open_image(path, axes="zyx").frame_shape == (3,)


def test_ome_tiff_pyramid_levels(tmp_path):
    with open_image(_make("ome-tiff-pyramid", tmp_path)) as src:
        assert [tuple(lv.shape) for lv in src.levels] == [(5, 70, 90), (5, 35, 45)]
        assert src.identity.startswith(f"tiff:{(tmp_path / 'image.ome.tif').resolve()}|size=")
        np.testing.assert_array_equal(np.sort(src.sample_values()), np.sort(VOLUME[:, ::2, ::2].ravel()))


def test_tiff_metadata_axes(tmp_path):
    a = np.random.default_rng(8).integers(0, 1000, (3, 4, 2, 20, 30)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", a, imagej=True, metadata={"axes": "TZCYX"})
    with pytest.raises(SourceError, match="has 2 channels"):
        open_image(tmp_path / "ij.tif")
    with open_image(tmp_path / "ij.tif", channel=1) as src:
        assert (src.axes, src.frame_shape) == ("tzyx", (3, 4))
        np.testing.assert_array_equal(src.plane((2, 1)), a[2, 1, 1])
    rgb = np.random.default_rng(9).integers(0, 255, (4, 20, 30, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.ome.tif", rgb, photometric="rgb", metadata={"axes": "ZYXS"})
    with open_image(tmp_path / "rgb.ome.tif") as src:
        assert (src.axes, src.rgb) == ("zyx", True)
        np.testing.assert_array_equal(src.plane(3), rgb[3])


def test_list_of_levels_like_napari_multiscale():
    levels = [VOLUME, VOLUME[:, ::2, ::2], VOLUME[:, ::4, ::4]]
    src = open_image(levels)
    assert len(src.levels) == 3
    np.testing.assert_array_equal(src.plane(1), VOLUME[1])
    # the first coarser level that fits max_values is read whole
    np.testing.assert_array_equal(np.sort(src.sample_values(5 * 35 * 45)), np.sort(levels[1].ravel()))
    np.testing.assert_array_equal(np.sort(src.sample_values(5 * 35 * 45 - 1)), np.sort(levels[2].ravel()))


# ---- reading only what is needed ----


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_reads_only_the_chunks_it_needs(zarr_format):
    store = CountingStore()
    z = zarr.create_array(
        store, shape=(4, 128, 96), chunks=(1, 32, 32), dtype=np.uint16, zarr_format=zarr_format
    )
    z[:] = np.arange(z.size, dtype=np.uint16).reshape(z.shape)
    src = open_image(z)
    sep = "." if zarr_format == 2 else "/"
    prefix = "" if zarr_format == 2 else "c/"

    def chunks_read():
        keys = {k for k in store.keys_read if k.startswith(prefix) and k[len(prefix)].isdigit()}
        store.keys_read.clear()
        return keys

    chunks_read()
    src.plane(2)
    assert chunks_read() == {f"{prefix}2{sep}{i}{sep}{j}" for i in range(4) for j in range(3)}
    src.region(3, slice(40, 70), slice(0, 10))
    assert chunks_read() == {f"{prefix}3{sep}1{sep}0", f"{prefix}3{sep}2{sep}0"}


def test_channel_view_reads_only_its_chunks():
    store = CountingStore()
    z = zarr.create_array(store, shape=(3, 4, 64, 64), chunks=(1, 1, 32, 32), dtype=np.uint8)  # c z y x
    z[:] = 7
    src = open_image(z, axes="czyx", channel=1)
    store.keys_read.clear()
    src.region(2, slice(0, 10), slice(40, 64))
    assert [k for k in store.keys_read if k.startswith("c/")] == ["c/1/2/0/1"]


class CountingArray:
    """A lazy array-like (as dask sees h5py or a custom reader) recording every read."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.ndim, self.reads = a, a.shape, a.dtype, a.ndim, []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.a[key]


def test_dask_reads_only_the_chunks_it_needs():
    backing = CountingArray(VOLUME)
    src = open_image(_dask().from_array(backing, chunks=(1, 32, 32)))
    backing.reads.clear()
    np.testing.assert_array_equal(src.plane(1), VOLUME[1])
    assert len(backing.reads) == 3 * 3  # a 70 x 90 plane in 32 x 32 chunks
    assert {key[0] for key in backing.reads} == {1}  # dask fuses the frame index into the read
    backing.reads.clear()
    np.testing.assert_array_equal(src.region(4, slice(0, 20), slice(70, 90)), VOLUME[4, :20, 70:])
    assert backing.reads == [(4, slice(0, 20), slice(70, 90))]


def test_array_like_reads_only_the_window():
    backing = CountingArray(VOLUME)
    src = open_image(backing)
    backing.reads.clear()
    np.testing.assert_array_equal(src.region(2, slice(3, 9), slice(10, 20)), VOLUME[2, 3:9, 10:20])
    assert backing.reads == [(2, slice(3, 9), slice(10, 20))]


def test_tiff_reads_only_the_tiles_it_needs(tmp_path):
    with open_image(_make("tiff-tiled-zlib-bigtiff", tmp_path)) as src:
        store = src.levels[0].store
        keys, get = [], store.get

        async def counting_get(key, *args, **kwargs):
            keys.append(key)
            return await get(key, *args, **kwargs)

        store.get = counting_get
        src.region(1, slice(40, 70), slice(0, 10))
        assert sorted(keys) == ["1.1.0", "1.2.0"]
        keys.clear()
        src.plane(2)
        assert sorted(keys) == sorted(f"2.{i}.{j}" for i in range(3) for j in range(3))


# ---- sample values ----


def test_sample_values_covers_all_slices_deterministically():
    vol = np.broadcast_to(np.arange(101, dtype=np.float32)[:, None, None], (101, 64, 64))  # value = slice
    src = open_image(_dask().from_array(vol, chunks=(1, 64, 64)))
    values = src.sample_values(max_values=10_000, seed=3)
    assert values.dtype == np.float32 and 0 < len(values) <= 10_000
    present = set(np.unique(values).tolist())
    assert {0.0, 50.0, 100.0} <= present and len(present) >= 30
    np.testing.assert_array_equal(values, src.sample_values(max_values=10_000, seed=3))


def test_sample_values_spreads_windows_over_a_big_plane():
    rows, cols = np.meshgrid(np.arange(800), np.arange(600), indexing="ij")
    quadrant = (rows // 400) * 2 + cols // 300  # 0..3
    image = (quadrant * 1000 + (rows % 400)).astype(np.uint16)
    src = open_image(image)
    values = src.sample_values(max_values=5_000, seed=0)
    assert 0 < len(values) <= 5_000
    assert set(np.unique(values // 1000).tolist()) == {0, 1, 2, 3}
    np.testing.assert_array_equal(values, src.sample_values(max_values=5_000, seed=0))
    assert not np.array_equal(values, src.sample_values(max_values=5_000, seed=1))
    assert len(src.sample_values(max_values=3)) <= 3


def test_sample_values_reads_small_data_whole():
    src = open_image(VOLUME)
    np.testing.assert_array_equal(np.sort(src.sample_values()), np.sort(VOLUME.ravel()))
    rgb = np.random.default_rng(10).integers(0, 255, (20, 30, 4)).astype(np.uint8)
    np.testing.assert_array_equal(np.sort(open_image(rgb).sample_values()), np.sort(rgb[..., :3].ravel()))


# ---- identity ----


def test_identity_of_arrays():
    a = VOLUME.copy()
    ident = open_image(a).identity
    assert open_image(a.copy()).identity == ident
    assert open_image(a, axes="tyx").identity != ident  # a different view of the same bytes
    a[2, 3, 4] += 1
    assert open_image(a).identity != ident
    lazy = open_image(_dask().from_array(VOLUME, chunks=(1, 32, 32))).identity
    assert open_image(_dask().from_array(VOLUME.copy(), chunks=(1, 32, 32))).identity == lazy
    assert open_image(_dask().from_array(VOLUME + 1, chunks=(1, 32, 32))).identity != lazy
    c = np.zeros((2, 20, 30), np.uint8)
    assert open_image(c, axes="cyx", channel=0).identity != open_image(c, axes="cyx", channel=1).identity


def test_identity_of_files(tmp_path):
    path = _make("tiff-tiled-zlib-bigtiff", tmp_path)
    with open_image(path) as src:
        ident = src.identity
        assert ident.startswith(f"tiff:{path.resolve()}|size={path.stat().st_size}|mtime_ns=")
    with open_image(str(path)) as src:
        assert src.identity == ident
    mtime = path.stat().st_mtime_ns
    tifffile.imwrite(
        path, VOLUME + 1, tile=(32, 32), compression="zlib", bigtiff=True, photometric="minisblack"
    )
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))  # coarse file-system clocks must not hide the rewrite
    with open_image(path) as src:
        assert src.identity != ident

    zpath = _make("zarr3-path", tmp_path)
    ident = open_image(zpath).identity
    assert ident.startswith(f"zarr:{(tmp_path / 'image.zarr').resolve()}|")
    assert open_image(zpath).identity == ident
    zarr.open_array(zpath, mode="r+")[0] = 1  # chunk rewrite: metadata untouched, the content sample differs
    assert open_image(zpath).identity != ident


def test_image_source_constructor_checks():
    with pytest.raises(SourceError, match="axes yx, zyx, tyx or tzyx"):
        ImageSource([VOLUME], "zxy", rgb=False, identity="x")
    with pytest.raises(SourceError, match="does not fit axes"):
        ImageSource([VOLUME], "yx", rgb=False, identity="x")
    assert "levels=1" in repr(ImageSource([VOLUME], "zyx", rgb=False, identity="x"))


def test_open_image_passes_an_open_source_through():
    src = open_image(VOLUME)
    assert open_image(src) is src
    with pytest.raises(SourceError, match="already open"):
        open_image(src, channel=0)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files through /proc (Linux)")
def test_close_releases_the_tiff_file(tmp_path):
    path = _make("tiff-tiled-zlib-bigtiff", tmp_path)

    def handles():
        fds = os.listdir("/proc/self/fd")
        return sum(os.path.realpath(f"/proc/self/fd/{fd}") == str(path.resolve()) for fd in fds)

    with open_image(path) as src:
        src.plane(0)
        assert handles() == 1
    assert handles() == 0
    with pytest.raises(SourceError, match="has been closed"):
        src.region(0, slice(0, 4), slice(0, 4))
    src.close()  # twice is fine
