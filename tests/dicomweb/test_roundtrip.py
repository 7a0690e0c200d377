"""The two doors together: every real-world file stored by STOW-RS comes back from WADO-RS
byte for byte with ``transfer-syntax=*`` (the bytes as received), and its metadata and
search answers agree with the file."""

from __future__ import annotations

import uuid
from email.parser import BytesParser
from email.policy import HTTP

import pydicom
import pytest
import requests

from tests.dicomweb.conftest import WebServer
from tests.support.data import real_files, require_real_data


def _multipart(files: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
        for data in files
    )
    return body + b"--" + boundary.encode() + b"--\r\n", boundary


def _parts(response: requests.Response) -> list[bytes]:
    head = f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + response.content)
    return [part.get_payload(decode=True) for part in message.iter_parts()]


def test_every_real_file_round_trips_through_stow_and_wado(web_server: WebServer) -> None:
    require_real_data()
    originals = {}
    for path in real_files():
        data = path.read_bytes()
        if data[128:132] != b"DICM":
            continue  # a bare data set is stored with a header added (tested in test_stow)
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        originals.setdefault(str(ds.SOPInstanceUID), (path, ds, data))
    if not originals:
        pytest.skip("no real-world Part 10 files")
    body, boundary = _multipart([data for _p, _ds, data in originals.values()])
    stored = requests.post(
        web_server.url + "/studies",
        data=body,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
        timeout=300,
    )
    assert stored.status_code in (200, 202), stored.text
    failed = stored.json().get("00081198", {}).get("Value", [])
    assert failed == []
    for uid, (path, ds, data) in originals.items():
        url = (
            f"{web_server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{uid}"
        )
        got = requests.get(
            url,
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            timeout=60,
        )
        assert got.status_code == 200, (path.name, got.text[:200])
        assert _parts(got) == [data], path.name
        meta = requests.get(url + "/metadata", timeout=60).json()
        assert meta[0]["00080018"]["Value"] == [uid], path.name
        found = requests.get(
            f"{web_server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances",
            params={"SOPInstanceUID": uid},
            timeout=60,
        ).json()
        assert [o["00080018"]["Value"][0] for o in found] == [uid], path.name
