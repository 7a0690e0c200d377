"""C-FIND SCP: both information models and every level with dcmtk findscu, keys returned
exactly as asked, every Specific Character Set, C-CANCEL, the result cap, malformed keys."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import build_context

from tests.dimse.conftest import Endpoint, associate, dcmtk, running
from tests.support.data import require_real_data
from tests.support.factory import make_dataset, uid, write
from vna.archive import Archive
from vna.ingest import ingest_file

pytestmark = pytest.mark.dcmtk
PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"


def _fill(archive: Archive, tmp_path: Path, studies: int = 3) -> list[str]:
    uids = []
    for i in range(studies):
        study = uid()
        uids.append(study)
        for j in range(2):
            ds = make_dataset(
                patient_id=f"P{i}",
                patient_name=f"Smith^John{i}",
                study_uid=study,
                study_date=f"2024010{i + 1}",
                modality="MR" if j else "CT",
                instance_number=j + 1,
            )
            ingest_file(archive, write(ds, tmp_path / f"{i}-{j}.dcm"), source="import")
    return uids


def _find(
    endpoint: Endpoint, query: Dataset, model: str = STUDY_ROOT
) -> list[tuple[int, Dataset | None]]:
    assoc = associate(endpoint, [build_context(model)])
    assert assoc.is_established
    answers = [(int(rsp.Status), found) for rsp, found in assoc.send_c_find(query, model)]
    assoc.release()
    return answers


def test_findscu_levels_and_models(server_any: Endpoint, tmp_path: Path) -> None:
    studies = _fill(server_any.archive, tmp_path)
    address = (server_any.host, str(server_any.port))
    result = dcmtk(
        "findscu", "-P", "-v", *address,
        "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID=P1", "-k", "PatientName",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Smith^John1" in result.stderr and result.stderr.count("Find Response") == 2
    for level, key in (("STUDY", "StudyInstanceUID"), ("SERIES", "SeriesInstanceUID")):
        result = dcmtk(
            "findscu", "-S", "-v", *address, "-k", f"QueryRetrieveLevel={level}",
            "-k", f"StudyInstanceUID={studies[0]}", "-k", key, "-k", "Modality",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = studies[2]
    query.SOPInstanceUID = ""
    query.InstanceNumber = "2"
    answers = _find(server_any, query)
    assert [s for s, _ in answers] == [0xFF00, 0x0000]


def test_keys_come_back_exactly_as_asked(server: Endpoint, tmp_path: Path) -> None:
    _fill(server.archive, tmp_path, studies=1)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "P0"
    query.StudyDescription = ""
    query.PatientWeight = ""  # not indexed: comes back empty (or from the object)
    query.add_new(0x00091001, "LO", None)  # a private attribute nobody stored
    query.ModalitiesInStudy = ""
    (status, answer), final = _find(server, query)
    assert (status, final[0]) == (0xFF00, 0x0000)
    assert answer is not None
    asked = {int(e.tag) for e in query} | {0x00080005, 0x00080054}
    assert {int(e.tag) for e in answer} == asked
    assert answer.StudyDescription == "Test study"
    assert answer[0x00091001].value in (None, "", b"")
    assert answer.ModalitiesInStudy == ["CT", "MR"]
    assert answer.RetrieveAETitle == server.ae_title


CHARSET_QUERIES = [
    ("SCSGREEK", "ISO_IR 126", "Διονυσιος", "Διονυσιος"),
    ("SCSRUSS", "ISO_IR 144", "Люкceмбypг", "Люкceмбypг"),
    ("SCSH31", "\\ISO 2022 IR 87", "=山田^太郎", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ("SCSI2", "\\ISO 2022 IR 149", "=洪*", "Hong^Gildong=洪^吉洞=홍^길동"),
    ("SCSX2", "GB18030", "Wang^XiaoDong=王^小东", "Wang^XiaoDong=王^小东"),
    ("SCSX1", "ISO_IR 192", "*=王^小東", "Wang^XiaoDong=王^小東"),
]


def test_names_in_every_character_set_match_and_come_back(server: Endpoint) -> None:
    base = require_real_data() / "Encodings" / "DavidClunie"
    for name, *_ in CHARSET_QUERIES:
        ingest_file(server.archive, base / name, source="import")
    for name, charset, value, expected in CHARSET_QUERIES:
        query = Dataset()
        query.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
        query.QueryRetrieveLevel = "PATIENT"
        query.PatientName = value
        query.PatientID = ""
        answers = _find(server, query, PATIENT_ROOT)
        found = [a for s, a in answers if s == 0xFF00 and a is not None]
        assert len(found) == 1, (name, answers)
        assert str(found[0].PatientName) == expected, name


def test_cancel_stops_the_stream_at_once(local_archive: Archive, tmp_path: Path) -> None:
    for i in range(60):
        ds = make_dataset(patient_id=f"C{i}")
        ingest_file(local_archive, write(ds, tmp_path / f"{i}.dcm"), source="import")
    with running(local_archive) as endpoint:
        assoc = associate(endpoint, [build_context(STUDY_ROOT)])
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        responses = assoc.send_c_find(query, STUDY_ROOT, msg_id=7)  # the request is sent now
        started = time.monotonic()
        assoc.send_c_cancel(7, assoc.accepted_contexts[0].context_id)
        statuses = [int(rsp.Status) for rsp, _found in responses]
        took = time.monotonic() - started
        assoc.release()
    assert statuses[-1] == 0xFE00  # Matching terminated due to Cancel request
    assert len(statuses) < 61
    assert took < 2


def test_result_cap_gives_the_response_limit_warning(
    local_archive: Archive, tmp_path: Path
) -> None:
    _fill(local_archive, tmp_path, studies=4)
    with running(local_archive, max_query_results=3) as endpoint:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        statuses = [s for s, _ in _find(endpoint, query)]
    assert statuses == [0xFF00, 0xFF00, 0xFF00, 0xB001]


@pytest.mark.parametrize(
    ("keys", "model"),
    [
        ({"PatientID": "X"}, STUDY_ROOT),  # no Query/Retrieve Level
        ({"QueryRetrieveLevel": "WARD"}, STUDY_ROOT),
        ({"QueryRetrieveLevel": "PATIENT", "PatientID": "X"}, STUDY_ROOT),  # not in Study Root
        ({"QueryRetrieveLevel": "STUDY", "StudyDate": "2020-13-99x"}, STUDY_ROOT),
        ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.*"}, STUDY_ROOT),
        ({"QueryRetrieveLevel": "STUDY", "PatientBirthDate": "yesterday"}, STUDY_ROOT),
    ],
)
def test_malformed_keys_are_refused(server: Endpoint, keys: dict[str, str], model: str) -> None:
    query = Dataset()
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    answers = _find(server, query, model)
    assert [s for s, _ in answers] == [0xA900]  # Identifier does not match SOP Class
    result = dcmtk("echoscu", server.host, str(server.port))
    assert result.returncode == 0


def test_unsupported_optional_key_gives_pending_warning(server: Endpoint, tmp_path: Path) -> None:
    _fill(server.archive, tmp_path, studies=1)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = "P0"
    query.PatientWeight = "70"  # not indexed: returned, not matched
    statuses = [s for s, _ in _find(server, query)]
    assert statuses == [0xFF01, 0x0000]
