"""QIDO-RS (PS3.18 10.6): search for patients, studies, series and instances.

Resources: ``/studies``, ``/series``, ``/instances``, ``/studies/{study}/series``,
``/studies/{study}/instances``, ``/studies/{study}/series/{series}/instances``, and
``/patients`` (an extension: Patient level of the Patient Root model, PS3.4 C.6.1.1.2).
The parameters are parsed by :mod:`dicomweb.qido_params`; matching is the core's (the same
SQL as C-FIND); the answer is built as DICOM JSON straight from the index rows
(:mod:`vna.query_json`).

Decisions, the same at every level:

- No match is ``200`` with an empty list ``[]`` (JSON) or a multipart body without parts
  (XML), also when the study or series of the path is unknown: a search that finds nothing
  is not an error.
- Matching keys the index cannot match on (attributes it does not hold, sequence paths
  deeper than one item) are returned, not matched, and named in a ``Warning: 299`` header.
- ``max_query_results`` caps every answer (``limit`` above it is lowered to it); when more
  entities matched than the cap let through, the first ones are returned with the warning of
  PS3.18 8.10.2 and the rest can be paged through with ``offset``.
- Results are ordered by the time the entity was first indexed, so ``offset`` pages are
  stable while objects keep arriving.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from dicomweb import qido_params
from dicomweb.accept import parse_accept
from dicomweb.http import DICOM_JSON, archive_of, json_response, run, service_url, wants_gzip
from dicomweb.xml import to_native_xml
from vna import dicomjson
from vna.errors import NotAcceptable
from vna.query_json import JsonAnswer
from vna.query_json import search as search_json

# PS3.18 Table 10.6.3-3 (study), 10.6.3-4 (series), 10.6.3-5 (instance) required attributes;
# RetrieveURL (0008,1190) is added by this module, SpecificCharacterSet by the core.
STUDY_TAGS = [
    0x00080020,  # StudyDate
    0x00080030,  # StudyTime
    0x00080050,  # AccessionNumber
    0x00080056,  # InstanceAvailability
    0x00080061,  # ModalitiesInStudy
    0x00080090,  # ReferringPhysicianName
    0x00080201,  # TimezoneOffsetFromUTC (when known)
    0x00100010,  # PatientName
    0x00100020,  # PatientID
    0x00100030,  # PatientBirthDate
    0x00100040,  # PatientSex
    0x0020000D,  # StudyInstanceUID
    0x00200010,  # StudyID
    0x00201206,  # NumberOfStudyRelatedSeries
    0x00201208,  # NumberOfStudyRelatedInstances
]
SERIES_TAGS = [
    0x00080060,  # Modality
    0x00080201,  # TimezoneOffsetFromUTC (when known)
    0x0008103E,  # SeriesDescription
    0x0020000D,  # StudyInstanceUID (the key of the parent)
    0x0020000E,  # SeriesInstanceUID
    0x00200011,  # SeriesNumber
    0x00201209,  # NumberOfSeriesRelatedInstances
    0x00400244,  # PerformedProcedureStepStartDate
    0x00400245,  # PerformedProcedureStepStartTime
    0x00400275,  # RequestAttributesSequence
]
INSTANCE_TAGS = [
    0x00080016,  # SOPClassUID
    0x00080018,  # SOPInstanceUID
    0x00080056,  # InstanceAvailability
    0x00080201,  # TimezoneOffsetFromUTC (when known)
    0x0020000D,  # StudyInstanceUID
    0x0020000E,  # SeriesInstanceUID
    0x00200013,  # InstanceNumber
    0x00280008,  # NumberOfFrames
    0x00280010,  # Rows
    0x00280011,  # Columns
    0x00280100,  # BitsAllocated
]
PATIENT_TAGS = [
    0x00100010,  # PatientName
    0x00100020,  # PatientID
    0x00100021,  # IssuerOfPatientID
    0x00100030,  # PatientBirthDate
    0x00100040,  # PatientSex
    0x00201200,  # NumberOfPatientRelatedStudies
    0x00201202,  # NumberOfPatientRelatedSeries
    0x00201204,  # NumberOfPatientRelatedInstances
]
RETRIEVE_URL = "00081190"
XML_TYPE = "application/dicom+xml"
MULTIPART_XML = f'multipart/related; type="{XML_TYPE}"'
#: PS3.18 8.10.2 wording of the warning sent when the answer is cut by the server's cap.
CAP_WARNING = (
    "The number of results exceeded the maximum supported by the server. "
    "Additional results can be requested."
)


def level_and_tags(request: web.Request) -> tuple[str, list[int], dict[int, str]]:
    """Query level, default return attributes and path keys of the requested resource."""
    match = request.match_info
    study, series = match.get("study"), match.get("series")
    resource = request.path.rstrip("/").rsplit("/", 1)[-1]
    path_keys: dict[int, str] = {}
    if study is not None:
        path_keys[qido_params.STUDY_UID] = study
    if series is not None:
        path_keys[qido_params.SERIES_UID] = series
    if resource == "patients":
        return "PATIENT", PATIENT_TAGS, path_keys
    if resource == "studies":
        return "STUDY", STUDY_TAGS, path_keys
    if resource == "series":
        tags = SERIES_TAGS if study is not None else STUDY_TAGS + SERIES_TAGS
        return "SERIES", tags, path_keys
    if series is not None:
        tags = INSTANCE_TAGS
    elif study is not None:
        tags = SERIES_TAGS + INSTANCE_TAGS  # PS3.18 10.6.3.3.3: a study's instances
    else:
        tags = STUDY_TAGS + SERIES_TAGS + INSTANCE_TAGS
    return "IMAGE", tags, path_keys


def media_type(header: str | None) -> str:
    """``application/dicom+json`` (also for ``application/json`` and wildcards) or the
    multipart XML type.

    Raises:
        NotAcceptable: the client accepts neither.
        BadRequest: a malformed Accept value.
    """
    for media_range in parse_accept(header):
        if media_range.type in ("application/dicom+json", "application/*", "*/*", "*"):
            return DICOM_JSON
        if media_range.type == "application/json":
            return "application/json"
        if (
            media_range.type in ("multipart/related", "multipart/*")
            and media_range.params.get("type", XML_TYPE).lower() == XML_TYPE
        ):
            return MULTIPART_XML
    raise NotAcceptable(
        f"QIDO-RS answers in application/dicom+json or {MULTIPART_XML}; the request accepts neither"
    )


async def search(request: web.Request) -> web.StreamResponse:
    """Search the archive (every QIDO-RS resource)."""
    parsed = qido_params.parse(request.query.items())
    answer_type = media_type(parsed.accept or request.headers.get("Accept"))
    level, tags, path_keys = level_and_tags(request)
    archive = archive_of(request)
    cap = archive.settings.max_query_results or None
    asked = parsed.limit
    if cap is not None:
        parsed.limit = cap if asked is None else min(asked, cap)
    query = qido_params.request_for(level, parsed, path_keys, tags)
    base = service_url(request)

    def instance_url(study: str, series: str, sop: str) -> str:
        return f"{base}/studies/{study}/series/{series}/instances/{sop}"

    answer = (
        JsonAnswer()
        if query is None
        else await run(request, search_json, archive, query, instance_url=instance_url)
    )
    if level != "PATIENT":
        _add_retrieve_urls(answer, base, level)
    warnings = []
    unsupported = [*answer.unsupported, *parsed.unmatched_paths]
    if unsupported:
        warnings.append(
            "The following attributes are not supported for matching and were not used "
            "to filter the results: " + ", ".join(unsupported)
        )
    if answer.more and cap is not None and (asked is None or asked > cap):
        warnings.append(CAP_WARNING)
    headers = {}
    if warnings:
        headers["Warning"] = ", ".join(f'299 {request.host}: "{text}"' for text in warnings)
    if answer_type == MULTIPART_XML:
        return _xml_response(request, answer.objects, headers)
    return json_response(
        request, dicomjson.dumps(answer.objects), content_type=answer_type, headers=headers
    )


def _add_retrieve_urls(answer: JsonAnswer, base: str, level: str) -> None:
    for i, (study, series, sop) in enumerate(answer.uids):
        url = f"{base}/studies/{study}"
        if level in ("SERIES", "IMAGE"):
            url += f"/series/{series}"
        if level == "IMAGE":
            url += f"/instances/{sop}"
        obj = answer.objects[i]
        obj[RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
        answer.objects[i] = dict(sorted(obj.items()))


def _xml_response(
    request: web.Request, objects: list[dict[str, Any]], headers: dict[str, str]
) -> web.Response:
    """One ``application/dicom+xml`` part per match (PS3.18 8.7.3.5, PS3.19 A.1)."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for obj in objects:
        chunks.append(f"--{boundary}\r\nContent-Type: {XML_TYPE}\r\n\r\n".encode("ascii"))
        chunks.append(to_native_xml(obj))
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("ascii"))
    body = b"".join(chunks)
    response = web.Response(body=body, headers=headers)
    response.content_type = "multipart/related"
    response.headers["Content-Type"] = f'{MULTIPART_XML}; boundary="{boundary}"'
    if len(body) >= 1024 and wants_gzip(request):
        response.enable_compression(web.ContentCoding.gzip)
    return response
