"""What every converted object shares: identity modules, UIDs and the Part 10 writer.

Attributes come from the user's :class:`Context` only. UIDs are derived (PS3.5 9.1, under the
project's root) from the case, the kind of series and the source file's content, so that a
repeated conversion of the same file gives the same SOP Instance UID and, since nothing
time-dependent is written, the same bytes: a second import is a duplicate, not a new object.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, generate_uid

from vna.convert.context import CODE_ONLY, PAIRED, Context, body_part_code
from vna.errors import ConversionError
from vna.ingest import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

#: Root of the UIDs the converters make (the project's root, branch 2 = converted objects).
UID_ROOT = "1.2.826.0.1.3680043.8.498.7786.2."
#: Series numbers per kind of object, so one case's photos, videos… sit in fixed series.
SERIES_NUMBERS = {"photo": 1, "video": 2, "audio": 3, "pdf": 4, "wsi": 10}
#: Modality per kind and device type (PS3.3 C.7.3.1.1.1): XC external-camera photography,
#: ES endoscopy, GM general microscopy, AU audio, DOC document, SM slide microscopy.
MODALITY_BY_DEVICE = {"endoscope": "ES", "microscope": "GM"}
#: Largest value of one item or element: a 32-bit length, even (PS3.5 7.1.1).
MAX_ITEM = 0xFFFFFFFE
CHUNK = 1024 * 1024  # copy unit of video fragments
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Options:
    """How to convert, beyond the context: choices the user makes on purpose."""

    exif_datetime: bool = False  # take the acquisition date/time from EXIF
    orientation: str = "apply"  # apply (rotate the pixels) or record (keep, note it)
    jpeg_quality: int | None = None  # transcode photos to JPEG baseline at this quality
    include_label: bool = False  # slide label (shows patient name, sample number)
    include_overview: bool = False  # slide macro photo (shows the label too)
    include_thumbnail: bool = False
    keep_pdf_metadata: bool = False  # keep the PDF's Info dictionary and XMP
    wsi_workers: int = 2
    audio_source: str = "physiological"  # what the sound is (CID 3000)


@dataclass
class Job:
    """One source to convert: where it is, whose it is, how, and where the objects go.

    ``digest`` identifies the source's content; ``warnings`` collects notes for the user.
    """

    path: Path
    context: Context  # checked (Context.checked)
    out_dir: Path
    options: Options
    digest: str
    instance_number: int = 1
    warnings: list[str] = field(default_factory=list)
    progress: ProgressFn | None = None

    def dataset(self, kind: str, sop_class: str, transfer_syntax: str, *variant: str) -> Dataset:
        """The identity modules of the object made from this source, its UIDs derived from
        the case, the kind and the content (``variant``: the options that change the bytes)."""
        series = series_uid(self.context, kind, sop_class)
        return base_dataset(
            self.context,
            kind=kind,
            sop_class=sop_class,
            sop_instance=derived_uid(kind, series, self.digest, *variant),
            transfer_syntax=transfer_syntax,
            instance_number=self.instance_number,
        )


def derived_uid(*parts: str) -> UID:
    """A UID under the project root, always the same for the same parts."""
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[UID_ROOT, *parts])


def study_uid(context: Context) -> UID:
    """The case's Study Instance UID: the given one, or derived from the case."""
    if context.study_uid:
        return UID(context.study_uid)
    return derived_uid("study", *context.case_key())


def series_uid(context: Context, kind: str, sop_class: str) -> UID:
    """One series per case, kind of object, SOP class and source."""
    return derived_uid(
        "series",
        study_uid(context),
        kind,
        sop_class,
        context.device_type,
        context.department,
        context.operator,
        context.series_description,
    )


def modality_for(kind: str, context: Context) -> str:
    """The Modality of a converted object (PS3.3 C.7.3.1.1.1)."""
    if kind == "audio":
        return "AU"
    if kind == "pdf":
        return "DOC"
    if kind == "wsi":
        return "SM"
    if kind == "video":  # Video Endoscopic / Microscopic (A.32.5, A.32.6)
        return MODALITY_BY_DEVICE.get(context.device_type, "XC")
    return "XC"  # VL Photographic (A.32.4) and Video Photographic


