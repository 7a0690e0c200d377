"""QIDO-RS (PS3.18 10.6) through dicomweb-client and raw HTTP, on one populated archive."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from tests.dicomweb.conftest import WebServer, running_web
from tests.support.factory import make_dataset, uid, write
from vna.archive import Archive
from vna.config import Settings
from vna.ingest import ingest_file

P_NAME, P_ID, MODALITIES, STUDY_DESC = "00100010", "00100020", "00080061", "00081030"
STUDY_UID, SERIES_UID, SOP_UID, RETRIEVE_URL = "0020000D", "0020000E", "00080018", "00081190"


@dataclass
class Populated:
    """The module's server and the UIDs of what it holds."""

    server: WebServer
    archive: Archive
    study_a: str
    series_a1: str
    series_a2: str
    study_b: str
    study_c: str


def _ingest(archive: Archive, ds: Dataset, path: Path) -> None:
    ingest_file(archive, write(ds, path), source="test")


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Populated]:
    """Three patients: Smith (CT study, two series, three instances, request attributes,
    a timezone), Smithers (MR) and Müller (US, UTF-8)."""
    tmp = tmp_path_factory.mktemp("qido")
    archive = Archive.open(Settings(data_dir=tmp / "data"))
    study_a, series_a1, series_a2 = uid(), uid(), uid()
    study_b, study_c = uid(), uid()
    for n, series in enumerate((series_a1, series_a1, series_a2)):
        ds = make_dataset(
            patient_id="P1",
            patient_name="Smith^John",
            study_uid=study_a,
            series_uid=series,
            study_date="20200105",
            study_time="101500",
            accession="ACC1",
            study_description="Chest CT",
            series_number=1 if series == series_a1 else 2,
            instance_number=n + 1,
            rows=8,
            columns=12,
        )
        ds.TimezoneOffsetFromUTC = "+0100"
        ds.SeriesDescription = "Axial" if series == series_a1 else ""
        ds.ImageType = ["ORIGINAL", "PRIMARY"] if n < 2 else ["DERIVED", "SECONDARY"]
        if series == series_a1:
            item = Dataset()
            item.ScheduledProcedureStepID = "SPS1"
            item.RequestedProcedureID = "RP1"
            ds.RequestAttributesSequence = [item]
        _ingest(archive, ds, tmp / f"a{n}.dcm")
    ds = make_dataset(
        patient_id="P2",
        patient_name="Smithers^Wayland",
        study_uid=study_b,
        modality="MR",
        study_date="20200210",
        study_time="090000",
        accession="ACC2",
        sex="M",
    )
    _ingest(archive, ds, tmp / "b.dcm")
    ds = make_dataset(
        patient_id="P3",
        patient_name="Müller^Jürgen",
        study_uid=study_c,
        modality="US",
        study_date="20210301",
        accession="ACC3",
        charset="ISO_IR 192",
    )
    _ingest(archive, ds, tmp / "c.dcm")
    with running_web(archive) as server:
        yield Populated(server, archive, study_a, series_a1, series_a2, study_b, study_c)
    archive.close()


