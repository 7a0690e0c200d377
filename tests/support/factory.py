"""Generated DICOM objects for tests: small, valid, with chosen identity and UIDs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

ROOT_UID = "1.2.826.0.1.3680043.10.1234."


def uid() -> str:
    """A fresh UID under a test root."""
    return generate_uid(prefix=ROOT_UID)


def make_dataset(
    *,
    patient_id: str = "PID1",
    patient_name: str = "Doe^Jane",
    birth_date: str = "19700101",
    sex: str = "F",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    modality: str = "CT",
    study_date: str = "20240102",
    study_time: str = "101500",
    accession: str = "ACC1",
    study_description: str = "Test study",
    series_number: int = 1,
    instance_number: int = 1,
    rows: int = 16,
    columns: int = 16,
    frames: int = 1,
    sop_class: str = CTImageStorage,
    charset: str | None = None,
    seed: int = 0,
) -> Dataset:
    """A small image object (16-bit monochrome) with the given attributes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sop_uid = sop_uid or uid()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.StudyInstanceUID = study_uid or uid()
    ds.SeriesInstanceUID = series_uid or uid()
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession
    ds.StudyDescription = study_description
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.StudyID = "1"
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if sop_class == SecondaryCaptureImageStorage:
        ds.ConversionType = "WSD"
    if frames > 1:
        ds.NumberOfFrames = frames
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 4096, size=(frames, rows, columns), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    """Save as a Part 10 file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_file(path: Path, **kwargs: object) -> Path:
    """Generate and save one object."""
    return write(make_dataset(**kwargs), path)  # type: ignore[arg-type]
