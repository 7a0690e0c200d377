"""Reading a stored or incoming DICOM Part 10 file without loading its pixel data.

The header is parsed up to Pixel Data — by :mod:`vna.fastread` when the file is of the common
simple kind, else by pydicom; the pixel data element itself is walked by hand (item headers
only) so that the offset and length of every frame in the file is known, and whatever follows
it is parsed again. Memory stays bounded by the header size, whatever the number or size of
the frames.
"""

from __future__ import annotations

import itertools
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_partial
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from vna import dicomjson
from vna.errors import MissingAttribute, NotDicom, TruncatedObject, VnaError

#: Values above this size are not read into memory while parsing the header.
DEFER_SIZE = 256 * 1024
PIXEL_TAGS = (0x7FE00010, 0x7FE00009, 0x7FE00008)
ITEM_TAG = 0xFFFEE000
SEQ_DELIM_TAG = 0xFFFEE0DD
#: Transfer syntaxes whose single encapsulated stream is a video, not a set of frames.
VIDEO_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.100",
        "1.2.840.10008.1.2.4.100.1",
        "1.2.840.10008.1.2.4.101",
        "1.2.840.10008.1.2.4.101.1",
        "1.2.840.10008.1.2.4.102",
        "1.2.840.10008.1.2.4.102.1",
        "1.2.840.10008.1.2.4.103",
        "1.2.840.10008.1.2.4.103.1",
        "1.2.840.10008.1.2.4.104",
        "1.2.840.10008.1.2.4.104.1",
        "1.2.840.10008.1.2.4.105",
        "1.2.840.10008.1.2.4.105.1",
        "1.2.840.10008.1.2.4.106",
        "1.2.840.10008.1.2.4.106.1",
        "1.2.840.10008.1.2.4.107",
        "1.2.840.10008.1.2.4.108",
    }
)
MAX_UID_LENGTH = 64
_NOT_IN_UID = frozenset("/\\?#% ")
_PLAIN_UID = re.compile(r"[0-9.]+")  # the usual case of the isdigit() test, without a loop


@dataclass(frozen=True)
class Frame:
    """Where one frame lies in the file. With one fragment, ``offset``/``length`` are exactly
    the codestream; with several, the span starts at the first fragment's item header and
    holds every fragment with its header (strip them to get the codestream)."""

    number: int
    offset: int
    length: int
    fragments: int = 1


@dataclass
class PixelInfo:
    """The pixel data element as found in the file."""

    tag: int
    vr: str
    value_offset: int
    value_length: int  # -1 when encapsulated (undefined length)
    encapsulated: bool
    number_of_frames: int
    frame_length: int | None  # native frames: bytes per frame, None for packed 1-bit
    frames: list[Frame] = field(default_factory=list)
    is_video: bool = False


@dataclass
class ParsedObject:
    """What ingest needs to know about a Part 10 file.

    ``dataset`` and ``file_meta`` (pydicom objects that ingest itself does not need) are
    parsed from ``path`` on first access when the fast reader made the object: building them
    is most of the cost it saves. The file must then still be at ``path``.
    """

    path: Path
    transfer_syntax: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    pixel: PixelInfo | None
    bulk: dict[str, tuple[int, int]]  # tag path text -> (offset, length) in the file
    metadata: dict[str, Any]  # DICOM JSON, bulk data as relative URIs
    warnings: list[str]
    has_preamble: bool
    dataset_offset: int  # where the data set (after the file meta group) starts
    _dataset: Dataset | None = field(default=None, repr=False, compare=False)
    _file_meta: FileMetaDataset | None = field(default=None, repr=False, compare=False)

    @property
    def dataset(self) -> Dataset:
        """Everything but pixel data; large values deferred."""
        if self._dataset is None:
            self._dataset, self._file_meta = _pydicom_datasets(self.path)
        return self._dataset

    @dataset.setter
    def dataset(self, value: Dataset) -> None:
        self._dataset = value

    @property
    def file_meta(self) -> FileMetaDataset:
        """The File Meta Information group (PS3.10 7.1)."""
        if self._file_meta is None:
            self._dataset, self._file_meta = _pydicom_datasets(self.path)
        return self._file_meta

    @file_meta.setter
    def file_meta(self, value: FileMetaDataset) -> None:
        self._file_meta = value


