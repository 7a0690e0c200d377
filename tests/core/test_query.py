"""The matching engine (PS3.4 C.2.2.2) on both back ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.data import require_real_data
from tests.support.factory import make_dataset, uid, write
from vna.archive import Archive
from vna.errors import BadRequest
from vna.ingest import ingest_file
from vna.query import QueryRequest, find

P_NAME, P_ID, S_DATE, S_UID = 0x00100010, 0x00100020, 0x00080020, 0x0020000D


@pytest.fixture
def populated(archive: Archive, tmp_path: Path) -> Archive:
    rows = [
        ("P1", "Smith^John", "20200105", "101500", "CT", "ACC_1"),
        ("P2", "Smithers^Wayland", "20200210", "090000", "MR", "ACC%2"),
        ("P3", "Müller^Jürgen", "20210301", "235959", "CT", "ACC3"),
        ("P4", "O'Neil^Ann", "20190101", "000001", "US", "X_4"),
    ]
    for i, (pid, name, date, time, modality, acc) in enumerate(rows):
        ds = make_dataset(
            patient_id=pid,
            patient_name=name,
            study_date=date,
            study_time=time,
            modality=modality,
            accession=acc,
            charset="ISO_IR 192",
        )
        ingest_file(archive, write(ds, tmp_path / f"{i}.dcm"), source="import")
    return archive


def ids(matches: list) -> list[str]:  # type: ignore[type-arg]
    return sorted(str(m.dataset.PatientID) for m in matches)


def q(archive: Archive, level: str = "STUDY", **keys: str) -> list:  # type: ignore[type-arg]
    from pydicom.datadict import tag_for_keyword

    tags = {int(tag_for_keyword(k)): v for k, v in keys.items()}  # type: ignore[arg-type]
    return find(archive, QueryRequest(level=level, keys={P_ID: "", **tags}))


def test_single_value_and_universal(populated: Archive) -> None:
    assert ids(q(populated, PatientID="P2")) == ["P2"]
    assert ids(q(populated, PatientID="")) == ["P1", "P2", "P3", "P4"]
    assert ids(q(populated, PatientID="*")) == ["P1", "P2", "P3", "P4"]
    assert ids(q(populated, PatientID="p2")) == []  # case sensitive


def test_wildcards_and_escaping(populated: Archive) -> None:
    assert ids(q(populated, PatientName="Smith*")) == ["P1", "P2"]
    assert ids(q(populated, PatientName="Smith^*")) == ["P1"]
    assert ids(q(populated, PatientName="?mith^John")) == ["P1"]
    assert ids(q(populated, PatientName="*er*")) == ["P2", "P3"]
    # % and _ are literal characters, never SQL wildcards
    assert ids(q(populated, AccessionNumber="ACC%2")) == ["P2"]
    assert ids(q(populated, AccessionNumber="ACC%")) == []
    assert ids(q(populated, AccessionNumber="X_4")) == ["P4"]
    assert ids(q(populated, AccessionNumber="X?4")) == ["P4"]
    assert ids(q(populated, AccessionNumber="ACC_*")) == ["P1"]


def test_pn_trailing_components_and_fuzzy(populated: Archive) -> None:
    assert ids(q(populated, PatientName="Smith^John^^")) == ["P1"]
    fuzzy = find(
        populated, QueryRequest(level="STUDY", keys={P_ID: "", P_NAME: "muller*"}, fuzzy=True)
    )
    assert ids(fuzzy) == ["P3"]
    assert ids(q(populated, PatientName="muller*")) == []


def test_date_and_time_ranges(populated: Archive) -> None:
    assert ids(q(populated, StudyDate="20200101-20201231")) == ["P1", "P2"]
    assert ids(q(populated, StudyDate="20200201-")) == ["P2", "P3"]
    assert ids(q(populated, StudyDate="-20191231")) == ["P4"]
    assert ids(q(populated, StudyDate="20210301")) == ["P3"]
    assert ids(q(populated, StudyTime="09-10")) == ["P1", "P2"]
    assert ids(q(populated, StudyTime="2359-")) == ["P3"]


def test_uid_list_and_modalities(populated: Archive) -> None:
    all_studies = q(populated, StudyInstanceUID="")
    chosen = [str(m.dataset.StudyInstanceUID) for m in all_studies[:2]]
    got = q(populated, StudyInstanceUID="\\".join(chosen))
    assert sorted(str(m.dataset.StudyInstanceUID) for m in got) == sorted(chosen)
    assert ids(q(populated, ModalitiesInStudy="CT")) == ["P1", "P3"]
    assert ids(q(populated, ModalitiesInStudy="MR\\US")) == ["P2", "P4"]


def test_levels_and_lower_level_keys(populated: Archive) -> None:
    assert len(q(populated, "PATIENT")) == 4
    series = q(populated, "SERIES", Modality="CT")
    assert len(series) == 2 and all(m.dataset.Modality == "CT" for m in series)
    images = q(populated, "IMAGE", PatientName="Smith*")
    assert len(images) == 2 and all(m.sop_instance_uid for m in images)
    # a series-level key at study level matches studies having such a series
    assert ids(q(populated, "STUDY", Modality="US")) == ["P4"]


def test_limit_offset_and_counts(populated: Archive) -> None:
    page1 = find(populated, QueryRequest(level="STUDY", keys={P_ID: ""}, limit=3))
    page2 = find(populated, QueryRequest(level="STUDY", keys={P_ID: ""}, limit=3, offset=3))
    assert len(page1) == 3 and len(page2) == 1
    got = find(
        populated,
        QueryRequest(level="STUDY", keys={P_ID: "P1"}, return_tags=[0x00201208, 0x00080061]),
    )
    assert got[0].dataset.NumberOfStudyRelatedInstances == "1"
    assert got[0].dataset.ModalitiesInStudy == "CT"


def test_unknown_return_key_comes_back_empty_and_metadata_keys(populated: Archive) -> None:
    got = find(
        populated,
        QueryRequest(
            level="STUDY", keys={P_ID: "P1", 0x00101010: ""}, return_tags=[0x00080090, 0x00181030]
        ),
    )
    ds = got[0].dataset
    assert "PatientAge" in ds and ds.PatientAge in ("", None)
    assert str(ds.ReferringPhysicianName) == "Ref^Doctor"


def test_malformed_values_are_bad_requests(populated: Archive) -> None:
    for keys in (
        {S_DATE: "2020-01-01-x"},
        {S_DATE: "yesterday"},
        {S_UID: "1.2.3/4"},
        {0x00200011: "one"},
    ):
        with pytest.raises(BadRequest):
            find(populated, QueryRequest(level="STUDY", keys=keys))


def test_character_sets_stored_and_matched_as_unicode(archive: Archive) -> None:
    base = require_real_data() / "Encodings" / "DavidClunie"
    for name in (
        "SCSH31",
        "SCSI2",
        "SCSX2",
        "SCSGREEK",
        "SCSRUSS",
        "SCSARAB",
        "SCSHBRW",
        "SCSGERM",
        "SCSFREN",
    ):
        ingest_file(archive, base / name, source="import")
    cases = {
        "山田*": "Yamada^Tarou=山田^太郎=やまだ^たろう",
        "Hong^Gildong": "Hong^Gildong=洪^吉洞=홍^길동",
        "=洪^吉洞": "Hong^Gildong=洪^吉洞=홍^길동",
        "Wang^XiaoDong=王^小东": "Wang^XiaoDong=王^小东",
        "Διονυσιος": "Διονυσιος",
        "Люкceмбypг": "Люкceмбypг",
        "قباني^لنزار": "قباني^لنزار",
        "שרון^דבורה": "שרון^דבורה",
        "Äneas^Rüdiger": "Äneas^Rüdiger",
        "Buc^J*": "Buc^Jérôme",
    }
    for query, expected in cases.items():
        got = find(archive, QueryRequest(level="PATIENT", keys={P_NAME: query}))
        assert [str(m.dataset.PatientName) for m in got] == [expected], query


def test_results_stream_lazily(populated: Archive) -> None:
    from vna.query import run

    iterator = run(populated, QueryRequest(level="IMAGE", keys={P_ID: ""}))
    first = next(iterator)
    assert first.sop_instance_uid
    iterator.close()  # stopping early releases the session


def test_superseded_versions_are_not_matched(archive: Archive, tmp_path: Path) -> None:
    ds = make_dataset(patient_id="V1")
    ingest_file(archive, write(ds, tmp_path / "a.dcm"), source="import")
    ds.SeriesInstanceUID = uid()
    ingest_file(archive, write(ds, tmp_path / "b.dcm"), source="import")
    images = find(archive, QueryRequest(level="IMAGE", keys={P_ID: "V1"}))
    assert len(images) == 1 and images[0].series_uid == ds.SeriesInstanceUID
    series = find(archive, QueryRequest(level="SERIES", keys={P_ID: "V1"}))
    assert [m.series_uid for m in series] == [ds.SeriesInstanceUID]
