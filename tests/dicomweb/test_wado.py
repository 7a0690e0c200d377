"""WADO-RS (PS3.18 10.4) and WADO-URI (PS3.18 9) against one populated archive: every
real-world file, a generated CT series with a multi-frame instance, a video and a PDF."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from pydicom.encaps import generate_frames

from tests.dicomweb.conftest import WebServer, running_web
from tests.support import factory
from tests.support.data import real_files, real_ids
from tests.support.media import planted_pdf, planted_video
from vna.archive import Archive
from vna.config import Settings
from vna.convert import Context, convert_file
from vna.ingest import ingest_file

EXPLICIT_LE = "1.2.840.10008.1.2.1"
CONTEXT = Context(
    patient_id="PAT-W", patient_name="Web^Will", accession="ACC-W", study_date="20240110"
)


@dataclass
class Populated:
    server: WebServer
    files: dict[str, Path] = field(default_factory=dict)  # SOP Instance UID -> source file
    ct_study: str = ""
    ct_series: str = ""
    ct_uids: list[str] = field(default_factory=list)  # third is 4 frames
    video: Any = None
    pdf: Any = None

    def ct_url(self, index: int) -> str:
        return (
            f"{self.server.url}/studies/{self.ct_study}/series/{self.ct_series}"
            f"/instances/{self.ct_uids[index]}"
        )

    def url(self, ds: Any, suffix: str = "") -> str:
        return (
            f"{self.server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}{suffix}"
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Populated]:
    root = tmp_path_factory.mktemp("wado")
    archive = Archive.open(Settings(data_dir=root / "data"))
    try:
        with running_web(archive) as server:
            site = Populated(server)
            for path in real_files():
                result = ingest_file(archive, path, source="test")
                site.files[result.sop_instance_uid] = path
            study, series = factory.uid(), factory.uid()
            for i, frames in enumerate((1, 1, 4), start=1):
                ds = factory.make_dataset(
                    study_uid=study, series_uid=series, instance_number=i, frames=frames, seed=i
                )
                ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
                ds.WindowCenter, ds.WindowWidth = 1000, 2000
                path = factory.write(ds, root / f"ct{i}.dcm")
                ingest_file(archive, path, source="test")
                site.ct_uids.append(ds.SOPInstanceUID)
                site.files[ds.SOPInstanceUID] = path
            site.ct_study, site.ct_series = study, series
            for source in (
                planted_video(root / "clip.mp4", audio=False),
                planted_pdf(root / "doc.pdf"),
            ):
                [out] = convert_file(source, CONTEXT, root / "out")
                ingest_file(archive, out, source="test")
                ds = pydicom.dcmread(out, stop_before_pixels=True)
                if source.suffix == ".pdf":
                    site.pdf = ds
                else:
                    site.video = ds
                site.files[ds.SOPInstanceUID] = out
            yield site
    finally:
        archive.close()


def parts(response: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body (header fields, body)."""
    content_type = response.headers["Content-Type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    out = []
    for chunk in response.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk[2:].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        out.append((headers, body[:-2]))
    return out


def get(url: str, accept: str | None = None, **headers: str) -> requests.Response:
    if accept is not None:
        headers["Accept"] = accept
    return requests.get(url, headers=headers, timeout=60)


def source_of(site: Populated, path_id: str) -> tuple[Path, Any]:
    path = next(p for p in site.files.values() if str(p).endswith(path_id))
    return path, pydicom.dcmread(path, force=True)


# -- instances ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path_id", real_ids())
def test_real_file_comes_back_byte_identical_as_stored(site: Populated, path_id: str) -> None:
    path, ds = source_of(site, path_id)
    response = get(site.url(ds), 'multipart/related; type="application/dicom"; transfer-syntax=*')
    assert response.status_code == 200
    [(headers, body)] = parts(response)
    original = path.read_bytes()
    if original[128:132] == b"DICM":
        assert body == original
    else:  # stored as a bare data set: sent with a File Meta Information header in front
        assert body[128:132] == b"DICM" and body.endswith(original)
    assert headers["Content-Location"] == site.url(ds)
    assert pydicom.dcmread(io.BytesIO(body)).SOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.parametrize("path_id", real_ids())
def test_real_file_transcoded_by_default_is_pixel_equal(site: Populated, path_id: str) -> None:
    _path, ds = source_of(site, path_id)
    response = get(site.url(ds), 'multipart/related; type="application/dicom"')
    try:
        expected = ds.pixel_array
    except Exception:
        expected = None
    if expected is None and ds.file_meta.get("TransferSyntaxUID", EXPLICIT_LE) != EXPLICIT_LE:
        assert response.status_code == 406
        return
    assert response.status_code == 200
    [(headers, body)] = parts(response)
    assert headers["Content-Type"] == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
    got = pydicom.dcmread(io.BytesIO(body))
    assert got.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert got.SOPInstanceUID == ds.SOPInstanceUID
    if expected is not None:
        assert np.array_equal(got.pixel_array, expected)


def test_series_streams_every_instance_with_dicomweb_client(site: Populated) -> None:
    client = site.server.client()
    got = client.retrieve_series(site.ct_study, site.ct_series)
    assert [d.SOPInstanceUID for d in got] == site.ct_uids
    study = client.retrieve_study(site.ct_study)
    assert len(study) == 3
    one = client.retrieve_instance(site.ct_study, site.ct_series, site.ct_uids[2])
    original = pydicom.dcmread(site.files[site.ct_uids[2]])
    assert np.array_equal(one.pixel_array, original.pixel_array)


def test_etag_and_if_none_match(site: Populated) -> None:
    url = f"{site.server.url}/studies/{site.ct_study}/series/{site.ct_series}"
    first = get(url)
    assert first.status_code == 200 and first.headers["Cache-Control"] == "private, no-cache"
    etag = first.headers["ETag"]
    again = get(url, **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert get(url, **{"If-None-Match": '"other"'}).status_code == 200
    meta = get(url + "/metadata")
    assert get(url + "/metadata", **{"If-None-Match": meta.headers["ETag"]}).status_code == 304


def test_single_part_application_dicom_for_one_instance(site: Populated) -> None:
    url = site.ct_url(0)
    response = get(url, "application/dicom; transfer-syntax=*")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/dicom")
    assert response.content == site.files[site.ct_uids[0]].read_bytes()
    series = f"{site.server.url}/studies/{site.ct_study}/series/{site.ct_series}"
    assert get(series, "application/dicom").status_code == 406


def test_unknown_uid_is_404_and_bad_accept_406(site: Populated) -> None:
    response = get(f"{site.server.url}/studies/1.2.3.4.5")
    assert response.status_code == 404 and response.json()["status"] == 404
    url = f"{site.server.url}/studies/{site.ct_study}"
    assert get(url, "text/html").status_code == 406
    bad_syntax = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.3'
    assert get(url, bad_syntax).status_code == 406


def test_video_as_its_bitstream(site: Populated) -> None:
    response = get(site.url(site.video), 'multipart/related; type="video/mp4"')
    assert response.status_code == 200
    [(headers, body)] = parts(response)
    assert headers["Content-Type"].startswith("video/mp4")
    assert body[4:8] == b"ftyp"
    rendered = get(site.url(site.video, "/rendered"), "video/mp4")
    assert rendered.status_code == 200 and rendered.content == body
    assert rendered.headers["Content-Type"] == "video/mp4"


def test_pdf_rendered_as_pdf(site: Populated) -> None:
    response = get(site.url(site.pdf, "/rendered"), "application/pdf")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    assert get(site.url(site.pdf, "/rendered"), "image/jpeg").status_code == 406


# -- metadata and bulk data --------------------------------------------------------------------


def test_series_metadata_with_resolvable_bulk_data(site: Populated) -> None:
    client = site.server.client()
    objects = client.retrieve_series_metadata(site.ct_study, site.ct_series)
    assert [o["00080018"]["Value"][0] for o in objects] == site.ct_uids
    pixel = objects[2]["7FE00010"]
    base = site.ct_url(2)
    # dicomweb-client sends a Host header without the port: the URI must still name it
    assert pixel["BulkDataURI"] == base + "/bulkdata/7FE00010"
    [value] = client.retrieve_bulkdata(pixel["BulkDataURI"])
    [value] = client.retrieve_bulkdata(base + "/bulkdata/7FE00010")
    assert value == pydicom.dcmread(site.files[site.ct_uids[2]]).PixelData
    single = get(base + "/bulkdata/7FE00010", "application/octet-stream")
    assert single.content == value


def test_instance_metadata_matches_the_file(site: Populated) -> None:
    _path, ds = source_of(site, "Lena-utf8.dcm")
    client = site.server.client()
    obj = client.retrieve_instance_metadata(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    )
    assert obj["00100010"]["Value"][0]["Alphabetic"] == str(ds.PatientName)
    response = get(site.url(ds, "/metadata"), **{"Accept-Encoding": "gzip"})
    assert response.headers["Content-Type"].startswith("application/dicom+json")
    assert get(site.url(ds, "/metadata"), "image/jpeg").status_code == 406
    study = get(f"{site.server.url}/studies/{site.ct_study}/metadata").json()
    assert len(study) == 3
    direct = get(site.url(ds, "/metadata")).json()[0]
    assert direct["7FE00010"]["BulkDataURI"] == site.url(ds, "/bulkdata/7FE00010")
    direct = get(site.url(ds, "/metadata")).json()[0]
    assert direct["7FE00010"]["BulkDataURI"] == site.url(ds, "/bulkdata/7FE00010")


# -- frames ------------------------------------------------------------------------------------


def test_native_frames_in_request_order_with_repeats(site: Populated) -> None:
    original = pydicom.dcmread(site.files[site.ct_uids[2]])
    client = site.server.client()
    frames = client.retrieve_instance_frames(
        site.ct_study, site.ct_series, site.ct_uids[2], [2, 4, 2]
    )
    arr = original.pixel_array
    assert frames == [arr[1].tobytes(), arr[3].tobytes(), arr[1].tobytes()]


def test_compressed_frames_as_stored_and_decoded(site: Populated) -> None:
    _path, ds = source_of(site, "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm")
    client = site.server.client()
    [jpeg] = client.retrieve_instance_frames(
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        ds.SOPInstanceUID,
        [1],
        media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),),
    )
    assert jpeg == next(generate_frames(ds.PixelData, number_of_frames=1))
    response = get(site.url(ds, "/frames/1"), 'multipart/related; type="application/octet-stream"')
    [(headers, native)] = parts(response)
    assert headers["Content-Type"] == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
    assert native == ds.pixel_array.tobytes()
    star = get(
        site.url(ds, "/frames/1"),
        'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    )
    [(headers, body)] = parts(star)
    assert headers["Content-Type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert body == jpeg
    assert get(site.url(ds, "/frames/1"), 'multipart/related; type="image/jp2"').status_code == 406


@pytest.mark.parametrize(
    ("frames", "status"), [("0", 400), ("x", 400), ("1,,2", 400), ("5", 404), ("99", 404)]
)
def test_bad_frame_lists(site: Populated, frames: str, status: int) -> None:
    url = site.ct_url(2)
    response = get(f"{url}/frames/{frames}")
    assert response.status_code == status
    assert response.json()["status"] == status


# -- rendered and thumbnails -------------------------------------------------------------------


def _image(response: requests.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_rendered_instance_jpeg_png_and_viewport(site: Populated) -> None:
    _path, ds = source_of(site, "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm")
    jpeg = _image(get(site.url(ds, "/rendered")))
    assert jpeg.format == "JPEG" and jpeg.size == (ds.Columns, ds.Rows) and jpeg.mode == "RGB"
    png = _image(get(site.url(ds, "/rendered?viewport=64,64"), "image/png"))
    assert png.format == "PNG" and png.size == (64, 48)  # aspect ratio kept
    crop = _image(get(site.url(ds, "/rendered?viewport=10,10,0,0,20,20"), "image/png"))
    assert crop.size == (10, 10)
    client = site.server.client()
    data = client.retrieve_instance_rendered(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, media_types=("image/png",)
    )
    assert Image.open(io.BytesIO(data)).format == "PNG"


def test_rendered_windowing(site: Populated) -> None:
    ds = pydicom.dcmread(site.files[site.ct_uids[0]])
    url = site.ct_url(0)
    values = ds.pixel_array.astype(float) - 1024
    default = np.asarray(_image(get(url + "/rendered", "image/png")))
    # the object's window 1000/2000 (linear): values map into 0..255
    expected = np.clip(np.rint(((values - 999.5) / 1999 + 0.5) * 255), 0, 255)
    assert np.abs(default.astype(float) - expected).max() <= 1
    black = np.asarray(_image(get(url + "/rendered?window=100000,10", "image/png")))
    white = np.asarray(_image(get(url + "/rendered?window=-100000,10,sigmoid", "image/png")))
    assert black.max() == 0 and white.min() == 255
    assert get(url + "/rendered?window=1,2,cubic").status_code == 400
    assert get(url + "/rendered?viewport=0,5").status_code == 400
    assert get(url + "/rendered?quality=101").status_code == 400


def test_rendered_frames_series_and_thumbnails(site: Populated) -> None:
    series = f"{site.server.url}/studies/{site.ct_study}/series/{site.ct_series}"
    url = f"{series}/instances/{site.ct_uids[2]}"
    frames = get(url + "/frames/1,3/rendered", 'multipart/related; type="image/png"')
    assert [Image.open(io.BytesIO(b)).size for _h, b in parts(frames)] == [(16, 16), (16, 16)]
    rendered = get(series + "/rendered", 'multipart/related; type="image/jpeg"')
    assert len(parts(rendered)) == 3
    for target in (f"{site.server.url}/studies/{site.ct_study}", series, url, url + "/frames/2"):
        thumb = _image(get(target + "/thumbnail"))
        assert thumb.format == "JPEG" and thumb.size == (16, 16)
    _path, ds = source_of(site, "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm")
    assert _image(get(site.url(ds, "/thumbnail"))).size == (128, 96)


def test_monochrome1_is_inverted(site: Populated, tmp_path: Path) -> None:
    ds = factory.make_dataset(rows=4, columns=4)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelData = np.array([[0] * 4, [4095] * 4] * 2, dtype=np.uint16).tobytes()
    ingest_file(site.server.archive, factory.write(ds, tmp_path / "m1.dcm"), source="test")
    image = np.asarray(_image(get(site.url(ds, "/rendered"), "image/png")))
    assert image[0, 0] == 255 and image[1, 0] == 0


# -- WADO-URI ----------------------------------------------------------------------------------


def _uri(site: Populated, ds: Any, root: str | None = None, **params: str) -> requests.Response:
    query = {
        "requestType": "WADO",
        "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ds.SOPInstanceUID,
        **params,
    }
    return requests.get((root or site.server.url) + "/wado", params=query, timeout=60)


def test_wado_uri_object_and_rendered(site: Populated) -> None:
    path, ds = source_of(site, "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm")
    jpeg = _image(_uri(site, ds))
    assert jpeg.format == "JPEG" and jpeg.size == (ds.Columns, ds.Rows)
    small = _image(
        _uri(site, ds, site.server.origin, rows="48", columns="100", contentType="image/png")
    )
    assert small.size == (64, 48)
    stored = _uri(
        site, ds, contentType="application/dicom", transferSyntax=ds.file_meta.TransferSyntaxUID
    )
    assert stored.headers["Content-Type"] == "application/dicom"
    assert stored.content == path.read_bytes()
    default = pydicom.dcmread(io.BytesIO(_uri(site, ds, contentType="application/dicom").content))
    assert default.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert np.array_equal(default.pixel_array, ds.pixel_array)
    pdf = _uri(site, site.pdf, contentType="application/pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert _uri(site, site.pdf).headers["Content-Type"] == "application/dicom"


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"requestType": "RAW"}, 400),
        ({"objectUID": ""}, 400),
        ({"objectUID": "1.2.3.999"}, 404),
        ({"anonymize": "yes"}, 400),
        ({"windowCenter": "40"}, 400),
        ({"contentType": "application/dicom", "rows": "10"}, 400),
        ({"contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2.4.100"}, 406),
        ({"contentType": "text/html"}, 406),
        ({"frameNumber": "9"}, 404),
    ],
)
def test_wado_uri_errors(site: Populated, params: dict[str, str], status: int) -> None:
    _path, ds = source_of(site, "TransferSyntaxes/1.2.840.10008.1.2.1.dcm")
    response = _uri(site, ds, **params)
    assert response.status_code == status, response.text
    assert json.loads(response.content)["status"] == status