def _pydicom_datasets(path: Path) -> tuple[Dataset, FileMetaDataset]:
    full = read_with_pydicom(path)
    assert full._dataset is not None and full._file_meta is not None
    return full._dataset, full._file_meta


class PixelAttributes(Protocol):
    """What the pixel data walk asks of the data set (a pydicom Dataset or the fast reader's
    equivalent): ``get(keyword, default)`` with pydicom's value semantics."""

    def get(self, key: str, default: Any = None) -> Any: ...


def _looks_like_dataset(head: bytes) -> bool:
    """A file without preamble may still be a raw data set starting at group 0002 or 0008."""
    if len(head) < 8:
        return False
    group_le = struct.unpack("<H", head[:2])[0]
    group_be = struct.unpack(">H", head[:2])[0]
    return group_le in (0x0002, 0x0008) or group_be == 0x0008


def sniff(fp: BinaryIO) -> bool:
    """True when the stream starts like a DICOM file (with or without a preamble)."""
    head = fp.read(132)
    fp.seek(0)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return _looks_like_dataset(head)


def _clean_uid(ds: Dataset, keyword: str, warnings: list[str], meta_value: str = "") -> str:
    """A Type 1 UID, tolerated when slightly malformed, refused when absent or unusable."""
    return check_uid(keyword, ds.get(keyword, None) or meta_value, warnings)


def check_uid(keyword: str, value: Any, warnings: list[str]) -> str:
    """The checks of :func:`_clean_uid` on a value already looked up.

    Raises:
        MissingAttribute: the UID is absent, empty or unusable.
    """
    text = str(value or "").strip().rstrip("\x00").strip()
    if not text:
        raise MissingAttribute(f"{keyword} is missing or empty")
    if len(text) > MAX_UID_LENGTH:
        raise MissingAttribute(f"{keyword} is longer than 64 characters: {text[:80]!r}")
    if not _NOT_IN_UID.isdisjoint(text) or not text.isprintable():
        raise MissingAttribute(f"{keyword} holds characters a UID cannot have: {text!r}")
    if not _PLAIN_UID.fullmatch(text) and not all(c.isdigit() or c == "." for c in text):
        warnings.append(f"{keyword} {text!r} is not a conformant UID (accepted)")
    return text


def _read_u32(fp: BinaryIO, little: bool) -> tuple[int, int]:
    data = fp.read(8)
    if len(data) < 8:
        raise TruncatedObject("the file ends inside the pixel data")
    group, elem, length = struct.unpack("<HHI" if little else ">HHI", data)
    return (group << 16) | elem, length


def _element_header(fp: BinaryIO, implicit: bool, little: bool) -> tuple[int, str, int, int]:
    """Read an element header at the current position: (tag, vr, length, header size)."""
    head = fp.read(8)
    if len(head) < 8:
        raise TruncatedObject("the file ends inside an element header")
    endian = "<" if little else ">"
    group, elem = struct.unpack(endian + "HH", head[:4])
    tag = (group << 16) | elem
    if implicit:
        (length,) = struct.unpack(endian + "I", head[4:8])
        vr = "OW" if tag == 0x7FE00010 else ("OF" if tag == 0x7FE00008 else "OD")
        return tag, vr, length, 8
    vr = head[4:6].decode("ascii", "replace")
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"):
        more = fp.read(4)
        if len(more) < 4:
            raise TruncatedObject("the file ends inside an element header")
        (length,) = struct.unpack(endian + "I", more)
        return tag, vr, length, 12
    (length,) = struct.unpack(endian + "H", head[6:8])
    return tag, vr, length, 8


def _frame_starts(fp: BinaryIO, fragments: list[tuple[int, int]], ts: str) -> list[int]:
    """Indexes of fragments that begin a frame, judged from the codestream's first bytes."""
    starts = []
    for i, (offset, length) in enumerate(fragments):
        fp.seek(offset)
        head = fp.read(min(length, 12))
        if ts in (
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.4.201",
            "1.2.840.10008.1.2.4.202",
            "1.2.840.10008.1.2.4.203",
        ):
            begins = head[:4] == b"\xff\x4f\xff\x51" or head[4:8] == b"jP  "
        else:
            begins = head[:2] == b"\xff\xd8"
        if begins:
            starts.append(i)
    return starts


