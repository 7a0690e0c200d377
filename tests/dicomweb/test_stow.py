"""STOW-RS (PS3.18 10.5) against a running server: dicomweb-client and raw HTTP."""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.dicomweb.conftest import WebServer, running_web
from tests.support.data import real_files, require_real_data
from tests.support.factory import make_dataset, uid
from tests.support.media import planted_jpeg, planted_pdf
from vna.archive import Archive
from vna.errors import NotFound
from vna.retrieve import find_instances, iter_instance

BOUNDARY = "stow-test-boundary-7f3a"
DICOM_MULTIPART = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multipart(
    parts: list[bytes | tuple[str, bytes] | tuple[str, bytes, str]],
    boundary: str = BOUNDARY,
    close: bool = True,
) -> bytes:
    """A multipart/related body; a part is bytes (application/dicom) or
    (type, bytes[, location])."""
    out = bytearray()
    for part in parts:
        media_type, data, location = (
            ("application/dicom", part, "") if isinstance(part, bytes) else (*part, "")[:3]
        )
        out += f"--{boundary}\r\nContent-Type: {media_type}\r\n".encode()
        if location:
            out += f"Content-Location: {location}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    if close:
        out += f"--{boundary}--\r\n".encode()
    return bytes(out)


class Reply:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def warnings(self) -> list[str]:
        return self.headers.get_all("Warning") or []


def post(
    server: WebServer,
    body: bytes,
    content_type: str | None = DICOM_MULTIPART,
    path: str = "/studies",
    headers: dict[str, str] | None = None,
) -> Reply:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    sent = {"Accept": "application/dicom+json", **(headers or {})}
    if content_type is not None:
        sent["Content-Type"] = content_type
    target = path[1:] if path.startswith("//") else urlsplit(server.url).path + path
    conn.request("POST", target, body=body, headers=sent)
    resp = conn.getresponse()
    reply = Reply(resp.status, resp.headers, resp.read())
    conn.close()
    return reply


def without_meta(data: bytes) -> bytes:
    """The data set of a Part 10 file (after the File Meta Information)."""
    assert data[128:132] == b"DICM"
    return data[144 + int.from_bytes(data[140:144], "little") :]


def referenced(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body.get("00081199", {}).get("Value", [])


def failed(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body.get("00081198", {}).get("Value", [])


def value(item: dict[str, Any], tag: str) -> Any:
    return item[tag]["Value"][0]


def stored_bytes(archive: Archive, sop_uid: str) -> bytes:
    [ref] = find_instances(archive, sop_instance_uid=sop_uid)
    return b"".join(iter_instance(archive, ref))


def is_stored(archive: Archive, sop_uid: str) -> bool:
    try:
        return bool(find_instances(archive, sop_instance_uid=sop_uid))
    except NotFound:
        return False


def spool_files(archive: Archive) -> list[Path]:
    return [p for p in archive.spool_dir.rglob("*") if p.is_file()]


# -- dicomweb-client ----------------------------------------------------------------------


def test_dicomweb_client_stores_and_everything_is_retrievable(any_web_server: WebServer) -> None:
    server = any_web_server
    study = uid()
    datasets = [make_dataset(study_uid=study, instance_number=n, seed=n) for n in range(3)]
    result = server.client().store_instances(datasets=datasets)
    refs = result.ReferencedSOPSequence
    assert {r.ReferencedSOPInstanceUID for r in refs} == {ds.SOPInstanceUID for ds in datasets}
    # dicomweb-client sends a Host header without the port, hence only the path is compared
    assert result.RetrieveURL.endswith(f"/dicom-web/studies/{study}")
    assert f"/dicom-web/studies/{study}/series/" in refs[0].RetrieveURL
    assert "FailedSOPSequence" not in result
    for ds in datasets:  # committed before the response, data set bytes as sent
        stored = stored_bytes(server.archive, ds.SOPInstanceUID)
        assert without_meta(stored) == without_meta(part10(ds))
    # the same call again: identical duplicates are a success
    again = server.client().store_instances(datasets=datasets[:1])
    assert again.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == datasets[0].SOPInstanceUID


def test_dicomweb_client_into_a_named_study(web_server: WebServer) -> None:
    study = uid()
    ds = make_dataset(study_uid=study)
    result = web_server.client().store_instances(datasets=[ds], study_instance_uid=study)
    assert result.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID


# -- request forms ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"',
        f"multipart/related; type=application/dicom; boundary={BOUNDARY}",
        f'Multipart/Related;boundary={BOUNDARY};type="application/dicom";start="<1@x>";charset=utf-8',
        f"multipart/related; boundary={BOUNDARY}",  # no type: taken from the parts
    ],
)
def test_content_type_parameters(web_server: WebServer, content_type: str) -> None:
    ds = make_dataset()
    reply = post(web_server, multipart([part10(ds)]), content_type)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"].startswith("application/dicom+json")
    assert value(referenced(reply.json)[0], "00081155") == ds.SOPInstanceUID


