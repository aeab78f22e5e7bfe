"""Batch runs: planning, resume after an interrupted run, failures per job, a LocalCluster run, and
medical inputs written in their own format and geometry (an existing output kept without force)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import make_volume, shared_file, write_series, write_tiff
from napari_sam2 import segment
from napari_sam2.api.batch import BatchError, is_done, plan, run_batch
from napari_sam2.cli import main
from napari_sam2.engine.medical import read_medical
from napari_sam2.engine.provenance import OutputError, read_labels, read_record

PROMPTS = "z,obj_id,row,col,label\n1,1,30,35,1\n2,2,10,12,1\n"


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        write_tiff(folder / f"img{i}.tif", make_volume(seed=i))
        (folder / f"img{i}.csv").write_text(PROMPTS)
    return folder


def expected_labels(image, ckpt):
    return segment(image, str(image).replace(".tif", ".csv"), model=ckpt).labels


def test_plan_expands_inputs_and_prompt_patterns(inputs, tmp_path):
    jobs = plan([inputs / "img*.tif"], tmp_path / "out", prompts=str(inputs / "{stem}.csv"))
    assert [j.out for j in jobs] == [str(tmp_path / "out" / f"img{i}_labels.tif") for i in range(3)]
    assert [j.prompts for j in jobs] == [str(inputs / f"img{i}.csv") for i in range(3)]
    assert [j.image for j in plan([inputs], tmp_path / "out", prompts=str(inputs / "img0.csv"))] == [
        j.image for j in jobs
    ]
    (inputs / "img1.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"prompts file not found for img1.tif"):
        plan([inputs], tmp_path / "out", prompts=str(inputs / "{stem}.csv"))
    with pytest.raises(BatchError, match="matches no file"):
        plan([inputs / "*.zarr"], tmp_path / "out", prompts="p.csv")


def test_resume_after_an_interrupted_run(inputs, tmp_path, tiny_ckpt):
    jobs = plan([inputs], tmp_path / "out", prompts=str(inputs / "{stem}.csv"), model=str(tiny_ckpt))

    def interrupt(done, total):
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(jobs, workers=0, progress=interrupt)
    assert [is_done(j) for j in jobs] == [True, False, False]
    first_mtime = (tmp_path / "out" / "img0_labels.tif").stat().st_mtime_ns
    (tmp_path / "out" / "img2_labels.tif").write_bytes(b"half a file from a crash")  # not verifiable

    report = run_batch(jobs, workers=0)
    assert report.skipped == [jobs[0].out] and sorted(report.done) == [jobs[1].out, jobs[2].out]
    assert (tmp_path / "out" / "img0_labels.tif").stat().st_mtime_ns == first_mtime
    for i, job in enumerate(jobs):
        assert np.array_equal(read_labels(job.out), expected_labels(inputs / f"img{i}.tif", tiny_ckpt))
    again = run_batch(jobs, workers=0)
    assert again.skipped == [j.out for j in jobs] and not again.done
    changed = plan(
        [inputs],
        tmp_path / "out",
        prompts=str(inputs / "{stem}.csv"),
        model=str(tiny_ckpt),
        options={"window": (0, 100)},
        force=True,  # without it, plan refuses outputs that are not these jobs' (see below)
    )
    assert not any(is_done(j) for j in changed)  # other options: not the same job, so not done


def test_failures_are_reported_per_image(capsys, inputs, tmp_path, tiny_ckpt):
    (inputs / "img1.tif").write_bytes(b"not a tiff")
    code = main(
        [
            "batch",
            str(inputs),
            "--out-dir",
            str(tmp_path / "out"),
            "--prompts",
            str(inputs / "{stem}.csv"),
            "--model",
            str(tiny_ckpt),
            "--workers",
            "0",
            "-q",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1 and "2 written, 0 already done (verified), 1 failed" in out
    assert "img1_labels.tif: SourceError: could not read" in err
    assert not (tmp_path / "out" / "img1_labels.tif").exists()


@pytest.mark.slow
def test_local_cluster_equals_serial_and_loads_the_model_once_per_worker(inputs, tmp_path, tiny_ckpt):
    from distributed import Client, LocalCluster

    jobs = plan([inputs], tmp_path / "dask", prompts=str(inputs / "{stem}.csv"), model=str(tiny_ckpt))
    serial = plan([inputs], tmp_path / "serial", prompts=str(inputs / "{stem}.csv"), model=str(tiny_ckpt))
    run_batch(serial, workers=0)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        report = run_batch(jobs, scheduler=client)
    assert sorted(report.done) == [j.out for j in jobs] and not report.failed
    assert 1 <= len(report.loads) <= 2 and set(report.loads.values()) == {1}  # each worker: one load
    for a, b in zip(jobs, serial):
        assert np.array_equal(read_labels(a.out), read_labels(b.out))


def test_medical_inputs_are_written_in_their_own_format_and_geometry(tmp_path, tiny_ckpt, capsys):
    nib = pytest.importorskip("nibabel")
    nrrd = pytest.importorskip("nrrd")
    pytest.importorskip("pydicom")
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(shared_file("ct-mr-totalsegmentator", "example_ct_sm.nii.gz"), folder / "scan.nii.gz")
    shutil.copy(shared_file("mri-tumour-pyradiomics", "brain1_image.nrrd"), folder / "brain.nrrd")
    phantom = np.random.default_rng(0).integers(-1000, 1000, (6, 20, 24)).astype(np.int16)
    write_series(folder / "series1", phantom)  # a DICOM series folder
    write_tiff(folder / "cells.tif", make_volume())
    for stem, (z, row, col) in {
        "scan": (5, 50, 60),
        "brain": (12, 120, 120),
        "series1": (2, 10, 12),
        "cells": (1, 30, 35),
    }.items():
        (folder / f"{stem}.csv").write_text(f"z,obj_id,row,col,label\n{z},1,{row},{col},1\n")
    out = tmp_path / "out"

    def jobs(**more):
        return plan([folder], out, prompts=str(folder / "{stem}.csv"), model=str(tiny_ckpt), **more)

    names = ["brain_labels.nrrd", "cells_labels.tif", "scan_labels.nii.gz", "series1_labels.nii.gz"]
    assert sorted(Path(j.out).name for j in jobs()) == names
    report = run_batch(jobs(), workers=0)
    assert sorted(Path(p).name for p in report.done) == names and not report.failed

    scan = nib.load(out / "scan_labels.nii.gz")
    np.testing.assert_array_equal(scan.affine, nib.load(folder / "scan.nii.gz").affine)
    expected = segment(folder / "scan.nii.gz", folder / "scan.csv", model=tiny_ckpt).labels
    np.testing.assert_array_equal(read_labels(out / "scan_labels.nii.gz"), expected)
    assert np.count_nonzero(expected[5]) > 0
    _, dicom = read_medical(folder / "series1")
    # a DICOM series is written as NIfTI with its affine (stored as float32 in the header)
    np.testing.assert_allclose(nib.load(out / "series1_labels.nii.gz").affine, dicom.affine, atol=1e-6)
    _, header = nrrd.read(str(out / "brain_labels.nrrd"))
    _, original = nrrd.read(str(folder / "brain.nrrd"))
    np.testing.assert_allclose(header["space directions"], original["space directions"])
    np.testing.assert_allclose(header["space origin"], original["space origin"])
    assert read_record(out / "scan_labels.nii.gz").image["medical"]["preset"] == "ct:soft_tissue"

    # a second run verifies and skips them all (NIfTI/NRRD hold uint8 labels, the record the API's type)
    again = run_batch(jobs(), workers=0)
    assert sorted(Path(p).name for p in again.skipped) == names and not again.done
    # outputs this batch did not make are never replaced without force
    mtime = (out / "scan_labels.nii.gz").stat().st_mtime_ns
    with pytest.raises(OutputError, match=r"are not this batch's verified results .*; pass --force"):
        jobs(options={"window": (0, 100)})
    args = ["batch", str(folder), "--out-dir", str(out), "--prompts", str(folder / "{stem}.csv")]
    args += ["--model", str(tiny_ckpt), "--workers", "0", "-q", "--window", "0,100"]
    assert main(args) == 1 and "pass --force" in capsys.readouterr().err
    assert (out / "scan_labels.nii.gz").stat().st_mtime_ns == mtime
    assert main([*args, "--force"]) == 0
    assert read_record(out / "scan_labels.nii.gz").window == [0.0, 100.0]
    np.testing.assert_array_equal(nib.load(out / "scan_labels.nii.gz").affine, scan.affine)