def base_dataset(
    context: Context,
    *,
    kind: str,
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str,
    instance_number: int = 1,
) -> Dataset:
    """Patient (C.7.1.1), General Study (C.7.2.1), General Series (C.7.3.1), General
    Equipment (C.7.5.1) and SOP Common (C.12.1) modules, with the File Meta Information.

    The equipment is left empty (Type 2): the device that made the file is what must not be
    recorded, and the converter is named in the File Meta Information.
    """
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = UID(sop_instance)
    # Patient module
    ds.PatientName = context.patient_name
    ds.PatientID = context.patient_id
    if context.issuer:
        ds.IssuerOfPatientID = context.issuer
    ds.PatientBirthDate = context.birth_date
    ds.PatientSex = context.sex
    # General Study module
    ds.StudyInstanceUID = study_uid(context)
    ds.StudyDate = context.study_date
    ds.StudyTime = context.study_time
    ds.ReferringPhysicianName = context.referring_physician
    # Study ID (Type 2 here, Type 1 in a DICOMDIR): the accession number, else the end of
    # the study's UID, which is as stable as the case.
    ds.StudyID = context.accession or str(ds.StudyInstanceUID).replace(".", "")[-16:]
    ds.AccessionNumber = context.accession
    if context.study_description:
        ds.StudyDescription = context.study_description
    # General Series module
    ds.Modality = modality_for(kind, context)
    ds.SeriesInstanceUID = series_uid(context, kind, sop_class)
    ds.SeriesNumber = SERIES_NUMBERS.get(kind, 1)
    if context.series_description:
        ds.SeriesDescription = context.series_description
    if context.operator:
        ds.OperatorsName = context.operator
    # General Equipment module
    ds.Manufacturer = ""
    if context.department:
        ds.InstitutionalDepartmentName = context.department
    ds.InstanceNumber = instance_number
    return ds


def add_anatomy(ds: Dataset, context: Context, *, required: bool) -> None:
    """Body Part Examined (C.7.3.1) and the Anatomic Region Sequence (C.8.12.1 / 10.5).

    VL images need the sequence unless laterality is given (Type 1C); a file whose body part
    the user did not name is described as "Anatomical structure" rather than guessed.
    """
    if context.body_part:
        term, code, scheme, meaning = body_part_code(context.body_part)
    elif required:
        term, code, scheme, meaning = "", "91723000", "SCT", "Anatomical structure"
    else:
        return
    if term and term not in CODE_ONLY:
        ds.BodyPartExamined = term
    # Type 2C for paired structures: empty when the user did not give the side. A region
    # without a known term (an unknown code, or none given) may be paired: treated as one.
    if context.laterality or not term or term in PAIRED:
        ds.Laterality = context.laterality
    ds.AnatomicRegionSequence = DicomSequence([code_item(code, scheme, meaning)])


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """A Code Sequence item (PS3.3 8.8)."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def output_path(out_dir: Path, ds: Dataset) -> Path:
    """Where a converted object goes: named by its SOP Instance UID (no source names)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / f"{ds.SOPInstanceUID}.dcm"


def write_part10(ds: Dataset, path: Path, fragments: Sequence[bytes | Path] = ()) -> Path:
    """Write ``ds`` as a Part 10 file; with ``fragments``, append encapsulated Pixel Data
    (PS3.5 A.4: empty Basic Offset Table, one item per fragment, each padded to even length),
    copying file fragments in chunks so that memory does not grow with a video's size.

    Raises:
        ConversionError: a fragment larger than an item can hold (4 GiB).
    """
    tmp = path.with_name(path.name + ".part")
    try:
        with tmp.open("wb") as fp:
            dcmwrite(fp, ds, enforce_file_format=True)
            if fragments:
                fp.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
                fp.write(struct.pack("<HHI", 0xFFFE, 0xE000, 0))
                for fragment in fragments:
                    _write_item(fp, fragment)
                fp.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_item(fp: object, fragment: bytes | Path) -> None:
    size = len(fragment) if isinstance(fragment, bytes) else fragment.stat().st_size
    padded = size + (size & 1)
    if padded > MAX_ITEM:
        raise ConversionError(
            f"the encoded stream is {size} bytes; one DICOM item holds at most {MAX_ITEM}"
        )
    write = fp.write  # type: ignore[attr-defined]
    write(struct.pack("<HHI", 0xFFFE, 0xE000, padded))
    if isinstance(fragment, bytes):
        write(fragment)
    else:
        with fragment.open("rb") as src:
            while chunk := src.read(CHUNK):
                write(chunk)
    if size & 1:
        write(b"\x00")