def test_single_part_body_and_lf_only_delimiters(web_server: WebServer) -> None:
    ds = make_dataset()
    reply = post(web_server, part10(ds), "application/dicom")
    assert reply.status == 200, reply.body
    assert stored_bytes(web_server.archive, ds.SOPInstanceUID) == part10(ds)
    other = make_dataset()
    body = multipart([part10(other)]).replace(
        b"\r\n--" + BOUNDARY.encode(), b"\n--" + BOUNDARY.encode()
    )
    body = body.replace(b"application/dicom\r\n\r\n", b"application/dicom\n\n")
    reply = post(web_server, body)
    assert reply.status == 200, reply.body
    assert stored_bytes(web_server.archive, other.SOPInstanceUID) == part10(other)


def test_parts_larger_and_smaller_than_a_read_are_stored_byte_identical(
    web_server: WebServer,
) -> None:
    """A part of several MB is spooled in pieces as it arrives; small parts around it come
    whole within one read; every one is stored as sent and nothing is left in the spool."""
    study = uid()
    big = make_dataset(study_uid=study, rows=1280, columns=1024)  # 2.5 MB of pixels
    small = [make_dataset(study_uid=study, instance_number=i) for i in range(3)]
    objects = [small[0], big, small[1], small[2]]
    reply = post(web_server, multipart([part10(ds) for ds in objects]))
    assert reply.status == 200, reply.body
    assert len(referenced(reply.json)) == 4
    for ds in objects:
        assert stored_bytes(web_server.archive, ds.SOPInstanceUID) == part10(ds)
    assert not spool_files(web_server.archive)


def test_bare_data_set_gets_file_meta_and_a_coercion_warning(web_server: WebServer) -> None:
    ds = make_dataset()
    raw = part10(ds)
    bare = without_meta(raw)
    reply = post(web_server, multipart([bare]))
    assert reply.status == 202, reply.body
    assert value(referenced(reply.json)[0], "00081196") == 0xB000
    stored = stored_bytes(web_server.archive, ds.SOPInstanceUID)
    assert stored[128:132] == b"DICM" and stored.endswith(bare)


# -- bad requests -------------------------------------------------------------------------


def test_bad_requests(web_server: WebServer) -> None:
    ds = part10(make_dataset())
    cases = [
        (multipart([ds]), 'multipart/related; type="application/dicom"', 400, "boundary"),
        (b"garbage without any delimiter", DICOM_MULTIPART, 400, "delimiter"),
        (b"", DICOM_MULTIPART, 400, "empty"),
        (b"", "application/dicom", 400, "empty"),
        (ds, "text/plain", 415, "not accepted"),
        (ds, None, 415, "Content-Type"),
        (
            multipart([ds]),
            f'multipart/related; type="application/dicom+xml"; boundary={BOUNDARY}',
            415,
            "xml",
        ),
        (multipart([("text/plain", b"hello")]), DICOM_MULTIPART, 415, "text/plain"),
    ]
    for body, content_type, status, words in cases:
        reply = post(web_server, body, content_type)
        assert reply.status == status, (content_type, body[:40], reply.body)
        assert reply.headers["Content-Type"].startswith("application/json")
        assert words.lower() in reply.json["error"].lower(), reply.json
    assert post(web_server, ds, "application/dicom", headers={"Accept": "image/png"}).status == 406


