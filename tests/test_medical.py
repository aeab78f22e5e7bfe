"""Medical volumes (NIfTI, NRRD, DICOM series): geometry after reading, labels written back in the
input's geometry, intensity presets, the napari reader and writer, and bad inputs through the API and
the command line. Real volumes come from the shared data folder (tests/helpers/shared_data.py);
DICOM series are written here with pydicom (the shared data has none)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
nrrd = pytest.importorskip("nrrd")
pydicom = pytest.importorskip("pydicom")

from helpers import shared_file, write_series  # noqa: E402
from napari_sam2 import Prompt, propagate, segment  # noqa: E402
from napari_sam2.cli import EXIT_FAILURE, main  # noqa: E402
from napari_sam2.engine.intensity import robust_window  # noqa: E402
from napari_sam2.engine.medical import (  # noqa: E402
    MedicalError,
    open_medical,
    read_medical,
    write_labels_like,
)
from napari_sam2.engine.provenance import ProvenanceError, read_labels, read_record  # noqa: E402
from napari_sam2.engine.sources import SourceError, open_image  # noqa: E402

CT = ("ct-mr-totalsegmentator", "example_ct_sm.nii.gz")
CT_SEG = ("ct-mr-totalsegmentator", "example_seg.nii.gz")
MR = ("ct-mr-totalsegmentator", "example_mr_sm.nii.gz")
BRAIN = ("mri-tumour-pyradiomics", "brain1_image.nrrd")
BRAIN_SEG = ("mri-tumour-pyradiomics", "brain1_label.nrrd")


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def world_points(affine: np.ndarray, shape: tuple[int, ...], n: int = 40, seed: int = 0) -> np.ndarray:
    """RAS positions (n, 4) of random voxel centres of a file with ``affine`` and ``shape``."""
    rng = np.random.default_rng(seed)
    ijk = np.stack([rng.integers(0, s, n) for s in shape[:3]] + [np.ones(n, int)], axis=1)
    return ijk @ np.asarray(affine).T


def engine_index(geometry, ras: np.ndarray) -> tuple[int, ...]:
    zyx = np.linalg.solve(geometry.engine_affine, ras)[:3]
    assert np.allclose(zyx, np.rint(zyx), atol=1e-4)  # voxel centres map to voxel centres
    return tuple(int(v) for v in np.rint(zyx))


# ---------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(
    ("parts", "codes", "flip"),
    [(CT, "RAS", (False, True, True)), (MR, "LPS", (False, False, False))],
)
def test_nifti_reads_in_zyx_with_the_values_nibabel_gives_at_the_same_world_positions(parts, codes, flip):
    path = shared_file(*parts)
    img = nib.load(path)
    truth = np.asarray(img.dataobj)
    vol, geometry = read_medical(path)
    assert nib.aff2axcodes(img.affine) == tuple(codes)
    assert vol.shape == truth.shape[::-1] and vol.dtype == truth.dtype
    assert geometry.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert geometry.orientation == "SPL" and geometry.file_orientation == codes
    assert geometry.flip == flip and geometry.perm == (2, 1, 0)
    for ras in world_points(img.affine, truth.shape):
        ijk = tuple(int(v) for v in np.rint(np.linalg.solve(img.affine, ras)[:3]))
        assert vol[engine_index(geometry, ras)] == truth[ijk]
    # the first voxel's centre in (S, P, L) is napari's translate
    r, a, s = geometry.engine_affine[:3, 3]
    assert geometry.origin == pytest.approx((s, -a, -r))


def test_nrrd_brain_keeps_its_anisotropic_spacing_and_lps_positions():
    path = shared_file(*BRAIN)
    truth, header = nrrd.read(str(path))
    vol, geometry = read_medical(path)
    assert vol.shape == (25, 256, 256)
    assert geometry.spacing == pytest.approx((6.5, 0.78125, 0.78125))
    assert geometry.orientation == "SPL"
    dirs, origin = np.asarray(header["space directions"]), np.asarray(header["space origin"])
    rng = np.random.default_rng(1)
    for _ in range(40):
        ijk = np.array([rng.integers(0, s) for s in truth.shape])
        lps = origin + ijk @ dirs  # NRRD: LPS millimetres
        ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
        assert vol[engine_index(geometry, ras)] == truth[tuple(ijk)]


def test_open_image_is_lazy_and_reads_planes_in_engine_order():
    path = shared_file(*CT)
    with open_image(path) as source:
        assert source.axes == "zyx" and source.frame_shape == (30,) and source.plane_hw == (101, 122)
        assert source.medical.preset == "ct:soft_tissue"
        full, _ = read_medical(path)
        np.testing.assert_array_equal(source.plane(7), full[7])
        np.testing.assert_array_equal(source.region(12, slice(10, 40), slice(50, 90)), full[12, 10:40, 50:90])
        # a strided, reversed read through the view equals numpy's
        view, _ = open_medical(path)
        np.testing.assert_array_equal(view[::-3, 5:60:7, ::-1], full[::-3, 5:60:7, ::-1])


# ---------------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_labels_round_trip_with_the_identical_affine(tmp_path, suffix):
    seg_path = shared_file(*CT_SEG)
    original = nib.load(seg_path)
    labels, geometry = read_medical(seg_path)
    out = write_labels_like(tmp_path / f"seg{suffix}", labels, geometry)
    back = nib.load(out)
    np.testing.assert_array_equal(back.affine, original.affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(original.dataobj))
    assert (
        back.get_data_dtype() == np.uint8 and back.header.get_xyzt_units() == original.header.get_xyzt_units()
    )
    again, g2 = read_medical(out)
    np.testing.assert_array_equal(again, labels)
    assert g2.spacing == geometry.spacing and g2.origin == pytest.approx(geometry.origin)
    with pytest.raises(MedicalError, match="already exists"):
        write_labels_like(out, labels, geometry)


def test_nrrd_labels_round_trip_with_the_identical_header_geometry(tmp_path):
    seg_path = shared_file(*BRAIN_SEG)
    truth, header = nrrd.read(str(seg_path))
    labels, geometry = read_medical(seg_path)
    out = write_labels_like(tmp_path / "tumour.nrrd", labels, geometry)
    data, back = nrrd.read(str(out))
    np.testing.assert_array_equal(data, truth)
    assert back["space"] == header["space"]
    np.testing.assert_allclose(back["space directions"], header["space directions"])
    np.testing.assert_allclose(back["space origin"], header["space origin"])
    assert data.dtype == np.uint8  # ids 0/1 stored small, values unchanged


def test_labels_of_another_shape_or_negative_are_refused(tmp_path):
    _, geometry = read_medical(shared_file(*CT_SEG))
    with pytest.raises(MedicalError, match=r"do not fit the volume's \(30, 101, 122\)"):
        write_labels_like(tmp_path / "x.nii.gz", np.zeros((30, 101, 121), np.uint8), geometry)
    with pytest.raises(MedicalError, match=r"\.nii, \.nii\.gz or \.nrrd"):
        write_labels_like(tmp_path / "x.mha", np.zeros(geometry.shape, np.uint8), geometry)
    assert not list(tmp_path.iterdir())


def test_api_propagate_writes_nifti_labels_with_the_input_affine_and_records_the_geometry(
    tmp_path, tiny_ckpt
):
    path = shared_file(*CT)
    before = sha(path)
    out = tmp_path / "liver.nii.gz"
    result = propagate(path, {(24, 1): Prompt(box=(19, 17, 73, 77))}, model=tiny_ckpt, out=out)
    img = nib.load(out)
    np.testing.assert_array_equal(img.affine, nib.load(path).affine)
    assert img.shape == (122, 101, 30)
    np.testing.assert_array_equal(np.asarray(img.dataobj), result.geometry.to_file_order(result.labels))
    assert np.count_nonzero(result.labels[24]) > 0  # the prompted plane holds the object
    record = read_record(out)  # from the sidecar
    medical = record.image["medical"]
    assert medical["spacing_mm"] == [3.0, 3.0, 3.0] and medical["orientation"] == "SPL"
    assert medical["file_orientation"] == "RAS" and medical["preset"] == "ct:soft_tissue"
    assert medical["modality"] == "CT" and medical["modality_from"] == "values"
    assert record.window == [-160.0, 240.0]  # soft tissue: level 40, width 400 HU
    assert record.options["window_asked"] is None
    np.testing.assert_array_equal(read_labels(out), result.labels)
    assert sha(path) == before


def test_nrrd_input_segment_writes_nrrd_labels_in_its_space(tmp_path, tiny_ckpt):
    path = shared_file(*BRAIN)
    out = tmp_path / "tumour.nrrd"
    result = segment(path, {(12, 1): Prompt(box=(100, 100, 140, 150))}, model=tiny_ckpt, out=out)
    data, header = nrrd.read(str(out))
    _, original = nrrd.read(str(path))
    assert data.shape == (256, 256, 25)
    np.testing.assert_allclose(header["space directions"], original["space directions"])
    np.testing.assert_allclose(header["space origin"], original["space origin"])
    np.testing.assert_array_equal(data, result.geometry.to_file_order(result.labels))
    medical = read_record(out).image["medical"]
    assert medical["spacing_mm"] == pytest.approx([6.5, 0.78125, 0.78125]) and medical["preset"] == "auto"


def test_nifti_output_for_a_tiff_input_is_refused_before_anything_is_written(tmp_path, tiny_ckpt, vol_file):
    with pytest.raises(ProvenanceError, match=r"this image has none, so write \.tif or \.zarr"):
        segment(
            vol_file,
            {(1, 1): Prompt(points=[[30, 35]], labels=[1])},
            model=tiny_ckpt,
            out=tmp_path / "l.nii.gz",
        )
    assert not (tmp_path / "l.nii.gz").exists()


# ---------------------------------------------------------------------------------------------- presets
def test_ct_gets_the_soft_tissue_preset_and_mr_robust_percentiles():
    _, ct = open_medical(shared_file(*CT))
    _, mr = open_medical(shared_file(*MR))
    _, brain = open_medical(shared_file(*BRAIN))
    assert (ct.modality, ct.modality_from, ct.preset) == ("CT", "values", "ct:soft_tissue")
    assert (mr.modality, mr.preset) == (None, "auto")
    assert (brain.modality, brain.preset) == (None, "auto")


def test_mr_propagation_uses_the_robust_window_of_the_volume(tmp_path, tiny_ckpt):
    path = shared_file(*MR)
    result = propagate(path, {(10, 1): Prompt(box=(30, 30, 60, 70))}, model=tiny_ckpt)
    with open_image(path) as source:
        expected = robust_window(source.sample_values()).as_tuple()
    assert tuple(result.record.window) == pytest.approx(expected)
    assert result.record.window[0] < 0 < 600 < result.record.window[1]  # MR counts, not HU


def test_an_explicit_window_wins_over_the_ct_preset(tiny_ckpt):
    result = segment(
        shared_file(*CT), {(5, 1): Prompt(points=[[50, 60]], labels=[1])}, model=tiny_ckpt, window="ct:lung"
    )
    assert result.record.window == [-1350.0, 150.0]


# ---------------------------------------------------------------------------------------------- 4D
def test_4d_nifti_is_t_z_y_x_and_one_volume_can_be_picked(tmp_path):
    img = nib.load(shared_file(*CT))
    data = np.asarray(img.dataobj)
    four = np.stack([data, data + 100], axis=-1)
    path = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(four, img.affine), path)
    with open_image(path) as source:
        assert source.axes == "tzyx" and source.frame_shape == (2, 30)
    first, _ = read_medical(path)
    second, geometry = read_medical(path, volume=1)
    assert first.shape == (2, 30, 101, 122) and second.shape == (30, 101, 122)
    np.testing.assert_array_equal(second, first[0] + 100)
    assert geometry.volume == 1 and geometry.spacing == pytest.approx((3.0, 3.0, 3.0))
    with pytest.raises(MedicalError, match=r"volume=2 is out of range: two.nii.gz holds 2 volumes \(0..1\)"):
        read_medical(path, volume=2)


# ---------------------------------------------------------------------------------------------- DICOM
@pytest.fixture
def phantom():
    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 1000, (6, 20, 24)).astype(np.int16)
    vol[:, 5:15, 6:18] = 60  # soft tissue
    return vol


def test_dicom_series_is_sorted_by_position_rescaled_to_hu_and_placed_in_lps(tmp_path, phantom):
    folder = write_series(tmp_path / "ct", phantom)
    vol, geometry = read_medical(folder)
    np.testing.assert_array_equal(vol, phantom)
    assert vol.dtype == np.int16  # 12 stored bits - 1024 fit int16
    assert geometry.spacing == pytest.approx((2.5, 0.8, 0.7)) and geometry.orientation == "SPL"
    assert geometry.origin == pytest.approx((15.0, -30.0, -40.0))  # (S, P, L) of the first voxel
    assert (geometry.modality, geometry.modality_from, geometry.preset) == ("CT", "header", "ct:soft_tissue")
    with open_image(folder) as source:  # a folder, or the list of its files
        np.testing.assert_array_equal(source.plane(4), phantom[4])
    with open_image(sorted(folder.iterdir())) as source:
        np.testing.assert_array_equal(source.region(2, slice(3, 9), slice(0, 5)), phantom[2, 3:9, 0:5])


def test_dicom_labels_are_written_as_nifti_at_the_same_positions(tmp_path, phantom):
    folder = write_series(tmp_path / "ct", phantom)
    labels = (phantom == 60).astype(np.uint8)
    _, geometry = read_medical(folder)
    out = write_labels_like(tmp_path / "lab.nii.gz", labels, geometry)
    img = nib.load(out)
    data = np.asarray(img.dataobj)
    assert data.shape == (24, 20, 6) and nib.aff2axcodes(img.affine) == ("L", "P", "S")
    # voxel (z=3, row=7, col=10) lies at LPS (-40 + 10 * 0.7, -30 + 7 * 0.8, 15 + 3 * 2.5)
    ras = np.array([40 - 7.0, 30 - 5.6, 22.5, 1.0])
    ijk = tuple(int(v) for v in np.rint(np.linalg.solve(img.affine, ras)[:3]))
    assert ijk == (10, 7, 3) and data[ijk] == labels[3, 7, 10] == 1
    np.testing.assert_array_equal(read_medical(out)[0], labels)


def test_a_folder_mixing_series_lists_them_and_one_can_be_picked(tmp_path, phantom):
    folder = write_series(tmp_path / "mixed", phantom, uid="1.2.826.0.1.1")
    write_series(tmp_path / "mixed2", phantom[:4] + 5, uid="1.2.826.0.1.2", modality="MR")
    for f in (tmp_path / "mixed2").iterdir():
        shutil.move(f, folder / f"b_{f.name}")
    with pytest.raises(MedicalError) as err:
        read_medical(folder)
    text = str(err.value)
    assert (
        "mixes 2 DICOM series" in text
        and "1.2.826.0.1.1 (CT, 6 files" in text
        and "1.2.826.0.1.2 (MR, 4 files" in text
    )
    assert "series='UID'" in text and "\n" not in text
    vol, geometry = read_medical(folder, series="1.2.826.0.1.2")
    np.testing.assert_array_equal(vol, phantom[:4] + 5)
    assert geometry.series_uid == "1.2.826.0.1.2" and geometry.preset == "auto"


def test_a_missing_slice_is_refused(tmp_path, phantom):
    folder = write_series(tmp_path / "gap", phantom)
    files = sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    files[2].unlink()
    with pytest.raises(MedicalError, match=r"unevenly spaced .* slices are missing"):
        read_medical(folder)


# ---------------------------------------------------------------------------------------------- bad inputs
@pytest.fixture
def truncated(tmp_path):
    data = shared_file(*CT).read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def test_a_truncated_nifti_fails_on_opening_with_a_clear_message(truncated):
    before = sha(truncated)
    with pytest.raises(MedicalError, match=r"could not read cut.nii.gz: the file is truncated or corrupt"):
        open_image(truncated)
    assert sha(truncated) == before


def test_bad_inputs_through_the_api_leave_the_files_unchanged(tmp_path, truncated, phantom, tiny_ckpt):
    mixed = write_series(tmp_path / "mixed", phantom, uid="1.2.3.4")
    write_series(mixed, phantom, uid="1.2.3.5", origin=(0.0, 0.0, 100.0), prefix="other")
    files = [truncated, *sorted(mixed.iterdir())]
    before = {f: sha(f) for f in files}
    out = tmp_path / "out.nii.gz"
    with pytest.raises(MedicalError, match="truncated"):
        propagate(truncated, {(3, 1): Prompt(points=[[5, 5]], labels=[1])}, model=tiny_ckpt, out=out)
    with pytest.raises(MedicalError, match="mixes 2 DICOM series"):
        segment(mixed, {(3, 1): Prompt(points=[[5, 5]], labels=[1])}, model=tiny_ckpt, out=out)
    assert {f: sha(f) for f in files} == before and not out.exists()


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_propagates_a_nifti_and_refuses_bad_inputs_in_one_line(
    capsys, tmp_path, truncated, phantom, tiny_ckpt
):
    ct = shared_file(*CT)
    prompts = tmp_path / "box.json"
    prompts.write_text(json.dumps([{"frame": [24], "obj_id": 1, "box": [19, 17, 73, 77]}]))
    mixed = write_series(tmp_path / "mixed", phantom, uid="1.2.3.4")
    write_series(mixed, phantom, uid="1.2.3.5", origin=(0.0, 0.0, 100.0), prefix="other")
    inputs = [ct, truncated, *sorted(mixed.iterdir())]
    before = {f: sha(f) for f in inputs}
    out = tmp_path / "lab.nii.gz"
    code, text, _ = run_cli(
        capsys,
        "propagate",
        ct,
        "--prompts",
        prompts,
        "--out",
        out,
        "--model",
        tiny_ckpt,
        "-q",
        "--stop-after-absent",
        2,
    )
    assert code == 0 and "wrote" in text
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(ct).affine)
    code, text, _ = run_cli(capsys, "replay", out, "-q")  # the record in the sidecar, the image by path
    assert code == 0 and text.startswith("identical")
    assert read_record(out).image["medical"]["preset"] == "ct:soft_tissue"
    for image, message in ((truncated, "the file is truncated or corrupt"), (mixed, "mixes 2 DICOM series")):
        bad_out = tmp_path / "bad.nii.gz"
        code, _, err = run_cli(
            capsys, "propagate", image, "--prompts", prompts, "--out", bad_out, "--model", tiny_ckpt, "-q"
        )
        assert code == EXIT_FAILURE and message in err
        assert err.count("\n") == 1 and err.startswith("napari-sam2: error: ") and "Traceback" not in err
        assert not bad_out.exists()
    assert {f: sha(f) for f in inputs} == before


def test_a_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(
        SourceError, match=r"needs the optional package nibabel.*pip install 'napari-sam2\[medical\]'"
    ):
        open_image(shared_file(*CT))


# ---------------------------------------------------------------------------------------------- napari
@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def test_napari_opens_a_nifti_with_physical_scale_and_world_positions(viewer):
    path = shared_file(*CT)
    layers = viewer.open(path, plugin="napari-sam2")
    assert len(layers) == 1
    layer = layers[0]
    img = nib.load(path)
    truth = np.asarray(img.dataobj)
    assert layer.data.shape == (30, 101, 122)
    np.testing.assert_allclose(layer.scale, (3.0, 3.0, 3.0))
    assert tuple(layer.contrast_limits) == (-160.0, 240.0)
    assert layer.metadata["napari_sam2_medical"]["preset"] == "ct:soft_tissue"
    for ras in world_points(img.affine, truth.shape, n=20):
        ijk = tuple(int(v) for v in np.rint(np.linalg.solve(img.affine, ras)[:3]))
        world = (ras[2], -ras[1], -ras[0])  # napari's world axes: S, P, L in mm
        index = tuple(int(v) for v in np.rint(layer.world_to_data(world)))
        assert layer.data[index] == truth[ijk]


def test_napari_nrrd_layer_is_anisotropic_and_the_writer_keeps_the_geometry(viewer, tmp_path):
    layer = viewer.open(shared_file(*BRAIN), plugin="napari-sam2")[0]
    np.testing.assert_allclose(layer.scale, (6.5, 0.78125, 0.78125))
    labels_seg, _ = read_medical(shared_file(*BRAIN_SEG))
    labels = viewer.add_labels(
        labels_seg.astype(np.uint32),
        scale=layer.scale,
        translate=layer.translate,
        metadata=dict(layer.metadata),
    )
    saved = labels.save(str(tmp_path / "tumour.nii.gz"), plugin="napari-sam2")
    img = nib.load(saved[0])
    _, geometry = read_medical(shared_file(*BRAIN))
    np.testing.assert_allclose(img.affine, geometry.affine)
    np.testing.assert_array_equal(np.asarray(img.dataobj), nrrd.read(str(shared_file(*BRAIN_SEG)))[0])
    # without the geometry in its metadata, the writer places the voxels by scale and translate
    bare = viewer.add_labels(labels_seg.astype(np.uint8), scale=layer.scale, translate=layer.translate)
    saved = bare.save(str(tmp_path / "bare.nii.gz"), plugin="napari-sam2")
    again, g2 = read_medical(saved[0])
    np.testing.assert_array_equal(again, labels_seg)
    np.testing.assert_allclose(g2.engine_affine, geometry.engine_affine, atol=1e-4)


def test_napari_lists_both_readers_for_nii_gz():
    from napari.plugins import _npe2

    readers = _npe2.get_readers(str(shared_file(*CT)))
    assert {"napari", "napari-sam2"} <= set(readers)  # builtins claim *.nii.gz too (imageio patterns)


def test_our_reader_claims_no_folder(tmp_path):
    """Claiming folders would put napari's "Choose reader" dialog in front of every .zarr folder a user
    opens; a DICOM series opens from one of its files (or a folder through the API and CLI)."""
    from napari.plugins import _npe2

    folder = tmp_path / "plate.zarr"
    folder.mkdir()
    assert "napari-sam2" not in _npe2.get_readers(str(folder))


def test_napari_opens_one_dicom_file_as_its_whole_series(viewer, tmp_path, phantom):
    folder = write_series(tmp_path / "ct", phantom)
    write_series(folder, phantom[:3], uid="1.2.3.9", origin=(0.0, 0.0, 200.0), prefix="other")
    one = next(folder.glob("other*.dcm"))
    layer = viewer.open(one, plugin="napari-sam2")[0]
    np.testing.assert_array_equal(layer.data, phantom[:3])  # the series of that file, not the other one
    np.testing.assert_allclose(layer.scale, (2.5, 0.8, 0.7))
    np.testing.assert_allclose(layer.translate, (200.0, 0.0, 0.0))
    assert tuple(layer.contrast_limits) == (-160.0, 240.0)


def test_the_widget_says_which_window_and_its_labels_carry_the_geometry(viewer, qtbot, tmp_path):
    from napari_sam2.plugin._widget import Sam2Widget

    ct = viewer.open(shared_file(*CT), plugin="napari-sam2")[0]
    widget = Sam2Widget(viewer, threaded=False)
    qtbot.addWidget(widget)
    assert widget.data.window_label.text() == "ct:soft_tissue: -160..240 (CT from the values) (fixed)"
    assert widget.data.window(ct) == (-160.0, 240.0)
    labels = widget.labels_layer()  # a new labels layer, as the first click makes it
    labels.data[10, 40:60, 50:70] = 3
    saved = labels.save(str(tmp_path / "lab.nii.gz"), plugin="napari-sam2")
    np.testing.assert_array_equal(nib.load(saved[0]).affine, nib.load(shared_file(*CT)).affine)
    ct.contrast_limits = (-1000, 400)  # the model's window stays the preset (issue 23)...
    assert widget.data.window(ct) == (-160.0, 240.0)
    widget.data.window_combo.setCurrentText("display contrast")  # ...unless the display contrast is asked for
    assert widget.data.window_label.text().startswith("contrast limits -1000..400 (display contrast")
    ct.contrast_limits = (-500, 500)  # then the line follows the layer's contrast limits
    assert widget.data.window_label.text().startswith("contrast limits -500..500")
    assert widget.data.window(ct) == (-500.0, 500.0)
