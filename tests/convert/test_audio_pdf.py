"""Sound → General Audio Waveform; PDF → Encapsulated PDF: tags and document metadata gone."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pikepdf
import pydicom
import pytest

from tests.support.media import planted_audio, planted_pdf
from tests.support.validate import assert_valid, find_planted
from vna.convert import Context, Options, classify, convert_file
from vna.errors import ConversionError

CONTEXT = Context(
    patient_id="PAT-3",
    patient_name="Poe^Ann",
    study_date="20240107",
    study_time="083000",
    department="Cardiology",
)
TAGS = [b"PLANTED-OWNER", b"PLANTED-TITLE", b"PLANTED-COMMENT", b"Lavf", b"LIST", b"ID3"]


def waveform(path: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    ds = pydicom.dcmread(path)
    group = ds.WaveformSequence[0]
    samples = np.frombuffer(group.WaveformData, "<i2").reshape(-1, group.NumberOfWaveformChannels)
    return group, samples


def test_wav_samples_are_kept_exactly_and_tags_removed(tmp_path: Path) -> None:
    source, tone = planted_audio(tmp_path / "heart.wav", "pcm_s16le")
    assert b"PLANTED-OWNER" in source.read_bytes()
    [out] = convert_file(source, CONTEXT, tmp_path / "out")
    assert_valid([out])
    assert find_planted([out], TAGS) == []
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.9.4.2" and ds.Modality == "AU"
    assert (ds.ContentDate, ds.ContentTime) == ("20240107", "083000")
    group, samples = waveform(out)
    assert group.SamplingFrequency == 8000 and group.NumberOfWaveformChannels == 1
    assert group.ChannelDefinitionSequence[0].ChannelSourceSequence[0].CodeValue == "109115"
    assert np.array_equal(samples[:, 0], tone)


@pytest.mark.parametrize(
    ("name", "codec", "container"),
    [
        ("lung.mp3", "libmp3lame", None),
        ("speech.m4a", "aac", "ipod"),
    ],
)
def test_compressed_sound_is_decoded_to_pcm(
    tmp_path: Path, name: str, codec: str, container: str | None
) -> None:
    source, _tone = planted_audio(tmp_path / name, codec, container, rate=48000, layout="stereo")
    assert classify(source)[0] == "audio"
    [out] = convert_file(source, CONTEXT, tmp_path / "out", Options(audio_source="voice"))
    assert_valid([out])
    assert find_planted([out], TAGS) == []
    group, samples = waveform(out)
    assert group.SamplingFrequency == 44100  # the IOD's limit
    assert group.NumberOfWaveformChannels == 2 and samples.shape[0] > 40000
    assert np.abs(samples).max() > 8000  # the tone, not silence


def test_silent_or_broken_sound_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(8))
    with pytest.raises(ConversionError):
        convert_file(broken, CONTEXT, tmp_path / "out")


def test_pdf_loses_info_xmp_and_old_revisions(tmp_path: Path) -> None:
    source = planted_pdf(tmp_path / "consent.pdf")
    planted = [
        b"PLANTED-OWNER",
        b"PLANTED-OLD-AUTHOR",
        b"PLANTED-SOFTWARE",
        b"PLANTED-XMP-CREATOR",
        b"PLANTED-MODEL",
        b"PLANTED-TITLE",
    ]
    assert all(p in source.read_bytes() for p in planted)
    [out] = convert_file(source, CONTEXT, tmp_path / "out")
    assert_valid([out])
    assert find_planted([out], planted) == []
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1" and ds.Modality == "DOC"
    document = ds.EncapsulatedDocument[: ds.EncapsulatedDocumentLength]
    with pikepdf.open(io.BytesIO(document)) as pdf:
        assert len(pdf.pages) == 1 and "/Info" not in pdf.trailer
        assert "/Metadata" not in pdf.Root
        assert b"Consent form" in pdf.pages[0].Contents.read_bytes()


def test_pdf_metadata_kept_on_purpose(tmp_path: Path) -> None:
    source = planted_pdf(tmp_path / "consent.pdf")
    [out] = convert_file(source, CONTEXT, tmp_path / "out", Options(keep_pdf_metadata=True))
    assert find_planted([out], [b"PLANTED-OWNER", b"PLANTED-XMP-CREATOR"]) != []
    assert_valid([out])


def test_encrypted_and_corrupt_pdfs_are_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked.pdf"
    with pikepdf.open(planted_pdf(tmp_path / "plain.pdf")) as pdf:
        pdf.save(locked, encryption=pikepdf.Encryption(owner="o", user="secret"))
    with pytest.raises(ConversionError, match="encrypted PDF"):
        convert_file(locked, CONTEXT, tmp_path / "out")
    restricted = tmp_path / "restricted.pdf"
    with pikepdf.open(planted_pdf(tmp_path / "plain2.pdf")) as pdf:
        pdf.save(restricted, encryption=pikepdf.Encryption(owner="o", user=""))
    with pytest.raises(ConversionError, match="encrypted PDF"):
        convert_file(restricted, CONTEXT, tmp_path / "out")
    corrupt = tmp_path / "corrupt.pdf"
    corrupt.write_bytes(b"%PDF-1.7\n" + b"garbage " * 50)
    with pytest.raises(ConversionError, match="PDF"):
        convert_file(corrupt, CONTEXT, tmp_path / "out")
