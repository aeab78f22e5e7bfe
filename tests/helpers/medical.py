"""Medical test inputs written here: DICOM series (the shared data has none)."""

from __future__ import annotations

import numpy as np


def write_series(
    folder,
    volume,
    *,
    spacing=(2.5, 0.8, 0.7),
    origin=(-40.0, -30.0, 15.0),
    uid=None,
    modality="CT",
    prefix="img",
):
    """``volume`` (z, y, x) in HU as an axial single-frame series, file names in shuffled order and
    InstanceNumber descending, so only ImagePositionPatient gives the slice order."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    nz, ny, nx = volume.shape
    order = np.random.default_rng(3).permutation(nz)
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", uid
        ds.Modality, ds.PatientName, ds.SeriesDescription = modality, "Test^Phantom", f"series {uid[-6:]}"
        ds.Rows, ds.Columns = ny, nx
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        ds.SliceThickness, ds.InstanceNumber = spacing[0], nz - k
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (volume[k].astype(np.int32) + 1024).astype(np.uint16).tobytes()
        ds.save_as(folder / f"{prefix}{order[k]:03d}.dcm", enforce_file_format=True)
    return folder
