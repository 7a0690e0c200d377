"""QIDO-RS on both back ends, and the JSON answers against the core's Dataset answers."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from tests.dicomweb.conftest import WebServer
from tests.support.factory import make_dataset, uid, write
from vna import dicomjson
from vna.archive import Archive
from vna.ingest import ingest_file
from vna.query import QueryRequest, find
from vna.query_json import search


def _get(server: WebServer, path: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(server.url + path, timeout=30) as resp:
        assert resp.status == 200
        result: list[dict[str, Any]] = json.loads(resp.read())
        return result


def test_search_on_each_back_end(any_web_server: WebServer, tmp_path: Path) -> None:
    archive = any_web_server.archive
    study, series = uid(), uid()
    for n in range(2):
        ds = make_dataset(
            patient_id="BE1",
            patient_name="Łukasz^Żółć",
            study_uid=study,
            series_uid=series,
            instance_number=n + 1,
            charset="ISO_IR 192",
        )
        ingest_file(archive, write(ds, tmp_path / f"{n}.dcm"), source="test")
    ingest_file(archive, write(make_dataset(patient_id="BE2"), tmp_path / "x.dcm"), source="test")
    name = urllib.parse.quote("Łukasz^*")
    (found,) = _get(any_web_server, f"/studies?PatientName={name}")
    assert found["00100010"]["Value"] == [{"Alphabetic": "Łukasz^Żółć"}]
    assert found["00201208"]["Value"] == [2]
    (by_id,) = _get(any_web_server, "/studies?PatientID=BE1&StudyDate=20240101-20240131")
    assert by_id == found
    (one,) = _get(any_web_server, f"/studies/{study}/series")
    assert one["0020000E"]["Value"] == [series]
    instances = _get(any_web_server, f"/studies/{study}/series/{series}/instances?limit=1&offset=1")
    assert [i["00200013"]["Value"] for i in instances] == [[2]]
    assert _get(any_web_server, f"/studies/{uid()}/series") == []


def test_json_answers_agree_with_the_core_datasets(local_archive: Archive, tmp_path: Path) -> None:
    """The fast path and query.run return the same values for the same request."""
    for n, (pid, name, modality) in enumerate(
        [("C1", "Smith^Ann", "CT"), ("C2", "Ng^Bo=吴^波", "MR"), ("C3", "", "US")]
    ):
        ds = make_dataset(
            patient_id=pid, patient_name=name, modality=modality, charset="ISO_IR 192"
        )
        ds.TimezoneOffsetFromUTC = "-0500"
        ingest_file(local_archive, write(ds, tmp_path / f"{n}.dcm"), source="test")
    tags = [0x00080020, 0x00080061, 0x00100010, 0x00100020, 0x0020000D, 0x00201208, 0x00081030]
    for level, keys in (
        ("STUDY", {0x00100020: "C*"}),
        ("SERIES", {0x00080060: "CT\\MR"}),
        ("IMAGE", {0x00100010: "*"}),
        ("PATIENT", {}),
    ):
        request = QueryRequest(level=level, keys=keys, return_tags=tags)
        fast = search(local_archive, request).objects
        slow = [_comparable(m.dataset) for m in find(local_archive, request)]
        assert len(fast) == len(slow) > 0
        for f, s in zip(fast, slow, strict=True):
            for key, item in s.items():
                assert f.get(key, {}).get("Value") == item.get("Value"), (level, key)


def _comparable(ds: Dataset) -> dict[str, Any]:
    obj, _ = dicomjson.dataset_to_json(ds)
    return obj
