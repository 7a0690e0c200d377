"""STOW-RS "metadata and bulk data": objects_from_bulk, called directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.support.media import planted_jpeg, planted_pdf, planted_video
from tests.support.validate import assert_valid, find_planted
from vna.convert.stow import objects_from_bulk
from vna.errors import ConversionError, InvalidObject, MissingContext, UnsupportedMedia


def metadata(uri: str, tag: str = "7FE00010", **extra: Any) -> dict[str, Any]:
    """A DICOM JSON object (PS3.18 Annex F) with patient/study context and a bulk data URI."""
    obj: dict[str, Any] = {
        "00100020": {"vr": "LO", "Value": ["STOW-1"]},
        "00100021": {"vr": "LO", "Value": ["HOSP"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00100030": {"vr": "DA", "Value": ["19700101"]},
        "00100040": {"vr": "CS", "Value": ["F"]},
        "00080050": {"vr": "SH", "Value": ["STOW-ACC"]},
        "00081030": {"vr": "LO", "Value": ["Wound follow-up"]},
        "00080020": {"vr": "DA", "Value": ["20240110"]},
        "00082218": {
            "vr": "SQ",
            "Value": [
                {
                    "00080100": {"vr": "SH", "Value": ["85562004"]},
                    "00080102": {"vr": "SH", "Value": ["SCT"]},
                    "00080104": {"vr": "LO", "Value": ["Hand"]},
                }
            ],
        },
        tag: {"vr": "OB", "BulkDataURI": uri},
    }
    obj.update(extra)
    return obj


def test_photo_video_and_pdf_parts(tmp_path: Path) -> None:
    photo = planted_jpeg(tmp_path / "p.jpg")
    clip = planted_video(tmp_path / "c.mp4", frames=6)
    pdf = planted_pdf(tmp_path / "d.pdf")
    parts = {
        "photo-1": ("image/jpeg", photo),
        "http://host/clip": ("video/mp4; codecs=avc1", clip),
        "doc": ("application/pdf", pdf),
    }
    outs = objects_from_bulk(metadata("photo-1"), parts, tmp_path / "out")
    outs += objects_from_bulk(metadata("clip"), parts, tmp_path / "out")
    outs += objects_from_bulk(metadata("doc", "00420011"), parts, tmp_path / "out")
    assert len(outs) == 3
    assert_valid(outs)
    assert find_planted(outs, [b"PLANTED-OWNER", b"PLANTED-SERIAL-123456"]) == []
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in outs]
    assert {ds.PatientID for ds in datasets} == {"STOW-1"}
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert datasets[0].AnatomicRegionSequence[0].CodeValue == "85562004"
    assert [ds.Modality for ds in datasets] == ["XC", "XC", "DOC"]


def test_video_endoscopic_on_request(tmp_path: Path) -> None:
    clip = planted_video(tmp_path / "c.mp4", frames=4, audio=False)
    meta = metadata(
        "c", **{"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.77.1.1.1"]}}
    )
    [out] = objects_from_bulk(meta, {"c": ("video/mp4", clip)}, tmp_path / "out")
    assert pydicom.dcmread(out, stop_before_pixels=True).Modality == "ES"


def test_bad_requests_name_the_reason(tmp_path: Path) -> None:
    photo = planted_jpeg(tmp_path / "p.jpg")
    pdf = planted_pdf(tmp_path / "d.pdf")
    with pytest.raises(InvalidObject, match="no part"):
        objects_from_bulk(metadata("missing"), {"p": ("image/jpeg", photo)}, tmp_path)
    with pytest.raises(InvalidObject, match="no BulkDataURI"):
        objects_from_bulk({"00100020": {"vr": "LO", "Value": ["X"]}}, {}, tmp_path)
    with pytest.raises(UnsupportedMedia, match="text/plain"):
        objects_from_bulk(metadata("p"), {"p": ("text/plain", photo)}, tmp_path)
    with pytest.raises(ConversionError, match="declared image/jpeg but its content is pdf"):
        objects_from_bulk(metadata("p"), {"p": ("image/jpeg", pdf)}, tmp_path)
    no_patient = metadata("p")
    del no_patient["00100020"]
    with pytest.raises(MissingContext):
        objects_from_bulk(no_patient, {"p": ("image/jpeg", photo)}, tmp_path)
    with pytest.raises(InvalidObject, match="malformed"):
        objects_from_bulk(metadata("p", **{"00100030": {"vr": "DA", "Value": 5}}), {}, tmp_path)
