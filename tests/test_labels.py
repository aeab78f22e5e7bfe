"""LabelWriter, create_labels and seed_objects: exact expected planes built by hand."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from zarr.storage import MemoryStore, WrapperStore

from napari_sam2.engine import labels as labels_mod
from napari_sam2.engine.labels import (
    LabelError,
    LabelWriter,
    MaskPatch,
    PlaneEdit,
    create_labels,
    seed_objects,
)

A = np.array


class CountingStore(WrapperStore):
    """Records the key of every write."""

    def __init__(self, store):
        super().__init__(store)
        self.writes: list[str] = []

    async def set(self, key, value):
        self.writes.append(key)
        await super().set(key, value)


def test_overlap_goes_to_highest_logit_and_ties_to_smaller_id():
    labels = np.zeros((2, 3, 4), np.uint16)
    l1 = A([[3, 3, 1, -1], [3, 3, 1, -1], [-1, -1, -1, -1]], np.float32)
    l2 = A([[-1, 4, 1, 2], [-1, 2, 1, 2], [-1, -1, -1, 5]], np.float32)
    edit = LabelWriter(labels).write((1,), {2: l2, 1: l1})  # dict order must not matter
    expected = A([[1, 2, 1, 2], [1, 1, 1, 2], [0, 0, 0, 2]])
    np.testing.assert_array_equal(labels[1], expected)
    np.testing.assert_array_equal(labels[0], 0)
    assert edit.changed == 9 and edit.index == (1,)
    np.testing.assert_array_equal(edit.after, expected)
    np.testing.assert_array_equal(edit.before, 0)


def test_nan_logits_count_as_outside():
    labels = np.zeros((2, 2), np.uint8)
    LabelWriter(labels).write((), {1: A([[np.nan, 1.0], [np.nan, -1.0]]), 2: A([[0.5, np.nan], [-1, -1.0]])})
    np.testing.assert_array_equal(labels, [[2, 1], [0, 0]])


def test_region_is_replaced_not_accumulated():
    labels = A([[1, 1, 0], [1, 2, 2], [0, 0, 0]], np.uint8)
    new1 = A([[-1, -1, -1], [-1, -1, -1], [1, 1, -1]], np.float32)
    new2 = A([[-1, 1, -1], [-1, -1, -1], [-1, -1, 1]], np.float32)
    # id 1's old voxel (0, 1) is taken by id 2; its other old voxels are cleared; id 2 moves too
    LabelWriter(labels).write((), {1: new1, 2: new2})
    np.testing.assert_array_equal(labels, [[0, 2, 0], [0, 0, 0], [1, 1, 2]])


@pytest.mark.parametrize(
    ("overwrite", "expected"),
    [(False, [[7, 7, 1], [0, 5, 3]]), (True, [[1, 7, 1], [0, 1, 1]])],
)
def test_other_objects_kept_unless_overwrite(overwrite, expected):
    labels = A([[7, 7, 0], [0, 5, 3]], np.int32)
    mask = A([[True, False, True], [False, True, True]])
    LabelWriter(labels, overwrite=overwrite).write((), {1: mask})
    np.testing.assert_array_equal(labels, expected)


def test_bool_masks_and_4d_index():
    labels = np.zeros((2, 3, 2, 3), np.uint32)
    mask = A([[True, False, False], [True, True, False]])
    LabelWriter(labels).write((1, 2), {4: mask})
    expected = np.zeros_like(labels)
    expected[1, 2] = [[4, 0, 0], [4, 4, 0]]
    np.testing.assert_array_equal(labels, expected)


def test_nothing_written_when_nothing_changes(monkeypatch):
    labels = A([[3, 0], [0, 0]], np.uint8)
    calls = []
    monkeypatch.setattr(LabelWriter, "_assign", lambda self, index, *args: calls.append(index))
    writer = LabelWriter(labels)
    assert writer.write((), {3: A([[True, False], [False, False]])}).changed == 0
    assert writer.write((), {}).changed == 0
    assert calls == []


def test_undo_restores_exactly_and_redo():
    before = A([[5, 1, 0], [1, 1, 0]], np.uint16)
    labels = before.copy()
    writer = LabelWriter(labels)
    edit = writer.write((), {1: A([[0, 0, 2], [0, -1, 2]], np.float32)})
    np.testing.assert_array_equal(labels, [[5, 0, 1], [0, 0, 1]])
    assert edit.changed == 5
    with pytest.raises(ValueError, match="read-only"):
        edit.before[0, 0] = 9  # the record cannot be altered by accident
    inverse = edit.undo(writer)
    np.testing.assert_array_equal(labels, before)
    assert isinstance(inverse, PlaneEdit) and inverse.changed == 5
    writer.revert(inverse)  # redo
    np.testing.assert_array_equal(labels, [[5, 0, 1], [0, 0, 1]])


def test_undo_refuses_after_newer_edit():
    labels = np.zeros((2, 2), np.uint8)
    writer = LabelWriter(labels)
    first = writer.write((), {1: A([[True, False], [False, False]])})
    second = LabelWriter(labels, overwrite=True).write((), {2: A([[True, True], [False, False]])})
    with pytest.raises(LabelError, match=r"changed since.*lose newer work"):
        first.undo(writer)
    np.testing.assert_array_equal(labels, [[2, 2], [0, 0]])
    second.undo(writer)
    first.undo(writer)
    np.testing.assert_array_equal(labels, 0)
    third = writer.write((), {1: A([[True, True], [False, False]])})
    labels[0, 1] = 9  # the user paints in the edited box after the edit
    with pytest.raises(LabelError, match="changed since"):
        writer.revert(third)


def test_edit_records_only_the_changed_box_and_undoes_it_out_of_order():
    labels = np.zeros((1000, 1200), np.uint16)
    labels[900:910, 1100:1110] = 7  # another object, far away
    writer = LabelWriter(labels)
    patch = MaskPatch(np.where(np.arange(36).reshape(6, 6) % 7 == 0, 2.0, -2.0), (500, 600))
    edit = writer.write((), {3: patch})  # the diagonal of the 6 x 6 window
    assert edit.changed == 6 and edit.box == (500, 600, 506, 606) and edit.origin == (500, 600)
    np.testing.assert_array_equal(edit.after, np.where(np.eye(6, dtype=bool), 3, 0))
    assert edit.nbytes == 2 * 36 * 2  # two uint16 boxes, nothing plane-sized
    moved = writer.write((), {3: MaskPatch(np.ones((2, 3), np.float32), (10, 20))})
    # the object moved: its old voxels are cleared, the edit spans old and new places
    assert moved.changed == 6 + 6 and moved.box == (10, 20, 506, 606)
    assert np.count_nonzero(labels == 3) == 6 and (labels[10:12, 20:23] == 3).all()
    other = writer.write((), {4: MaskPatch(np.ones((1, 1), np.float32), (0, 0))})
    other_edit_box = other.box
    moved.undo(writer)  # not the last edit, but the boxes do not overlap: nothing newer is lost
    assert other_edit_box == (0, 0, 1, 1) and labels[0, 0] == 4
    np.testing.assert_array_equal(labels[500:506, 600:606], np.where(np.eye(6, dtype=bool), 3, 0))
    assert np.count_nonzero(labels == 3) == 6 and (labels[900:910, 1100:1110] == 7).all()
    assert writer.write((), {9: MaskPatch.empty()}).changed == 0  # absent and not there: no edit


def test_zarr_write_touches_only_that_planes_chunks():
    store = CountingStore(MemoryStore())
    labels = zarr.create_array(store=store, shape=(4, 8, 10), chunks=(1, 4, 5), dtype="uint16", fill_value=0)
    store.writes.clear()
    mask = np.zeros((8, 10), bool)
    mask[1:7, 2:9] = True
    LabelWriter(labels).write((2,), {3: mask})
    assert sorted(store.writes) == ["c/2/0/0", "c/2/0/1", "c/2/1/0", "c/2/1/1"]
    expected = np.zeros((4, 8, 10), np.uint16)
    expected[2][mask] = 3
    np.testing.assert_array_equal(labels[:], expected)
    store.writes.clear()
    LabelWriter(labels).write((2,), {3: mask})  # no change: no write at all
    assert store.writes == []


def test_zarr_on_disk_round_trip(tmp_path):
    path = tmp_path / "labels.zarr"
    labels = create_labels((3, 4, 5), path=path, dtype="uint16")
    assert isinstance(labels, zarr.Array) and labels.chunks == (1, 4, 5) and labels.dtype == np.uint16
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True
    edit = LabelWriter(labels).write((1,), {9: mask})
    chunk_files = sorted(p.relative_to(path).as_posix() for p in (path / "c").rglob("*") if p.is_file())
    assert chunk_files == ["c/1/0/0"]

    reopened = zarr.open_array(path, mode="r+")
    expected = np.zeros((3, 4, 5), np.uint16)
    expected[1][mask] = 9
    np.testing.assert_array_equal(reopened[:], expected)
    np.testing.assert_array_equal(seed_objects(reopened, (1,))[9], mask)
    writer = LabelWriter(reopened)
    edit.undo(writer)
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[:], 0)


def test_error_during_edit_leaves_zarr_untouched(monkeypatch):
    labels = zarr.create_array(
        store=MemoryStore(), shape=(2, 3, 3), chunks=(1, 3, 3), dtype="uint8", fill_value=0
    )
    labels[0] = A([[1, 1, 0], [0, 2, 0], [0, 0, 0]])
    before = labels[:]
    writer = LabelWriter(labels)
    new = {1: np.ones((3, 3), bool)}

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(LabelWriter, "_assign", boom)
    with pytest.raises(RuntimeError, match="boom"):
        writer.write((0,), new)
    np.testing.assert_array_equal(labels[:], before)
    monkeypatch.undo()
    monkeypatch.setattr(labels_mod.np, "isin", boom)  # fails in the middle of the edit
    with pytest.raises(RuntimeError, match="boom"):
        writer.write((0,), new)
    np.testing.assert_array_equal(labels[:], before)


@pytest.mark.parametrize(
    ("obj_id", "match"),
    [
        (300, r"300 does not fit labels of dtype uint8 \(ids must be 1..255\)"),
        (0, r"ids must be 1..255"),
        (-1, r"ids must be 1..255"),
        (True, "must be positive ints"),
        ("1", "must be positive ints"),
        (1.0, "must be positive ints"),
    ],
)
def test_bad_ids(obj_id, match):
    labels = np.zeros((2, 2), np.uint8)
    with pytest.raises(LabelError, match=match):
        LabelWriter(labels).write((), {obj_id: np.ones((2, 2), bool)})
    np.testing.assert_array_equal(labels, 0)


def test_bad_masks():
    writer = LabelWriter(np.zeros((3, 2, 2), np.uint8))
    with pytest.raises(LabelError, match=r"object 1 has shape \(2, 3\) but the labels plane is \(2, 2\)"):
        writer.write((0,), {1: np.ones((2, 3))})
    with pytest.raises(LabelError, match="real logits or bools; got dtype complex"):
        writer.write((0,), {1: np.ones((2, 2), complex)})


@pytest.mark.parametrize("index", [(), (0, 0), (3,), (-1,), (1.5,), (True,), 1])
def test_bad_index(index):
    labels = np.zeros((3, 2, 2), np.uint8)
    with pytest.raises(LabelError, match="index"):
        LabelWriter(labels).write(index, {1: np.ones((2, 2), bool)})
    with pytest.raises(LabelError, match="index"):
        seed_objects(labels, index)


def test_bad_labels(tmp_path):
    with pytest.raises(LabelError, match=r"integer dtype.*got float32.*astype\('uint32'\)"):
        LabelWriter(np.zeros((2, 2), np.float32))
    with pytest.raises(LabelError, match=r"integer dtype.*got bool"):
        LabelWriter(np.zeros((2, 2), bool))
    with pytest.raises(LabelError, match="at least 2 dimensions"):
        LabelWriter(np.zeros(4, np.uint8))
    with pytest.raises(LabelError, match=r"numpy array or a zarr.Array; got list"):
        LabelWriter([[0, 0]])
    frozen = np.zeros((2, 2), np.uint8)
    frozen.flags.writeable = False
    with pytest.raises(LabelError, match=r"read-only \(writeable=False\).*copy"):
        LabelWriter(frozen)
    create_labels((2, 2), path=tmp_path / "l.zarr")
    with pytest.raises(LabelError, match=r"read-only.*mode='r\+'"):
        LabelWriter(zarr.open_array(tmp_path / "l.zarr", mode="r"))


def test_create_labels(tmp_path):
    labels = create_labels((2, 3, 4))
    assert isinstance(labels, np.ndarray) and labels.dtype == np.uint32 and labels.shape == (2, 3, 4)
    assert not labels.any()
    custom = create_labels((2, 6, 6), path=tmp_path / "c.zarr", chunks=(1, 3, 3), dtype=np.int16)
    assert custom.chunks == (1, 3, 3) and custom.dtype == np.int16 and not custom[:].any()
    with pytest.raises(LabelError, match="integer dtype"):
        create_labels((2, 2), dtype="float32")
    for shape in [(4,), (2, 0), (2.0, 2)]:
        with pytest.raises(LabelError, match="positive sizes"):
            create_labels(shape)
    with pytest.raises(LabelError, match="one entry per axis"):
        create_labels((2, 2), path=tmp_path / "d.zarr", chunks=(1, 2, 2))


def test_create_labels_never_overwrites(tmp_path):
    path = tmp_path / "labels.zarr"
    first = create_labels((2, 2), path=path, dtype="uint8")
    first[:] = 7
    with pytest.raises(LabelError, match=r"already exists.*never overwritten"):
        create_labels((2, 2), path=path)
    (tmp_path / "file.txt").write_text("keep me")
    with pytest.raises(LabelError, match="already exists"):
        create_labels((2, 2), path=tmp_path / "file.txt")
    assert (tmp_path / "file.txt").read_text() == "keep me"
    np.testing.assert_array_equal(zarr.open_array(path, mode="r")[:], 7)


def test_seed_objects():
    labels = np.zeros((2, 2, 3), np.int16)
    labels[1] = [[3, 3, 0], [5, -2, 3]]
    seeds = seed_objects(labels, (1,))
    assert sorted(seeds) == [3, 5] and all(isinstance(k, int) for k in seeds)
    np.testing.assert_array_equal(seeds[3], [[True, True, False], [False, False, True]])
    np.testing.assert_array_equal(seeds[5], [[False, False, False], [True, False, False]])
    assert seeds[3].dtype == bool
    assert seed_objects(labels, (0,)) == {}