def _group_frames(
    fp: BinaryIO,
    fragments: list[tuple[int, int]],
    bot: list[int],
    n_frames: int,
    ts: str,
    first_item_offset: int,
    warnings: list[str],
) -> list[Frame]:
    """Map fragments to frames (PS3.5 A.4): by the offset table, by count, or by markers."""
    if not fragments:
        return []
    starts: list[int] = []
    if n_frames <= 1:
        starts = [0]
    elif bot and len(bot) == n_frames:
        # BOT offsets count from the first byte of the first fragment's item tag.
        item_positions = {
            offset - 8 - first_item_offset: i for i, (offset, _) in enumerate(fragments)
        }
        starts = [item_positions[b] for b in bot if b in item_positions]
        if len(starts) != n_frames:
            warnings.append("Basic Offset Table does not match the fragments; frames found by scan")
            starts = []
    if not starts and len(fragments) == n_frames:
        starts = list(range(n_frames))
    if not starts:
        starts = _frame_starts(fp, fragments, ts)
        if len(starts) != n_frames:
            warnings.append(
                f"{len(fragments)} fragments could not be mapped to {n_frames} frames; "
                "frames are served by decoding"
            )
            return []
    frames = []
    bounds = [*starts, len(fragments)]
    for number, (a, b) in enumerate(itertools.pairwise(bounds), start=1):
        first_offset = fragments[a][0]
        last_offset, last_length = fragments[b - 1]
        if b - a > 1:
            first_offset -= 8  # several fragments: the span starts at the first item header
        frames.append(Frame(number, first_offset, last_offset + last_length - first_offset, b - a))
    return frames


def _walk_encapsulated(
    fp: BinaryIO, little: bool, file_size: int
) -> tuple[list[int], list[tuple[int, int]], int]:
    """Walk the items of encapsulated pixel data; return (BOT, fragments, first item offset).

    Leaves ``fp`` after the sequence delimiter.
    """
    first_item = fp.tell()
    tag, length = _read_u32(fp, little)
    if tag != ITEM_TAG:
        raise TruncatedObject("encapsulated pixel data does not start with an item")
    bot_bytes = fp.read(length)
    if len(bot_bytes) < length:
        raise TruncatedObject("the file ends inside the basic offset table")
    bot = (
        list(struct.unpack(f"{'<' if little else '>'}{length // 4}I", bot_bytes)) if length else []
    )
    fragments: list[tuple[int, int]] = []
    while True:
        tag, length = _read_u32(fp, little)
        if tag == SEQ_DELIM_TAG:
            break
        if tag != ITEM_TAG:
            raise TruncatedObject(f"unexpected tag {tag:08X} inside encapsulated pixel data")
        offset = fp.tell()
        if offset + length > file_size:
            raise TruncatedObject("the file ends inside a pixel data fragment")
        fragments.append((offset, length))
        fp.seek(offset + length)
    # BOT offsets are relative to the first fragment item (the one after the BOT item).
    first_fragment_item = fragments[0][0] - 8 if fragments else first_item
    return bot, fragments, first_fragment_item


def _native_frame_length(ds: PixelAttributes) -> int | None:
    rows = int(ds.get("Rows", 0) or 0)
    cols = int(ds.get("Columns", 0) or 0)
    bits = int(ds.get("BitsAllocated", 0) or 0)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if not rows or not cols or not bits or bits % 8:
        return None
    return rows * cols * samples * bits // 8


def _number_of_frames(ds: PixelAttributes, warnings: list[str]) -> int:
    raw = ds.get("NumberOfFrames", None)
    if raw in (None, ""):
        return 1
    try:
        n = int(float(str(raw)))
    except ValueError:
        warnings.append(f"NumberOfFrames {raw!r} is not a number; taken as 1")
        return 1
    return max(n, 1)


def check_meta_instance(meta_instance: str, sop_instance: str, warnings: list[str]) -> None:
    """Warn when the File Meta Information names another SOP Instance UID than the data set
    (the data set's is the one kept)."""
    meta_instance = meta_instance.strip("\x00 ")
    if meta_instance and meta_instance != sop_instance:
        warnings.append(
            f"file meta SOP Instance UID {meta_instance} differs from the data set's "
            f"{sop_instance}; the data set's is used"
        )


