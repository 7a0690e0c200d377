"""Sound recordings (WAV, MP3, M4A/AAC, FLAC, Ogg) → General Audio Waveform Storage
(PS3.3 A.34.5).

The sound is decoded with PyAV to signed 16-bit PCM, mono or stereo, at no more than
44.1 kHz (the IOD's limits, A.34.5.4), and written as one multiplex group (C.10.9). Only the
samples are kept: container tags (artist, title, recording device, dates, location) never
reach the object.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from vna.convert.common import Job, code_item, output_path, write_part10
from vna.errors import ConversionError

GENERAL_AUDIO = "1.2.840.10008.5.1.4.1.1.9.4.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
MAX_RATE = 44100
#: Audio Channel Source (CID 3000).
SOURCES = {
    "voice": ("109110", "Voice"),
    "ambient": ("109112", "Ambient room environment"),
    "doppler": ("109113", "Doppler audio"),
    "phonocardiogram": ("109114", "Phonocardiogram"),
    "physiological": ("109115", "Physiological audio signal"),
}
#: Largest WaveformData value (a 32-bit length).
MAX_BYTES = 0xFFFFFFFE


def decode(path: Path) -> tuple[np.ndarray, int]:
    """Samples as int16 of shape (samples, channels) and the sampling rate.

    Raises:
        ConversionError: unreadable, no sound stream, or empty.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ConversionError("the file has no sound stream")
            stream = container.streams.audio[0]
            channels = 1 if stream.codec_context.channels == 1 else 2
            rate = min(stream.codec_context.sample_rate or MAX_RATE, MAX_RATE)
            resampler = av.AudioResampler(
                format="s16", layout="mono" if channels == 1 else "stereo", rate=rate
            )
            chunks: list[np.ndarray] = []
            size = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    size += chunks[-1].nbytes
                if size > MAX_BYTES:
                    raise ConversionError("the recording is too long for one waveform (4 GiB)")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as exc:
        raise ConversionError(f"unreadable sound file: {exc}") from exc
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    if samples.size == 0:
        raise ConversionError("the sound stream holds no sample")
    return samples.astype("<i2").reshape(-1, channels), rate


def convert_audio(job: Job) -> list[Path]:
    """Convert one recording into one General Audio Waveform object.

    Raises:
        ConversionError: unreadable or empty.
    """
    samples, rate = decode(job.path)
    source = SOURCES.get(job.options.audio_source)
    if source is None:
        raise ConversionError(
            f"unknown audio source {job.options.audio_source!r}; one of {', '.join(SOURCES)}"
        )
    context = job.context
    ds = job.dataset("audio", GENERAL_AUDIO, EXPLICIT_VR_LE, job.options.audio_source)
    # Waveform Identification (C.10.8): Type 1 dates; the study's (a recording's own dates
    # are device metadata).
    ds.ContentDate = context.study_date
    ds.ContentTime = context.study_time
    ds.AcquisitionDateTime = context.study_date + context.study_time
    ds.AcquisitionContextSequence = DicomSequence()  # Acquisition Context (C.7.6.14)
    ds.WaveformSequence = DicomSequence([_multiplex_group(samples, rate, source)])
    if rate == MAX_RATE:
        job.warnings.append(f"sampled at {rate} Hz (the IOD's limit)")
    return [write_part10(ds, output_path(job.out_dir, ds))]


def _multiplex_group(samples: np.ndarray, rate: int, source: tuple[str, str]) -> Dataset:
    """One Waveform Sequence item (C.10.9.1) holding interleaved 16-bit channels."""
    group = Dataset()
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = samples.shape[1]
    group.NumberOfWaveformSamples = samples.shape[0]
    group.SamplingFrequency = str(rate)
    group.MultiplexGroupLabel = "AUDIO"
    channels = []
    for index in range(samples.shape[1]):
        channel = Dataset()
        channel.ChannelLabel = ("LEFT", "RIGHT")[index] if samples.shape[1] == 2 else "MONO"
        channel.ChannelSourceSequence = DicomSequence([code_item(source[0], "DCM", source[1])])
        channel.ChannelSampleSkew = "0"  # Type 1C: the channels are sampled together
        channel.WaveformBitsStored = 16
        channels.append(channel)
    group.ChannelDefinitionSequence = DicomSequence(channels)
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.WaveformData = samples.tobytes()
    return group