def test_upload_limit(local_archive: Archive) -> None:
    ds = part10(make_dataset(rows=64, columns=64))
    with running_web(local_archive, dicomweb_max_upload=len(ds) // 2) as server:
        reply = post(server, multipart([ds]))
        assert reply.status == 413
        assert "limit" in reply.json["error"]
    # a chunked body (no Content-Length) is cut at the limit: the parts received in full
    # before it are stored
    first, second = make_dataset(), make_dataset(rows=256, columns=256)
    body = multipart([part10(first), part10(second)])
    with running_web(local_archive, dicomweb_max_upload=len(body) // 2) as server:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
        pieces = (body[i : i + 65536] for i in range(0, len(body), 65536))
        conn.request(
            "POST", "/dicom-web/studies", body=pieces, headers={"Content-Type": DICOM_MULTIPART}
        )
        resp = conn.getresponse()
        assert resp.status == 413
        assert "1 object(s)" in json.loads(resp.read())["error"]
        conn.close()
        assert is_stored(local_archive, first.SOPInstanceUID)
        assert not is_stored(local_archive, second.SOPInstanceUID)
        assert spool_files(local_archive) == []


# -- outcomes per part --------------------------------------------------------------------


def test_good_bad_and_foreign_parts_give_202_with_both_sequences(web_server: WebServer) -> None:
    good = make_dataset()
    body = multipart([part10(good), b"this is not DICOM at all" * 10, ("text/plain", b"hello")])
    reply = post(web_server, body)
    assert reply.status == 202, reply.body
    assert [value(r, "00081155") for r in referenced(reply.json)] == [good.SOPInstanceUID]
    assert [value(f, "00081197") for f in failed(reply.json)] == [0xC000, 0xC000]
    assert any("text/plain" in w for w in reply.warnings)
    assert is_stored(web_server.archive, good.SOPInstanceUID)


def test_study_mismatch_is_409_with_a900(web_server: WebServer) -> None:
    study = uid()
    ds = make_dataset(study_uid=uid())
    reply = post(web_server, multipart([part10(ds)]), path=f"/studies/{study}")
    assert reply.status == 409, reply.body
    [item] = failed(reply.json)
    assert value(item, "00081197") == 0xA900
    assert value(item, "00081155") == ds.SOPInstanceUID
    assert value(item, "00081150") == ds.SOPClassUID
    assert not is_stored(web_server.archive, ds.SOPInstanceUID)
    assert spool_files(web_server.archive) == []
    # the right study in the same request is stored
    right = make_dataset(study_uid=study)
    reply = post(web_server, multipart([part10(right), part10(ds)]), path=f"/studies/{study}")
    assert reply.status == 202
    assert reply.json["00081190"]["Value"] == [f"{web_server.url}/studies/{study}"]


def test_duplicates(local_archive: Archive) -> None:
    ds = make_dataset()
    with running_web(local_archive, duplicate_policy="reject") as server:
        assert post(server, multipart([part10(ds)])).status == 200
        again = post(server, multipart([part10(ds)]))
        assert again.status == 200  # identical: in the archive, said in a Warning field
        assert "WarningReason" not in str(again.json) and "00081196" not in str(again.json)
        assert any("already stored" in w for w in again.warnings)
        ds.PatientName = "Changed^Name"
        changed = post(server, multipart([part10(ds)]))
        assert changed.status == 409
        assert value(failed(changed.json)[0], "00081197") == 0x0111


def test_xml_response(web_server: WebServer) -> None:
    ds = make_dataset()
    reply = post(web_server, multipart([part10(ds)]), headers={"Accept": "application/dicom+xml"})
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/dicom+xml")
    assert b"NativeDicomModel" in reply.body and ds.SOPInstanceUID.encode() in reply.body


# -- broken uploads -----------------------------------------------------------------------


def _send_raw(server: WebServer, head_length: int, body: bytes) -> bytes:
    """POST with a Content-Length larger than the body, then close the connection."""
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        path = urlsplit(server.url).path + "/studies"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {server.host}\r\nContent-Type: {DICOM_MULTIPART}\r\n"
            f"Content-Length: {head_length}\r\nConnection: close\r\n\r\n"
        ).encode()
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def _wait_for(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def test_connection_lost_mid_part(web_server: WebServer) -> None:
    whole, cut = make_dataset(), make_dataset(rows=128, columns=128)
    body = multipart([part10(whole), part10(cut)])
    sent = body[: len(body) - 20_000]
    _send_raw(web_server, len(body), sent)
    archive = web_server.archive
    _wait_for(lambda: is_stored(archive, whole.SOPInstanceUID))
    _wait_for(lambda: spool_files(archive) == [])
    assert not is_stored(archive, cut.SOPInstanceUID)
    # the server is still up
    assert post(web_server, multipart([part10(make_dataset())])).status == 200


def test_body_without_closing_delimiter(web_server: WebServer) -> None:
    whole, cut = make_dataset(), make_dataset(rows=64, columns=64)
    body = multipart([part10(whole), part10(cut)], close=False)
    reply = post(web_server, body[:-5000])
    assert reply.status == 202, reply.body
    assert [value(r, "00081155") for r in referenced(reply.json)] == [whole.SOPInstanceUID]
    assert [value(f, "00081197") for f in failed(reply.json)] == [0xC000]
    assert not is_stored(web_server.archive, cut.SOPInstanceUID)
    # nothing received in full: 400, nothing stored
    only = make_dataset()
    reply = post(web_server, multipart([part10(only)], close=False)[:-100])
    assert reply.status == 400
    assert not is_stored(web_server.archive, only.SOPInstanceUID)
    assert spool_files(web_server.archive) == []


# -- metadata and bulk data ---------------------------------------------------------------


def _metadata(uri: str, tag: str = "7FE00010") -> dict[str, Any]:
    return {
        "00100020": {"vr": "LO", "Value": ["STOW-BULK-1"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Bulk^Patient"}]},
        "00080020": {"vr": "DA", "Value": ["20240110"]},
        "00081030": {"vr": "LO", "Value": ["Wound follow-up"]},
        tag: {"vr": "OB", "BulkDataURI": uri},
    }


def test_metadata_and_bulk_data(web_server: WebServer, tmp_path: Path) -> None:
    photo = planted_jpeg(tmp_path / "p.jpg").read_bytes()
    pdf = planted_pdf(tmp_path / "d.pdf").read_bytes()
    metadata = [_metadata("photo-1"), _metadata("doc-1", "00420011"), _metadata("missing")]
    body = multipart(
        [
            ("application/dicom+json", json.dumps(metadata).encode()),
            ("image/jpeg", photo, "photo-1"),
            ("application/pdf", pdf, "doc-1"),
        ]
    )
    content_type = f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}'
    reply = post(web_server, body, content_type)
    assert reply.status == 202, reply.body
    refs = referenced(reply.json)
    assert [value(r, "00081150") for r in refs] == [
        "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    ]
    assert [value(f, "00081197") for f in failed(reply.json)] == [0xC000]
    assert any("missing" in w for w in reply.warnings)
    for ref in refs:
        data = stored_bytes(web_server.archive, value(ref, "00081155"))
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        assert ds.PatientID == "STOW-BULK-1"
        assert str(ds.PatientName) == "Bulk^Patient"
    assert spool_files(web_server.archive) == []


# -- routes -------------------------------------------------------------------------------


def test_named_route_takes_its_ingest_route(local_archive: Archive) -> None:
    extra = {"routes": {"http:teaching": {"profile": "teaching", "project": "teach"}}}
    with running_web(local_archive, extra=extra, deid_key_env="") as server:
        ds = make_dataset(patient_name="Routed^Person", patient_id="RID9")
        reply = post(server, multipart([part10(ds)]), path="//teaching/dicom-web/studies")
        assert reply.status == 202, reply.body
        [ref] = referenced(reply.json)
        assert value(ref, "00081196") == 0xB000  # de-identified: coercion of data elements
        assert value(ref, "00081190").startswith(f"{server.origin}/teaching/dicom-web/studies/")
        stored = pydicom.dcmread(io.BytesIO(stored_bytes(server.archive, value(ref, "00081155"))))
        assert stored.PatientName != "Routed^Person"


# -- real-world files ---------------------------------------------------------------------


def test_real_files_are_stored_byte_identical(web_server: WebServer) -> None:
    require_real_data()
    files = real_files()
    reply = post(web_server, multipart([p.read_bytes() for p in files]))
    assert reply.status in (200, 202), reply.body
    body = reply.json
    assert len(referenced(body)) + len(failed(body)) == len(files)
    by_uid = {value(r, "00081155"): r for r in referenced(body)}
    checked = 0
    for path in files:
        data = path.read_bytes()
        if data[128:132] != b"DICM":
            continue
        sop_uid = str(pydicom.dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)
        if sop_uid in by_uid:
            assert stored_bytes(web_server.archive, sop_uid) == data, path.name
            checked += 1
    assert checked >= len(files) // 2