def with_pixel_entry(
    metadata: dict[str, Any],
    bulk: dict[str, tuple[int, int]],
    pixel: PixelInfo | None,
    *,
    in_file: bool,
) -> dict[str, Any]:
    """The metadata with the pixel data element as a BulkDataURI, in tag order; native pixel
    data lying in the file (``in_file``) also gets its byte range in ``bulk``."""
    if pixel is None:
        return metadata
    key = dicomjson.tag_hex(pixel.tag)
    metadata[key] = {"vr": pixel.vr, "BulkDataURI": dicomjson.BULK_URI_PREFIX + key}
    if not pixel.encapsulated and in_file:
        bulk[key] = (pixel.value_offset, pixel.value_length)
    return dict(sorted(metadata.items()))


def read_object(path: Path, content: bytes | None = None) -> ParsedObject:
    """Parse a Part 10 file (or a bare data set) from disk; ``content``, when given, is the
    file's whole content, parsed from memory (the general reader still reads the file).

    The common simple file is parsed by :func:`vna.fastread.read_simple`; anything else, and
    any file it refuses, by pydicom (:func:`read_with_pydicom`), with the same result.

    Raises:
        NotDicom: the file is not DICOM.
        TruncatedObject: the file ends before its content does.
        MissingAttribute: a UID the archive needs is absent.
    """
    from vna.fastread import read_simple  # imports this module

    try:
        parsed = read_simple(path, content)
    except VnaError:
        parsed = None  # the general reader decides, and words the error
    return parsed if parsed is not None else read_with_pydicom(path)


def read_with_pydicom(path: Path) -> ParsedObject:
    """:func:`read_object` by pydicom's general reader: any transfer syntax, character set or
    malformation it tolerates. Same raises as :func:`read_object`."""
    warnings: list[str] = []
    file_size = path.stat().st_size
    with path.open("rb") as fp:
        head = fp.read(132)
        has_preamble = len(head) >= 132 and head[128:132] == b"DICM"
        if not has_preamble and not _looks_like_dataset(head):
            raise NotDicom("not a DICOM file (no DICM prefix and no recognisable data set)")
        fp.seek(0)
        try:
            fds = read_partial(
                fp,
                stop_when=_stopper(fp, file_size, _declares_deflate(head, fp)),
                defer_size=DEFER_SIZE,
                force=not has_preamble,
            )
        except InvalidDicomError as exc:
            raise NotDicom(f"not a DICOM file: {exc}") from exc
        except (EOFError, struct.error) as exc:
            raise TruncatedObject(f"the file ends inside the header: {exc}") from exc
        except UnboundLocalError as exc:  # pydicom swallowed an EOFError while reading
            raise TruncatedObject("the file ends inside the header") from exc
        except (ValueError, KeyError, NotImplementedError, OverflowError) as exc:
            raise NotDicom(f"cannot parse the data set: {exc}") from exc
        file_meta = fds.file_meta
        ts = str(file_meta.get("TransferSyntaxUID", "") or "").strip().rstrip("\x00")
        implicit = bool(fds.original_encoding[0])
        little = bool(fds.original_encoding[1])
        if not ts:
            ts = (
                ImplicitVRLittleEndian
                if implicit
                else ExplicitVRLittleEndian
                if little
                else ExplicitVRBigEndian
            )
            warnings.append(f"no Transfer Syntax UID in the file meta; taken as {ts}")
        deflated = ts == DeflatedExplicitVRLittleEndian
        dataset = Dataset(fds)
        dataset.set_original_encoding(implicit, little, fds._character_set)
        if len(dataset) == 0:
            raise NotDicom("the file holds no data set")
        # Deflated data sets are inflated in memory (they are small in practice); frame and
        # bulk data offsets then do not point into the file and are not recorded.
        stream: BinaryIO = fp
        stream_size = file_size
        if deflated:
            stream = _reopen_inflated(fp)
            stream_size = _size(stream)
            position = _deflated_position(stream)
        else:
            position = fp.tell()
        pixel: PixelInfo | None = None
        bulk: dict[str, tuple[int, int]] = {}
        if position < stream_size:
            stream.seek(position)
            pixel = read_pixel(stream, dataset, ts, implicit, little, stream_size, warnings)
            trailing = _read_trailing(stream, implicit, little, stream_size, warnings)
            for tag, elem in trailing.items():
                dataset[tag] = elem
            if deflated and pixel is not None:
                pixel.frames = []
        meta_meta_offset = _dataset_offset(fp, has_preamble)

    sop_class = _clean_uid(
        dataset, "SOPClassUID", warnings, str(file_meta.get("MediaStorageSOPClassUID", ""))
    )
    sop_instance = _clean_uid(
        dataset, "SOPInstanceUID", warnings, str(file_meta.get("MediaStorageSOPInstanceUID", ""))
    )
    study = _clean_uid(dataset, "StudyInstanceUID", warnings)
    series = _clean_uid(dataset, "SeriesInstanceUID", warnings)
    meta_instance = str(file_meta.get("MediaStorageSOPInstanceUID", "") or "")
    check_meta_instance(meta_instance, sop_instance, warnings)

    # Offsets of top-level binary values, taken before JSON encoding converts the raw
    # elements (a converted element no longer knows where its value lies in the file).
    top_level: dict[int, int] = {}
    for tag in list(dataset.keys()):
        item = dataset.get_item(tag, keep_deferred=True)
        if isinstance(item, RawDataElement) and (item.VR or "UN") in dicomjson.BINARY_VRS:
            top_level[int(tag)] = item.value_tell

    def bulk_uri(tag_path: tuple[int, ...], vr: str, length: int) -> str:
        raw = _raw_at(dataset, tag_path)
        if not deflated:
            if raw is not None:
                bulk[dicomjson.path_text(tag_path)] = (raw.value_tell, length)
            elif len(tag_path) == 1 and tag_path[0] in top_level:
                bulk[dicomjson.path_text(tag_path)] = (top_level[tag_path[0]], length)
        return dicomjson.default_bulk_uri(tag_path, vr, length)

    metadata, json_warnings = dicomjson.dataset_to_json(dataset, bulk_uri)
    warnings.extend(json_warnings)
    metadata = with_pixel_entry(metadata, bulk, pixel, in_file=not deflated)
    return ParsedObject(
        path=path,
        transfer_syntax=ts,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_instance_uid=study,
        series_instance_uid=series,
        pixel=pixel,
        bulk=bulk,
        metadata=metadata,
        warnings=warnings,
        has_preamble=has_preamble,
        dataset_offset=meta_meta_offset,
        _dataset=dataset,
        _file_meta=file_meta,
    )


