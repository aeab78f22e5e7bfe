"""Batch runs: planning, resume after an interrupted run, failures per job, a LocalCluster run."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import make_volume, write_tiff
from napari_sam2 import segment
from napari_sam2.api.batch import BatchError, is_done, plan, run_batch
from napari_sam2.cli import main
from napari_sam2.engine.provenance import read_labels

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
