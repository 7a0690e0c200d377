"""STOW-RS "metadata and bulk data" requests (PS3.18 10.5.1.2.2) → converted objects.

The DICOMweb front end parses the multipart request and calls :func:`objects_from_bulk` once
per DICOM JSON object: the object carries the patient/study context and a BulkDataURI
(usually in Pixel Data or Encapsulated Document) naming, by its Content-Location, the part
that holds the photo, video, sound or PDF. The part is converted through the same code as
`vna import`; the returned Part 10 files are then ingested by the front end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from vna import dicomjson
from vna.convert import AUDIO, PDF, PHOTO, VIDEO, classify, convert_file
from vna.convert.common import Options
from vna.convert.context import Context
from vna.errors import ConversionError, InvalidObject, UnsupportedMedia

#: Media types a bulk data part may have, and the kind of content each must hold.
MEDIA_TYPES = {
    "image/jpeg": PHOTO,
    "image/png": PHOTO,
    "image/tiff": PHOTO,
    "image/heic": PHOTO,
    "image/heif": PHOTO,
    "video/mp4": VIDEO,
    "video/quicktime": VIDEO,
    "video/webm": VIDEO,
    "video/x-matroska": VIDEO,
    "video/x-msvideo": VIDEO,
    "audio/wav": AUDIO,
    "audio/x-wav": AUDIO,
    "audio/vnd.wave": AUDIO,
    "audio/mpeg": AUDIO,
    "audio/mp4": AUDIO,
    "audio/aac": AUDIO,
    "application/pdf": PDF,
}
#: SOP classes a client may ask for, as the device type that produces them.
DEVICE_BY_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": "endoscope",
    "1.2.840.10008.5.1.4.1.1.77.1.2.1": "microscope",
}
DEVICE_BY_MODALITY = {"ES": "endoscope", "GM": "microscope"}
#: Context fields read from the metadata, by keyword.
KEYWORDS = {
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer",
    "PatientName": "patient_name",
    "PatientBirthDate": "birth_date",
    "PatientSex": "sex",
    "AccessionNumber": "accession",
    "StudyDescription": "study_description",
    "StudyDate": "study_date",
    "StudyTime": "study_time",
    "StudyInstanceUID": "study_uid",
    "ReferringPhysicianName": "referring_physician",
    "BodyPartExamined": "body_part",
    "Laterality": "laterality",
    "InstitutionalDepartmentName": "department",
    "OperatorsName": "operator",
    "SeriesDescription": "series_description",
    "DocumentTitle": "document_title",
}


def objects_from_bulk(
    metadata: dict[str, Any], parts: dict[str, tuple[str, Path]], out_dir: Path
) -> list[Path]:
    """Convert the bulk data parts one DICOM JSON object refers to; return Part 10 files.

    ``metadata`` is one object of the application/dicom+json part; ``parts`` maps each
    part's Content-Location to its media type and spooled file.

    Raises:
        InvalidObject: malformed metadata, a BulkDataURI naming no part.
        MissingContext: no Patient ID in the metadata.
        UnsupportedMedia: a media type or content the converters do not read.
        ConversionError: a part that is corrupt, encrypted, or not what its type says.
    """
    if not isinstance(metadata, dict):
        raise InvalidObject("the metadata must be one DICOM JSON object")
    context = context_from_metadata(metadata)
    uris = _bulk_uris(metadata)
    if not uris:
        raise InvalidObject("the metadata has no BulkDataURI naming the part to convert")
    out_dir.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    for number, uri in enumerate(uris, start=1):
        media_type, path = _part(parts, uri)
        expected = MEDIA_TYPES.get(media_type)
        if expected is None:
            raise UnsupportedMedia(
                f"part {uri}: media type {media_type!r} cannot be converted; accepted: "
                + ", ".join(sorted(MEDIA_TYPES))
            )
        kind, _notes = classify(path)
        if kind != expected:
            found = kind or "not a kind the converters read"
            raise ConversionError(f"part {uri} is declared {media_type} but its content is {found}")
        created += convert_file(
            path, context, out_dir, Options(), kind=kind, instance_number=number
        )
    return created


def context_from_metadata(metadata: dict[str, Any]) -> Context:
    """The patient/study/source context of a DICOM JSON object (PS3.18 Annex F).

    Raises:
        InvalidObject: the object is not valid DICOM JSON.
    """
    try:
        ds = dicomjson.json_to_dataset(metadata)
    except Exception as exc:
        raise InvalidObject(f"malformed DICOM JSON metadata: {exc}") from exc
    values: dict[str, str] = {}
    for keyword, name in KEYWORDS.items():
        value = ds.get(keyword)
        if value is not None and str(value).strip():
            values[name] = str(value)
    region = _anatomic_region(ds)
    if region and "body_part" not in values:
        values["body_part"] = region
    sop_class = str(ds.get("SOPClassUID", ""))
    device = DEVICE_BY_SOP_CLASS.get(sop_class) or DEVICE_BY_MODALITY.get(
        str(ds.get("Modality", ""))
    )
    if device:
        values["device_type"] = device
    return Context().merged(values)


def _anatomic_region(ds: Dataset) -> str:
    """The first Anatomic Region Sequence item as SCHEME:CODE:MEANING."""
    items = ds.get("AnatomicRegionSequence") or []
    if not items:
        return ""
    item = items[0]
    scheme, code, meaning = (
        str(item.get(k, "")) for k in ("CodingSchemeDesignator", "CodeValue", "CodeMeaning")
    )
    return f"{scheme}:{code}:{meaning}" if scheme and code and meaning else ""


def _bulk_uris(obj: dict[str, Any]) -> list[str]:
    """Every BulkDataURI in a DICOM JSON object, nested sequences included, in order."""
    found: list[str] = []
    for value in obj.values():
        if not isinstance(value, dict):
            continue
        uri = value.get("BulkDataURI")
        if isinstance(uri, str) and uri:
            found.append(uri)
        items = value.get("Value")
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                found += _bulk_uris(item)
    return list(dict.fromkeys(found))


def _part(parts: dict[str, tuple[str, Path]], uri: str) -> tuple[str, Path]:
    """The part a BulkDataURI names: exactly, or the one location that ends the URI (a
    client may give an absolute URI for a relative Content-Location, or the reverse)."""
    if uri in parts:
        media_type, path = parts[uri]
    else:
        matches = [k for k in parts if uri.endswith(k) or k.endswith(uri)]
        if len(matches) != 1:
            raise InvalidObject(f"no part has the Content-Location {uri!r} the metadata names")
        media_type, path = parts[matches[0]]
    return media_type.split(";")[0].strip().lower(), path
