"""Getting things back out: instances, their bytes, precomputed metadata, frames, bulk data.

Frames are read by byte range from the offsets recorded at ingest, so a single tile of a
50,000-frame slide costs one index lookup and one ranged read. Metadata comes from the
index, never from the file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.engine import Connection

from storage import ObjectNotFound, StoreError
from vna import dicomjson
from vna.archive import Archive
from vna.errors import NotFound, StorageError
from vna.index.tables import Frame, Instance, Series, Study, plain


@dataclass(frozen=True)
class InstanceRef:
    """Where one current instance is and what it is."""

    pk: int
    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    storage_key: str
    size: int
    sha256: str
    number_of_frames: int
    pixel_encapsulated: bool
    pixel_offset: int | None
    pixel_length: int | None
    frame_length: int | None
    frames_indexed: int
    is_video: bool
    bits_allocated: int | None
    rows: int | None
    columns: int | None


_REF_COLUMNS = plain(
    Instance.pk,
    Study.study_instance_uid,
    Series.series_instance_uid,
    Instance.sop_instance_uid,
    Instance.sop_class_uid,
    Instance.transfer_syntax_uid,
    Instance.storage_key,
    Instance.size,
    Instance.sha256,
    Instance.number_of_frames,
    Instance.pixel_encapsulated,
    Instance.pixel_offset,
    Instance.pixel_length,
    Instance.frame_length,
    Instance.frames_indexed,
    Instance.is_video,
    Instance.bits_allocated,
    Instance.rows,
    Instance.columns,
)


def _ref(row: Sequence[object]) -> InstanceRef:
    values = list(row)
    values[9] = values[9] or 1  # NumberOfFrames absent = one frame
    return InstanceRef(*values)  # type: ignore[arg-type]


def _select_refs() -> Any:
    return (
        select(*_REF_COLUMNS)
        .join(Series, Instance.series_fk == Series.pk)
        .join(Study, Series.study_fk == Study.pk)
        .where(Instance.is_current.is_(True))
    )


def find_instances(
    archive: Archive,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> list[InstanceRef]:
    """Current instances of a study, a series or one instance, in series/instance order.

    Raises:
        NotFound: nothing matches.
    """
    stmt = _select_refs()
    if study_uid:
        stmt = stmt.where(Study.study_instance_uid == study_uid)
    if series_uid:
        stmt = stmt.where(Series.series_instance_uid == series_uid)
    if sop_instance_uid:
        stmt = stmt.where(Instance.sop_instance_uid == sop_instance_uid)
    stmt = stmt.order_by(Series.series_number, Series.pk, Instance.instance_number, Instance.pk)
    with archive.db.reading() as session:
        refs = [_ref(row) for row in session.execute(stmt)]
    if not refs:
        what = sop_instance_uid or series_uid or study_uid or "anything"
        raise NotFound(f"no stored instance matches {what}")
    return refs


def get_instance(
    archive: Archive,
    sop_instance_uid: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> InstanceRef:
    """One current instance.

    Raises:
        NotFound: no such instance (in that study/series).
    """
    return find_instances(archive, study_uid, series_uid, sop_instance_uid)[0]


def open_instance(archive: Archive, ref: InstanceRef) -> BinaryIO:
    """The stored Part 10 file as a readable stream (close it).

    Raises:
        StorageError: the object is missing from the store.
    """
    try:
        return archive.store.open(ref.storage_key)
    except ObjectNotFound as exc:
        raise StorageError(f"object of {ref.sop_instance_uid} is missing from the store") from exc
    except StoreError as exc:
        raise StorageError(str(exc)) from exc


def iter_instance(archive: Archive, ref: InstanceRef, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """The stored bytes in chunks (memory bounded whatever the size)."""
    try:
        yield from archive.store.iter_chunks(ref.storage_key, chunk_size=chunk_size)
    except ObjectNotFound as exc:
        raise StorageError(f"object of {ref.sop_instance_uid} is missing from the store") from exc


def metadata_texts(archive: Archive, refs: Sequence[InstanceRef]) -> Iterator[str]:
    """Precomputed DICOM JSON text of each instance (bulk data URIs relative to the instance)."""
    pks = [r.pk for r in refs]
    with archive.db.reading() as session:
        for start in range(0, len(pks), 500):
            chunk = pks[start : start + 500]
            result = session.execute(
                select(*plain(Instance.pk, Instance.metadata_json)).where(Instance.pk.in_(chunk))
            )
            rows = {pk: blob for pk, blob in result}
            for pk in chunk:
                yield dicomjson.unpack_text(rows[pk])


def metadata(archive: Archive, ref: InstanceRef) -> dict[str, object]:
    """Precomputed DICOM JSON of one instance."""
    return json.loads(next(metadata_texts(archive, [ref])))


def _frame_rows(session: Connection, ref: InstanceRef, numbers: Sequence[int]) -> dict[int, Any]:
    """Frame rows (number, offset, length, fragments) by frame number."""
    rows = session.execute(
        select(*plain(Frame.number, Frame.offset, Frame.length, Frame.fragments)).where(
            Frame.instance_fk == ref.pk, Frame.number.in_(list(set(numbers)))
        )
    )
    return {row.number: row for row in rows}


def frame_ranges(
    archive: Archive, ref: InstanceRef, numbers: Sequence[int]
) -> list[tuple[int, int, int]]:
    """(offset, length, fragments) of each requested frame (1-based), in request order.

    Raises:
        NotFound: a frame number outside 1..NumberOfFrames, or an object without pixel data.
        StorageError: the frames of this object are not indexed (decode it instead).
    """
    for n in numbers:
        if n < 1 or n > ref.number_of_frames:
            raise NotFound(f"frame {n} does not exist (the object has {ref.number_of_frames})")
    if ref.pixel_offset is None:
        raise NotFound(f"{ref.sop_instance_uid} has no pixel data")
    if not ref.pixel_encapsulated:
        if not ref.frame_length:
            raise StorageError("frames of this object are not byte-addressable")
        return [
            (ref.pixel_offset + (n - 1) * ref.frame_length, ref.frame_length, 1) for n in numbers
        ]
    if not ref.frames_indexed:
        raise StorageError("frames of this object are not indexed")
    with archive.db.reading() as session:
        rows = _frame_rows(session, ref, numbers)
    return [(rows[n].offset, rows[n].length, rows[n].fragments) for n in numbers]


def strip_item_headers(span: bytes, fragments: int) -> bytes:
    """The codestream of a frame span: with several fragments, their values without the
    item headers (the span then starts at the first item header, see dicomfile.Frame)."""
    if fragments <= 1:
        return span
    out = bytearray()
    pos = 0
    while pos + 8 <= len(span):
        _tag, length = struct.unpack("<II", span[pos : pos + 8])
        out += span[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return bytes(out)


def frames(archive: Archive, ref: InstanceRef, numbers: Sequence[int]) -> list[bytes]:
    """The bytes of each requested frame as stored (compressed frames stay compressed)."""
    out = []
    for offset, length, fragments in frame_ranges(archive, ref, numbers):
        try:
            span = archive.store.read_range(ref.storage_key, offset, length)
        except ObjectNotFound as exc:
            raise StorageError(f"object of {ref.sop_instance_uid} is missing") from exc
        out.append(strip_item_headers(span, fragments))
    return out


def bulk_range(archive: Archive, ref: InstanceRef, path: str) -> tuple[int, int]:
    """(offset, length) of a bulk data value recorded at ingest.

    Raises:
        NotFound: no bulk data at that tag path.
    """
    with archive.db.reading() as session:
        text = session.execute(select(Instance.bulk_json).where(Instance.pk == ref.pk)).scalar_one()
    table = json.loads(text) if text else {}
    if path not in table:
        raise NotFound(f"no bulk data at {path} in {ref.sop_instance_uid}")
    offset, length = table[path]
    return int(offset), int(length)


def has_checksum(archive: Archive, ref: InstanceRef) -> bool:
    """Whether the stored bytes still hash to the checksum recorded at ingest."""
    import hashlib

    digest = hashlib.sha256()
    try:
        for chunk in archive.store.iter_chunks(ref.storage_key):
            digest.update(chunk)
    except ObjectNotFound:
        return False
    return digest.hexdigest() == ref.sha256


# -- frames for the web front end: one session, one ranged read --------------------------------

#: Native syntaxes whose stored frame bytes are not the little-endian frames DICOMweb sends
#: (big endian needs swapping; deflated offsets point into the inflated stream).
_NOT_ADDRESSABLE = frozenset({"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"})


def frames_addressable(ref: InstanceRef) -> bool:
    """Whether the frames can be read by byte range as stored (no decoding)."""
    if ref.pixel_offset is None or ref.transfer_syntax_uid in _NOT_ADDRESSABLE:
        return False
    if ref.pixel_encapsulated:
        return ref.frames_indexed > 0
    return bool(ref.frame_length)


def check_frame_numbers(ref: InstanceRef, numbers: Sequence[int]) -> None:
    """Raises NotFound for a frame number outside 1..NumberOfFrames or no pixel data."""
    if ref.pixel_offset is None and not ref.rows:
        raise NotFound(f"{ref.sop_instance_uid} has no pixel data")
    for n in numbers:
        if n < 1 or n > ref.number_of_frames:
            raise NotFound(f"frame {n} does not exist (the object has {ref.number_of_frames})")


def locate_frames(
    archive: Archive, study_uid: str, series_uid: str, sop_instance_uid: str, numbers: Sequence[int]
) -> tuple[InstanceRef, list[tuple[int, int, int]] | None]:
    """The instance and the (offset, length, fragments) of each requested frame, in request
    order, in one index session; None for the spans when the frames must be decoded.

    Raises:
        NotFound: no such instance, no pixel data, or a frame number out of range.
    """
    stmt = (
        _select_refs()
        .where(Study.study_instance_uid == study_uid)
        .where(Series.series_instance_uid == series_uid)
        .where(Instance.sop_instance_uid == sop_instance_uid)
    )
    with archive.db.reading() as session:
        row = session.execute(stmt).first()
        if row is None:
            raise NotFound(f"no stored instance matches {sop_instance_uid}")
        ref = _ref(row)
        check_frame_numbers(ref, numbers)
        if not frames_addressable(ref):
            return ref, None
        if not ref.pixel_encapsulated:
            size = ref.frame_length or 0
            offset = ref.pixel_offset or 0
            return ref, [(offset + (n - 1) * size, size, 1) for n in numbers]
        rows = _frame_rows(session, ref, numbers)
        return ref, [(rows[n].offset, rows[n].length, rows[n].fragments) for n in numbers]


def read_spans(
    archive: Archive, ref: InstanceRef, spans: Sequence[tuple[int, int, int]]
) -> list[bytes]:
    """The codestream of each frame span (item headers removed)."""
    out = []
    try:
        for offset, length, fragments in spans:
            out.append(
                strip_item_headers(
                    archive.store.read_range(ref.storage_key, offset, length), fragments
                )
            )
    except ObjectNotFound as exc:
        raise StorageError(f"object of {ref.sop_instance_uid} is missing from the store") from exc
    except StoreError as exc:
        raise StorageError(str(exc)) from exc
    return out


def attributes(archive: Archive, ref: InstanceRef) -> Any:
    """The instance's attributes as a pydicom Dataset from the precomputed metadata (bulk
    data values empty)."""
    return dicomjson.json_to_dataset(json.loads(next(metadata_texts(archive, [ref]))))


def decode_frames(
    archive: Archive, ref: InstanceRef, numbers: Sequence[int], attrs: Any
) -> list[Any]:
    """Decoded pixel arrays (numpy, colour as RGB) of the requested frames.

    Frames readable by range are decoded one by one from their own bytes; others by reading
    the object.

    Raises:
        NotFound: a frame number out of range or no pixel data.
        NotAcceptable: no decoder for the stored transfer syntax.
    """
    from vna import render

    check_frame_numbers(ref, numbers)
    if frames_addressable(ref):
        _ref2, spans = locate_frames(
            archive, ref.study_uid, ref.series_uid, ref.sop_instance_uid, numbers
        )
        assert spans is not None
        return [
            render.decode_frame(attrs, ref.transfer_syntax_uid, data)
            for data in read_spans(archive, ref, spans)
        ]
    return _decode_from_file(archive, ref, numbers)


def _decode_from_file(archive: Archive, ref: InstanceRef, numbers: Sequence[int]) -> list[Any]:
    import numpy as np
    import pydicom

    from vna.errors import NotAcceptable

    with open_instance(archive, ref) as fp:
        try:
            ds = pydicom.dcmread(fp, force=True)
            arr = np.asarray(ds.pixel_array)
        except Exception as exc:
            raise NotAcceptable(
                f"cannot decode the pixel data of {ref.sop_instance_uid}: {exc}"
            ) from exc
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames <= 1:
        return [arr for _ in numbers]
    return [arr[n - 1] for n in numbers]


def video_span(archive: Archive, ref: InstanceRef) -> tuple[int, int, int]:
    """(offset, length, fragments) of a video object's whole bitstream (indexed as frame 1).

    Raises:
        NotFound: the object is not a video or its stream is not indexed.
    """
    if not ref.is_video or not ref.frames_indexed:
        raise NotFound(f"{ref.sop_instance_uid} holds no indexed video stream")
    with archive.db.reading() as session:
        row = _frame_rows(session, ref, [1])[1]
        return row.offset, row.length, row.fragments


def read_bulk(archive: Archive, ref: InstanceRef, path: str) -> bytes:
    """The value of a bulk data element recorded at ingest.

    Raises:
        NotFound: no bulk data at that tag path.
    """
    try:
        offset, length = bulk_range(archive, ref, path)
    except NotFound:
        return _bulk_from_file(archive, ref, path)
    return read_spans(archive, ref, [(offset, length, 1)])[0]


def _bulk_from_file(archive: Archive, ref: InstanceRef, path: str) -> bytes:
    """A bulk data value whose offset was not recorded at ingest, read from the object."""
    import pydicom

    try:
        tag_path = dicomjson.parse_path_text(path)
    except (ValueError, IndexError) as exc:
        raise NotFound(f"no bulk data at {path} in {ref.sop_instance_uid}") from exc
    with open_instance(archive, ref) as fp:
        node: Any = pydicom.dcmread(fp, force=True)
    for i, step in enumerate(tag_path):
        try:
            node = node[step] if i % 2 else node[step].value
        except (KeyError, IndexError, TypeError) as exc:
            raise NotFound(f"no bulk data at {path} in {ref.sop_instance_uid}") from exc
    if not isinstance(node, (bytes, bytearray)):
        raise NotFound(f"no bulk data at {path} in {ref.sop_instance_uid}")
    return bytes(node)


def representation_tag(*parts: object) -> str:
    """A strong entity tag over the parts that decide a representation (checksums, syntax,
    request parameters): it changes whenever any instance is replaced by a new version."""
    import hashlib

    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode("utf-8"))
        digest.update(b"\x00")
    return '"' + digest.hexdigest()[:40] + '"'