def _stop_at_pixels(tag: Any, vr: str | None, length: int) -> bool:
    return int(tag) in PIXEL_TAGS


def _declares_deflate(head: bytes, fp: BinaryIO) -> bool:
    """Whether the file meta names the deflated transfer syntax (its data set is inflated by
    pydicom into memory, so file positions say nothing while reading it)."""
    fp.seek(0)
    start = fp.read(4096)
    fp.seek(0)
    return DeflatedExplicitVRLittleEndian.encode() in start


def _stopper(fp: BinaryIO, file_size: int, deflated: bool) -> Any:
    """Stop at pixel data; refuse a top-level value that runs past the end of the file.

    pydicom logs and swallows an early end of file, returning a partial data set; the
    callback sees every top-level element header before its value is read, so truncation is
    caught here instead (deflated data sets are checked after inflation).
    """

    def stop(tag: Any, vr: str | None, length: int) -> bool:
        if int(tag) in PIXEL_TAGS:
            return True
        if not deflated and length != 0xFFFFFFFF and fp.tell() + length > file_size:
            raise TruncatedObject(
                f"element ({int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X}) declares {length} "
                "bytes but the file ends first"
            )
        return False

    return stop


def _raw_at(ds: Dataset, tag_path: tuple[int, ...]) -> RawDataElement | None:
    """The raw element at a tag path, if it is still raw (it knows its file offset)."""
    current = ds
    for i in range(0, len(tag_path) - 1, 2):
        seq = current.get(tag_path[i])
        if seq is None:
            return None
        current = seq.value[tag_path[i + 1]]
    raw = current.get_item(tag_path[-1], keep_deferred=True)
    return raw if isinstance(raw, RawDataElement) else None