def http(
    server: WebServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    """GET ``path`` under the service root: (status, headers, body)."""
    req = urllib.request.Request(server.url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def found(server: WebServer, path: str) -> list[dict[str, Any]]:
    status, headers, body = http(server, path)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/dicom+json")
    result: list[dict[str, Any]] = json.loads(body)
    return result


def value(obj: dict[str, Any], tag: str) -> Any:
    values = obj.get(tag, {}).get("Value")
    return values[0] if values else None


def ids(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(value(o, P_ID) for o in objects)


# -- resources and return attributes -------------------------------------------------------


def test_studies_answer_the_required_attributes(populated: Populated) -> None:
    client = populated.server.client()
    (study,) = client.search_for_studies(search_filters={"PatientID": "P1"})
    required = {
        "00080020": "20200105",
        "00080030": "101500",
        "00080050": "ACC1",
        "00080056": "ONLINE",
        MODALITIES: "CT",
        "00080201": "+0100",
        P_ID: "P1",
        "00100030": "19700101",
        "00100040": "F",
        STUDY_UID: populated.study_a,
        "00200010": "1",
        "00201206": 2,
        "00201208": 3,
    }
    for tag, expected in required.items():
        assert value(study, tag) == expected, tag
    assert study[P_NAME] == {"vr": "PN", "Value": [{"Alphabetic": "Smith^John"}]}
    assert study["00080090"]["Value"] == [{"Alphabetic": "Ref^Doctor"}]
    # absolute, from the request's Host (dicomweb-client sends it without the port)
    url = value(study, RETRIEVE_URL)
    assert url.startswith("http://127.0.0.1") and url.endswith(
        f"/dicom-web/studies/{populated.study_a}"
    )
    assert list(study) == sorted(study)  # PS3.18 F.2: ascending tags
    assert "00080005" not in study  # only ASCII: no character set to declare
    assert STUDY_DESC not in study  # not asked


def test_every_resource_and_nested_form(populated: Populated) -> None:
    server, a = populated.server, populated.study_a
    assert len(found(server, "/studies")) == 3
    assert len(found(server, "/series")) == 4
    assert len(found(server, "/instances")) == 5
    assert ids(found(server, "/patients")) == ["P1", "P2", "P3"]
    series = found(server, f"/studies/{a}/series")
    assert sorted(value(s, SERIES_UID) for s in series) == sorted(
        [populated.series_a1, populated.series_a2]
    )
    first = next(s for s in series if value(s, SERIES_UID) == populated.series_a1)
    assert value(first, "00080060") == "CT"
    assert value(first, "00200011") == 1
    assert value(first, "00201209") == 2
    assert value(first, "0008103E") == "Axial"
    assert value(first, RETRIEVE_URL).endswith(f"/studies/{a}/series/{populated.series_a1}")
    assert P_ID not in first  # the study is named in the path: no study attributes
    second = next(s for s in series if value(s, SERIES_UID) == populated.series_a2)
    assert second["0008103E"] == {"vr": "LO"}  # empty: present without a Value
    instances = found(server, f"/studies/{a}/series/{populated.series_a1}/instances")
    assert sorted(value(i, "00200013") for i in instances) == [1, 2]
    inst = instances[0]
    assert value(inst, "00280010") == 8 and value(inst, "00280011") == 12
    assert value(inst, "00280100") == 16
    assert value(inst, "00080016") == "1.2.840.10008.5.1.4.1.1.2"
    assert value(inst, RETRIEVE_URL) == (
        f"{server.url}/studies/{a}/series/{populated.series_a1}/instances/{value(inst, SOP_UID)}"
    )
    # a study's instances carry their series attributes; all instances the study's too
    study_instances = found(server, f"/studies/{a}/instances")
    assert len(study_instances) == 3
    assert all(value(i, "00080060") == "CT" for i in study_instances)
    assert all(P_ID not in i for i in study_instances)
    every = found(server, "/instances?PatientID=P1")
    assert all(value(i, "00080020") == "20200105" and value(i, P_ID) == "P1" for i in every)
    all_series = found(server, "/series?PatientID=P2")
    assert value(all_series[0], "00080050") == "ACC2"


def test_no_match_is_an_empty_list_at_every_level(populated: Populated) -> None:
    server, unknown = populated.server, uid()
    for path in (
        "/studies?PatientID=nobody",
        f"/studies/{unknown}/series",
        f"/studies/{unknown}/instances",
        f"/studies/{populated.study_a}/series/{unknown}/instances",
        "/patients?PatientID=nobody",
        f"/series?StudyInstanceUID={unknown}",
    ):
        assert found(server, path) == [], path


# -- matching ------------------------------------------------------------------------------


def test_keyword_and_tag_forms_match_alike(populated: Populated) -> None:
    server = populated.server
    assert found(server, "/studies?PatientID=P2") == found(server, "/studies?00100020=P2")
    lower_hex = f"/studies?0020000d={populated.study_b}"
    assert ids(found(server, lower_hex)) == ["P2"]


def test_wildcards(populated: Populated) -> None:
    client = populated.server.client()
    assert ids(client.search_for_studies(search_filters={"PatientName": "Smith*"})) == [
        "P1",
        "P2",
    ]
    assert ids(client.search_for_studies(search_filters={"PatientName": "Smith^*"})) == ["P1"]
    assert ids(client.search_for_studies(search_filters={"PatientName": "?mith^John"})) == ["P1"]
    assert ids(client.search_for_studies(search_filters={"AccessionNumber": "ACC*"})) == [
        "P1",
        "P2",
        "P3",
    ]
    assert ids(client.search_for_studies(search_filters={"PatientID": "*"})) == ["P1", "P2", "P3"]


def test_date_and_time_ranges(populated: Populated) -> None:
    server = populated.server
    assert ids(found(server, "/studies?StudyDate=20200101-20200131")) == ["P1"]
    assert ids(found(server, "/studies?StudyDate=20200201-")) == ["P2", "P3"]
    assert ids(found(server, "/studies?StudyDate=-20200131")) == ["P1"]
    assert ids(found(server, "/studies?StudyDate=20200210")) == ["P2"]
    assert ids(found(server, "/studies?StudyTime=0900-1000")) == ["P2"]
    assert ids(found(server, "/studies?StudyDate=20200101-20201231&StudyTime=10-")) == ["P1"]


def test_uid_lists_with_commas_or_backslashes(populated: Populated) -> None:
    server, a, b = populated.server, populated.study_a, populated.study_b
    assert ids(found(server, f"/studies?StudyInstanceUID={a},{b}")) == ["P1", "P2"]
    backslash = urllib.parse.quote(f"{a}\\{b}")
    assert ids(found(server, f"/studies?StudyInstanceUID={backslash}")) == ["P1", "P2"]
    # a UID parameter naming the path's study again is fine; another study matches nothing
    assert len(found(server, f"/studies/{a}/series?StudyInstanceUID={a},{b}")) == 2
    assert found(server, f"/studies/{a}/series?StudyInstanceUID={b}") == []


def test_lower_level_keys_match_without_being_returned(populated: Populated) -> None:
    server = populated.server
    studies = found(server, "/studies?Modality=MR")
    assert ids(studies) == ["P2"] and "00080060" not in studies[0]
    assert ids(found(server, "/studies?ModalitiesInStudy=CT,US")) == ["P1", "P3"]
    assert ids(found(server, f"/studies?SeriesInstanceUID={populated.series_a2}")) == ["P1"]


def test_fuzzy_matching(populated: Populated) -> None:
    client = populated.server.client()
    fuzzy = client.search_for_studies(search_filters={"PatientName": "muller*"}, fuzzymatching=True)
    assert ids(fuzzy) == ["P3"]
    assert client.search_for_studies(search_filters={"PatientName": "muller*"}) == []
    assert found(populated.server, "/studies?PatientName=muller*&fuzzymatching=false") == []


def test_sequence_keys_of_the_request_attributes(populated: Populated) -> None:
    server = populated.server
    for key in (
        "RequestAttributesSequence.ScheduledProcedureStepID=SPS1",
        "00400275.00400009=SPS1",
        "RequestAttributesSequence.RequestedProcedureID=RP*",
    ):
        series = found(server, f"/series?{key}")
        assert [value(s, SERIES_UID) for s in series] == [populated.series_a1], key
        (item,) = series[0]["00400275"]["Value"]
        assert value(item, "00400009") == "SPS1" and value(item, "00401001") == "RP1"
    assert found(server, "/series?RequestAttributesSequence.ScheduledProcedureStepID=X") == []
    assert ids(found(server, "/studies?00400275.00400009=SPS1")) == ["P1"]


def test_unsupported_matching_keys_are_returned_and_reported(populated: Populated) -> None:
    status, headers, body = http(populated.server, "/instances?PatientID=P1&ImageType=DERIVED")
    assert status == 200
    warning = headers["Warning"]
    assert warning.startswith("299 ") and "ImageType" in warning
    instances = json.loads(body)
    assert len(instances) == 3  # not used to filter
    assert {tuple(i["00080008"]["Value"]) for i in instances} == {
        ("ORIGINAL", "PRIMARY"),
        ("DERIVED", "SECONDARY"),
    }
    status, headers, _ = http(populated.server, "/studies?PatientID=P1")
    assert "Warning" not in headers


# -- return attributes asked for -----------------------------------------------------------


def test_includefield_forms(populated: Populated) -> None:
    client = populated.server.client()
    (study,) = client.search_for_studies(
        search_filters={"PatientID": "P1"}, fields=["StudyDescription", "00100021"]
    )
    assert value(study, STUDY_DESC) == "Chest CT"
    assert "00100021" in study
    server = populated.server
    (listed,) = found(server, "/studies?PatientID=P1&includefield=StudyDescription,00081030")
    (repeated,) = found(
        server, "/studies?PatientID=P1&includefield=StudyDescription&includefield=00080062"
    )
    assert value(listed, STUDY_DESC) == value(repeated, STUDY_DESC) == "Chest CT"
    assert value(repeated, "00080062") == "1.2.840.10008.5.1.4.1.1.2"
    # instance attributes are not returned at the study level (PS3.18 10.6.3.3.1)
    (study,) = found(server, "/studies?PatientID=P1&includefield=Rows,ImageType")
    assert "00280010" not in study and "00080008" not in study


def test_includefield_all(populated: Populated) -> None:
    server = populated.server
    (study,) = found(server, "/studies?PatientID=P1&includefield=all")
    assert value(study, STUDY_DESC) == "Chest CT"
    assert "00280010" not in study
    instances = found(server, f"/studies/{populated.study_a}/instances?includefield=all")
    inst = next(i for i in instances if value(i, "00200013") == 3)
    assert inst["00080008"]["Value"] == ["DERIVED", "SECONDARY"]
    assert value(inst, "00280002") == 1  # SamplesPerPixel: from the stored metadata
    assert "7FE00010" not in inst  # bulk data is not part of a search answer
    assert value(inst, RETRIEVE_URL).endswith(value(inst, SOP_UID))


# -- paging and the cap --------------------------------------------------------------------


def test_limit_and_offset_page_through_a_stable_order(populated: Populated) -> None:
    client = populated.server.client()
    whole = client.search_for_instances()
    pages = [client.search_for_instances(limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert [value(i, SOP_UID) for p in pages for i in p] == [value(i, SOP_UID) for i in whole]


def test_the_cap_cuts_with_the_standard_warning(populated: Populated) -> None:
    with running_web(populated.archive, max_query_results=2) as server:
        status, headers, body = http(server, "/studies")
        assert status == 200 and len(json.loads(body)) == 2
        assert headers["Warning"] == (
            f'299 127.0.0.1:{server.port}: "The number of results exceeded the maximum '
            'supported by the server. Additional results can be requested."'
        )
        # more than the cap asked: capped, with the warning; the rest by offset
        status, headers, body = http(server, "/studies?limit=50")
        assert len(json.loads(body)) == 2 and "Warning" in headers
        status, headers, body = http(server, "/studies?offset=2")
        assert len(json.loads(body)) == 1 and "Warning" not in headers
        # the client's own limit: no warning
        status, headers, body = http(server, "/studies?limit=1")
        assert len(json.loads(body)) == 1 and "Warning" not in headers


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("StudyDate=2020-13-45", "StudyDate"),
        ("StudyDate=20201345", "StudyDate"),
        ("StudyTime=ab", "StudyTime"),
        ("StudyTime=2500-", "StudyTime"),
        ("colour=blue&shape=round", "colour, shape"),
        ("PatientID=P1&patientid=P2", "patientid"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("offset=1.5", "offset"),
        ("fuzzymatching=maybe", "fuzzymatching"),
        ("includefield=NoSuchKeyword", "NoSuchKeyword"),
        ("StudyInstanceUID=1.2.3;DROP", "StudyInstanceUID"),
        ("PatientID=P1&PatientID=P2", "PatientID"),
        ("SeriesNumber=one", "SeriesNumber"),
    ],
)
def test_bad_requests_are_400_with_a_reason(populated: Populated, query: str, named: str) -> None:
    status, headers, body = http(populated.server, "/studies?" + query)
    assert status == 400, body
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(body)
    assert error["status"] == 400 and named in error["error"]


def test_bad_uid_in_the_path_is_400(populated: Populated) -> None:
    status, _, body = http(populated.server, "/studies/not%20a%20uid/series")
    assert status == 400 and "StudyInstanceUID" in json.loads(body)["error"]


def test_tolerated_parameters(populated: Populated) -> None:
    assert ids(found(populated.server, "/studies?PatientID=P1&charset=utf-8&_=1718000000")) == [
        "P1"
    ]


def test_media_types(populated: Populated) -> None:
    server = populated.server
    for accept in ("application/dicom+json", "*/*", "application/*", ""):
        status, headers, _ = http(server, "/studies", {"Accept": accept} if accept else {})
        assert status == 200 and headers["Content-Type"].startswith("application/dicom+json")
    status, headers, body = http(server, "/studies", {"Accept": "application/json"})
    assert headers["Content-Type"].startswith("application/json") and len(json.loads(body)) == 3
    status, headers, body = http(server, "/studies", {"Accept": "image/jpeg, text/html"})
    assert status == 406 and json.loads(body)["status"] == 406
    status, _, _ = http(server, "/studies", {"Accept": 'multipart/related; type="image/jpeg"'})
    assert status == 406
    status, headers, _ = http(server, "/studies?accept=application%2Fdicom%2Bjson")
    assert status == 200


def test_gzip_when_accepted(populated: Populated) -> None:
    status, headers, body = http(
        populated.server, "/instances?includefield=all", {"Accept-Encoding": "gzip"}
    )
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(body))) == 5


# -- XML -----------------------------------------------------------------------------------


def _xml_parts(headers: Any, body: bytes) -> list[Any]:
    from email.parser import BytesParser
    from email.policy import HTTP
    from xml.etree import ElementTree

    content_type = headers["Content-Type"]
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    parts = []
    for part in message.iter_parts():
        assert part.get_content_type() == "application/dicom+xml"
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts.append(ElementTree.fromstring(payload))
    return parts


def test_multipart_xml_answers(populated: Populated) -> None:
    ns = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    status, headers, body = http(
        populated.server,
        "/studies?PatientName=M*&fuzzymatching=true",
        {"Accept": 'multipart/related; type="application/dicom+xml"'},
    )
    assert status == 200
    assert headers["Content-Type"].startswith('multipart/related; type="application/dicom+xml"')
    (root,) = _xml_parts(headers, body)
    assert root.tag == "{" + ns["d"] + "}NativeDicomModel"
    name = root.find("d:DicomAttribute[@keyword='PatientName']/d:PersonName/d:Alphabetic", ns)
    assert name is not None
    assert name.findtext("d:FamilyName", namespaces=ns) == "Müller"
    assert name.findtext("d:GivenName", namespaces=ns) == "Jürgen"
    count = root.find("d:DicomAttribute[@tag='00201208']", ns)
    assert count is not None and count.get("vr") == "IS"
    assert count.findtext("d:Value[@number='1']", namespaces=ns) == "1"
    # no match: a multipart body without parts
    status, headers, body = http(
        populated.server,
        "/studies?PatientID=nobody",
        {"Accept": "multipart/related; type=application/dicom+xml"},
    )
    assert status == 200 and _xml_parts(headers, body) == []


def test_xml_renders_sequences_and_empty_values(populated: Populated) -> None:
    from xml.etree import ElementTree

    from dicomweb.xml import to_native_xml

    (series,) = found(populated.server, "/series?00400275.00400009=SPS1")
    root = ElementTree.fromstring(to_native_xml(series))
    ns = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    item = root.find("d:DicomAttribute[@tag='00400275']/d:Item[@number='1']", ns)
    assert item is not None
    assert item.findtext("d:DicomAttribute[@tag='00400009']/d:Value", namespaces=ns) == "SPS1"
    empty = root.find("d:DicomAttribute[@tag='00400244']", ns)
    assert empty is not None and list(empty) == []


# -- character sets ------------------------------------------------------------------------

CLUNIE = Path("/work/shared/testdata/real/Encodings/DavidClunie")
#: file, its Patient ID, the name as stored (decoded), a query that must find it
NAMES = [
    ("SCSGREEK", "SCSGREEK", "Διονυσιος", "Διονυσιος"),
    ("SCSRUSS", "SCSRUSS", "Люкceмбypг", "Люкceмбypг"),
    ("SCSH31", "H31EXAMPLE", "Yamada^Tarou=山田^太郎=やまだ^たろう", "山田^太郎"),
    ("SCSH32", "H32EXAMPLE", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう", "ﾔﾏﾀﾞ^ﾀﾛｳ"),
    ("SCSI2", "I2EXAMPLE", "Hong^Gildong=洪^吉洞=홍^길동", "홍^길동"),
    ("SCSX1", "X1EXAMPLE", "Wang^XiaoDong=王^小東", "王^小東"),
    ("SCSX2", "X2EXAMPLE", "Wang^XiaoDong=王^小东", "王^小东"),
    ("SCSGERM", "SCSGERM", "Äneas^Rüdiger", "Äneas^Rüdiger"),
    ("SCSARAB", "SCSARAB", "قباني^لنزار", "قباني^لنزار"),
    ("SCSHBRW", "SCSHBRW", "שרון^דבורה", "שרון^דבורה"),
]


@pytest.fixture(scope="module")
def encodings(populated: Populated) -> WebServer:
    from tests.support.data import require_real_data

    require_real_data()
    for name, *_ in NAMES:
        ingest_file(populated.archive, CLUNIE / name, source="test")
    return populated.server


@pytest.mark.parametrize(
    ("file", "patient_id", "stored", "query"), NAMES, ids=[n[0] for n in NAMES]
)
def test_character_sets_come_back_as_sent(
    encodings: WebServer, file: str, patient_id: str, stored: str, query: str
) -> None:
    path = "/studies?PatientName=" + urllib.parse.quote(query, safe="")
    studies = {value(s, P_ID): s for s in found(encodings, path)}
    assert patient_id in studies
    study = studies[patient_id]
    groups = stored.split("=")
    expected = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False))
    assert study[P_NAME]["Value"] == [expected]
    assert value(study, "00080005") == "ISO_IR 192"
    # the XML answer says the same
    _, headers, body = http(
        encodings,
        f"/studies?PatientID={patient_id}",
        {"Accept": 'multipart/related; type="application/dicom+xml"'},
    )
    (root,) = _xml_parts(headers, body)
    ns = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    name = root.find("d:DicomAttribute[@keyword='PatientName']/d:PersonName", ns)
    assert name is not None
    family = name.findtext(f"d:{next(iter(expected))}/d:FamilyName", namespaces=ns)
    assert family == next(iter(expected.values())).split("^")[0]