def _dataset_offset(fp: BinaryIO, has_preamble: bool) -> int:
    """Offset of the first data set byte after the file meta group (for re-writing meta)."""
    if not has_preamble:
        fp.seek(0)
    else:
        fp.seek(132)
    while True:
        pos = fp.tell()
        head = fp.read(8)
        if len(head) < 8:
            return pos
        group = struct.unpack("<H", head[:2])[0]
        if group != 0x0002:
            return pos
        vr = head[4:6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            length = struct.unpack("<I", fp.read(4))[0]
        else:
            length = struct.unpack("<H", head[6:8])[0]
        fp.seek(fp.tell() + length)


def _reopen_inflated(fp: BinaryIO) -> BinaryIO:
    """Deflated data sets are small in practice; inflate into memory to find pixel data."""
    import io
    import zlib

    fp.seek(0)
    has_preamble = fp.read(132)[128:132] == b"DICM"
    start = _dataset_offset(fp, has_preamble)
    fp.seek(start)
    return io.BytesIO(zlib.decompress(fp.read(), -zlib.MAX_WBITS))


def _deflated_position(stream: BinaryIO) -> int:
    """Position of the pixel data element inside the inflated stream, found by re-reading."""
    stream.seek(0)
    try:
        read_dataset(stream, False, True, stop_when=_stop_at_pixels, defer_size=DEFER_SIZE)
    except EOFError as exc:
        raise TruncatedObject("the deflated data set is truncated") from exc
    return stream.tell()


def _size(stream: BinaryIO) -> int:
    pos = stream.tell()
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(pos)
    return size


def read_pixel(
    fp: BinaryIO,
    ds: PixelAttributes,
    ts: str,
    implicit: bool,
    little: bool,
    file_size: int,
    warnings: list[str],
) -> PixelInfo:
    """Walk the pixel data element at ``fp`` by hand (item headers only, PS3.5 A.4); leave
    ``fp`` after it."""
    tag, vr, length, _header = _element_header(fp, implicit, little)
    value_offset = fp.tell()
    if vr not in ("OB", "OW", "OF", "OD", "UN"):
        vr = "OB" if length == 0xFFFFFFFF else "OW"
    n_frames = _number_of_frames(ds, warnings)
    pixel: PixelInfo
    if length == 0xFFFFFFFF:
        bot, fragments, first_item = _walk_encapsulated(fp, little, file_size)
        is_video = ts in VIDEO_SYNTAXES
        # a video is one stream: the whole of it is "frame 1" (served as video/mp4)
        frames = _group_frames(
            fp,
            fragments,
            [] if is_video else bot,
            1 if is_video else n_frames,
            ts,
            first_item,
            warnings,
        )
        pixel = PixelInfo(tag, "OB", value_offset, -1, True, n_frames, None, frames, is_video)
    else:
        if value_offset + length > file_size:
            raise TruncatedObject(
                f"pixel data declares {length} bytes but the file ends "
                f"{file_size - value_offset} bytes after its start"
            )
        frame_length = _native_frame_length(ds) if tag == 0x7FE00010 else None
        if frame_length is None and tag != 0x7FE00010:
            bits = 32 if tag == 0x7FE00008 else 64
            rows = int(ds.get("Rows", 0) or 0)
            cols = int(ds.get("Columns", 0) or 0)
            frame_length = rows * cols * bits // 8 or None
        frames = []
        if frame_length and frame_length * n_frames <= length:
            frames = [
                Frame(i + 1, value_offset + i * frame_length, frame_length) for i in range(n_frames)
            ]
        elif frame_length:
            warnings.append(
                f"pixel data holds {length} bytes, fewer than {n_frames} frames of {frame_length}"
            )
        pixel = PixelInfo(tag, vr, value_offset, length, False, n_frames, frame_length, frames)
        fp.seek(value_offset + length)
    return pixel


def _read_trailing(
    fp: BinaryIO, implicit: bool, little: bool, file_size: int, warnings: list[str]
) -> Dataset:
    """Parse whatever follows the pixel data element (a second one is dropped)."""
    trailing = Dataset()
    if fp.tell() < file_size:
        try:
            trailing = read_dataset(fp, implicit, little, defer_size=DEFER_SIZE)
        except EOFError as exc:
            raise TruncatedObject("the file ends inside an element after the pixel data") from exc
        for extra in PIXEL_TAGS:
            if extra in trailing:
                warnings.append(f"a second pixel data element ({extra:08X}) was ignored")
                del trailing[extra]
    return trailing
