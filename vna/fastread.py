"""Reading the common Part 10 file straight from its bytes, without building a pydicom Dataset.

Every ingest parses a header; pydicom's general reader and the DICOM JSON encoder working on
its Dataset cost most of a small object's ingest. The usual file is simple: a preamble and
DICM, explicit VR little endian (PS3.5 7.1.2, also the data set of every encapsulated syntax,
PS3.5 A.4), plain character sets. Such a file is parsed here from one bounded read of its
header (the pixel data value is never read) into exactly the :class:`ParsedObject` that
:func:`vna.dicomfile.read_with_pydicom` gives: same JSON (that of ``dicomjson._fast_raw``, or
of pydicom's conversion for the few elements the general path converts first), same bulk data
offsets, frames, UIDs and warnings.

Anything else returns None and the general reader decides: no preamble, other transfer
syntaxes, code extensions, UN and other VRs or values the JSON encoder would hand to pydicom,
elements out of order, an undefined length other than a sequence's or an item's, a value above
``DEFER_SIZE``, more than a little after the pixel data, any malformation. Coverage may be
narrow; a result is never different.
"""

from __future__ import annotations

import base64
import io
import os
import struct
from pathlib import Path
from typing import Any

from vna import dicomjson
from vna.dicomfile import (
    DEFER_SIZE,
    PIXEL_TAGS,
    VIDEO_SYNTAXES,
    ParsedObject,
    check_meta_instance,
    check_uid,
    read_pixel,
    with_pixel_entry,
)

#: First read: the header of most objects fits (the rest is read only when it does not).
CHUNK = 64 * 1024
#: Elements after the pixel data (trailing padding) are read when no larger than this.
MAX_TRAILING = 64 * 1024
#: A header larger than this is left to the general reader.
MAX_HEADER = 8 * 1024 * 1024
#: Sequences nested deeper than this are left to the general reader.
MAX_DEPTH = 16

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_DELIMITER = 0xFFFEE00D
SEQUENCE_DELIMITER = 0xFFFEE0DD
CHARSET = 0x00080005

#: Transfer syntaxes whose data set is explicit VR little endian: the native one and the
#: encapsulated ones (PS3.5 A.4; JPIP, deflated, implicit and big endian ones are not here).
SYNTAXES = (
    frozenset(
        {
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.1.98",
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.51",
            "1.2.840.10008.1.2.4.57",
            "1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.81",
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.4.91",
            "1.2.840.10008.1.2.4.92",
            "1.2.840.10008.1.2.4.93",
            "1.2.840.10008.1.2.4.110",
            "1.2.840.10008.1.2.4.111",
            "1.2.840.10008.1.2.4.112",
            "1.2.840.10008.1.2.4.201",
            "1.2.840.10008.1.2.4.202",
            "1.2.840.10008.1.2.4.203",
            "1.2.840.10008.1.2.5",
        }
    )
    | VIDEO_SYNTAXES
)

#: PS3.5 7.1.2: the VRs whose header has two reserved bytes and a 4-byte length.
_LONG = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
#: Every VR of PS3.5 6.2, as written in an explicit VR header.
_VRS = {
    vr: vr.decode("ascii")
    for vr in b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM "
    b"UC UI UL UN UR US UT UV".split()
}
#: Binary VRs kept as written (UN is not: pydicom replaces it with the dictionary's VR).
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
#: 64-bit VRs the JSON encoder converts with pydicom (into JSON numbers, PS3.18 F.2.3).
_LONG_NUMBERS = {"SV": "q", "UV": "Q"}
#: Integer VRs: value size and struct code (PS3.5 6.2).
_INTEGERS = {"US": 2, "SS": 2, "UL": 4, "SL": 4}
_INTEGER_CODES = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}
#: Text VRs split on backslashes, each value stripped of spaces and NULs (PS3.18 F.2.3).
_PLAIN_TEXT = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "LO", "SH", "UC"})
#: Numeric VRs and their value size, for checking the file meta group.
_SIZES = {"UL": 4, "US": 2, "SL": 4, "SS": 2, "FL": 4, "FD": 8, "AT": 4}
#: Character sets without code extensions (PS3.5 6.1.2.3), as written, and their codec.
_CHARSETS = {
    name.encode("ascii"): codec for name, codec in dicomjson._SIMPLE_CHARSETS.items() if name
}
#: Top-level UIDs the general path reads through pydicom before encoding them.
_UIDS = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
}
#: Top-level attributes the pixel data walk reads.
_IMAGE = {
    0x00280002: "SamplesPerPixel",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
}

#: JSON keys of the tags seen so far (formatting one costs more than looking it up).
_KEYS: dict[int, str] = {}
_KEYS_MAX = 65536


def _key(tag: int) -> str:
    """The DICOM JSON key of a tag: 8 upper-case hexadecimal digits (PS3.18 F.2.1.1)."""
    key = _KEYS.get(tag)
    if key is None:
        key = f"{tag:08X}"
        if len(_KEYS) < _KEYS_MAX:
            _KEYS[tag] = key
    return key


_HEADER = struct.Struct("<HH2sH").unpack_from
_ITEM_HEADER = struct.Struct("<HHI").unpack_from
_LENGTH = struct.Struct("<I").unpack_from


class _Fallback(Exception):
    """Not a simple file: the general reader decides."""


class _Short(Exception):
    """The header goes on past the bytes read so far."""

    def __init__(self, needed: int):
        super().__init__(needed)
        self.needed = needed


class _Attributes:
    """The image attributes with pydicom's values (int, or None when empty) for
    :func:`vna.dicomfile.read_pixel`."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def read_simple(path: Path, content: bytes | None = None) -> ParsedObject | None:
    """Parse a simple Part 10 file; None when it is not simple (or not certainly so).
    ``content``: the file's whole content, when the caller has it (nothing is read then).

    Raises:
        TruncatedObject: the pixel data is cut short.
        MissingAttribute: a UID the archive needs is absent.
    """
    with path.open("rb") if content is None else io.BytesIO(content) as fp:
        file_size = os.fstat(fp.fileno()).st_size if content is None else len(content)
        want = min(file_size, CHUNK)
        while True:
            buf = fp.read(want)
            try:
                return _parse(path, fp, buf, file_size)
            except _Short as short:
                if len(buf) >= file_size or short.needed > MAX_HEADER:
                    return None
                want = min(file_size, max(4 * want, short.needed + CHUNK))
                fp.seek(0)
            except (_Fallback, struct.error, ValueError, IndexError):
                return None


def _parse(path: Path, fp: Any, buf: bytes, file_size: int) -> ParsedObject:
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise _Fallback
    meta, start = _file_meta(buf)
    ts = _meta_uid(meta, 0x00020010)
    if ts not in SYNTAXES:
        raise _Fallback
    reader = _Reader(buf)
    metadata, _end = reader.dataset(start, file_size, (), 0, "latin-1", "latin-1")
    if not reader.count:
        raise _Fallback  # no data set: the general reader words the error
    warnings: list[str] = []
    pixel = None
    if reader.pixel_at is not None:
        fp.seek(reader.pixel_at)
        pixel = read_pixel(fp, reader.image, ts, False, True, file_size, warnings)
        after = fp.tell()
        if after < file_size:
            metadata.update(_trailing(fp, after, file_size, pixel.tag, reader.bulk))
    meta_class = _meta_uid(meta, 0x00020002)
    meta_instance = _meta_uid(meta, 0x00020003)
    uids = reader.uids
    sop_class = check_uid("SOPClassUID", uids.get(0x00080016) or meta_class, warnings)
    sop_instance = check_uid("SOPInstanceUID", uids.get(0x00080018) or meta_instance, warnings)
    study = check_uid("StudyInstanceUID", uids.get(0x0020000D), warnings)
    series = check_uid("SeriesInstanceUID", uids.get(0x0020000E), warnings)
    check_meta_instance(meta_instance, sop_instance, warnings)
    bulk = reader.bulk
    metadata = with_pixel_entry(metadata, bulk, pixel, in_file=True)
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
        has_preamble=True,
        dataset_offset=start,
    )


def _trailing(
    fp: Any, start: int, file_size: int, pixel_tag: int, bulk: dict[str, tuple[int, int]]
) -> dict[str, Any]:
    """The elements after the pixel data (Data Set Trailing Padding, FFFC,FFFC, mostly): top
    level elements of the data set like the others, their bulk data added to ``bulk``. Tags
    must follow the pixel data's (the general reader would merge others elsewhere)."""
    if file_size - start > MAX_TRAILING:
        raise _Fallback
    buf = fp.read(file_size - start)
    if len(buf) != file_size - start:
        raise _Fallback
    reader = _Reader(buf, start, after=pixel_tag)
    reader.bulk = bulk
    try:
        out, _end = reader.dataset(0, len(buf), (), 0, "latin-1", "latin-1")
    except _Short as short:  # buf holds all there is: an element cut short
        raise _Fallback from short
    return out


def _file_meta(buf: bytes) -> tuple[dict[int, tuple[str, bytes]], int]:
    """The File Meta Information elements (PS3.10 7.1, explicit VR little endian) and the
    offset of the data set after them."""
    pos = 132
    size = len(buf)
    found: dict[int, tuple[str, bytes]] = {}
    previous = -1
    while True:
        if pos + 8 > size:
            raise _Short(pos + 8)
        group, element, vr_bytes, length = _HEADER(buf, pos)
        if group != 0x0002:
            return found, pos
        tag = group << 16 | element
        vr = _VRS.get(vr_bytes)
        if tag <= previous or vr is None or vr in ("SQ", "SV", "UN", "UV"):
            raise _Fallback
        previous = tag
        header = 8
        if vr_bytes in _LONG:
            if pos + 12 > size:
                raise _Short(pos + 12)
            length = _LENGTH(buf, pos + 8)[0]
            header = 12
        end = pos + header + length
        if length == UNDEFINED or length % _SIZES.get(vr, 1):
            raise _Fallback  # pydicom would fail converting it
        if end > size:
            raise _Short(end)
        found[tag] = (vr, buf[pos + header : end])
        pos = end


def _meta_uid(meta: dict[int, tuple[str, bytes]], tag: int) -> str:
    """A file meta UID as pydicom reads it ("" when absent)."""
    if tag not in meta:
        return ""
    vr, value = meta[tag]
    if vr != "UI":
        raise _Fallback
    return _uid_text(value)


def _uid_text(value: bytes) -> str:
    """pydicom's UI value: trailing spaces and NULs dropped, then white space (``UID`` strips
    it); several values are not simple."""
    text = value.decode("latin-1").rstrip("\x00 ")
    if "\\" in text:
        raise _Fallback
    return text.strip()


class _Reader:
    """Walks an explicit VR little endian data set in ``buf`` (PS3.5 7.1.2), building its DICOM
    JSON as :class:`vna.dicomjson.JsonEncoder` does for the general reader's Dataset."""

    def __init__(self, buf: bytes, base: int = 0, after: int | None = None):
        self.buf = buf
        self.base = base  # file offset of buf[0]
        self.after = after  # reading the elements after this pixel data element
        self.count = 0  # top-level elements, group lengths included
        self.pixel_at: int | None = None
        self.bulk: dict[str, tuple[int, int]] = {}
        self.uids: dict[int, str] = {}
        self.image = _Attributes()

    def dataset(
        self,
        pos: int,
        end: int | None,
        path: tuple[int, ...],
        depth: int,
        encoding: str,
        inherited: str,
    ) -> tuple[dict[str, Any], int]:
        """JSON of the elements from ``pos`` to ``end`` (None: to an item delimiter).

        ``encoding`` is the codec the JSON encoder decodes this data set's text with (its own
        Specific Character Set, else latin-1, even in an item of a UTF-8 data set); where that
        differs from the ``inherited`` one, non-ASCII text is left to the general reader.
        """
        buf = self.buf
        size = len(buf)
        top = not path
        out: dict[str, Any] = {}
        previous = self.after if top and self.after is not None else -1
        strict = encoding != inherited
        while True:
            if end is not None and pos >= end:
                if pos != end:
                    raise _Fallback
                return out, pos
            if pos + 8 > size:
                raise _Short(pos + 8)
            group, element, vr_bytes, length = _HEADER(buf, pos)
            tag = group << 16 | element
            if group == 0xFFFE:
                if tag == ITEM_DELIMITER and end is None and vr_bytes == b"\0\0" and not length:
                    return out, pos + 8  # PS3.5 7.5.2
                raise _Fallback
            if top and tag in PIXEL_TAGS:
                if self.after is not None:
                    raise _Fallback  # a second pixel data element
                self.pixel_at = pos
                return out, pos
            # Out of order or repeated tags (after the pixel data too), command or file meta
            # groups, group 0004 text before the character set: left to the general reader.
            if tag <= previous or group < 0x0008 or 0x00080000 < tag < CHARSET:
                raise _Fallback
            previous = tag
            vr = _VRS.get(vr_bytes)
            if vr is None or vr == "UN":
                raise _Fallback
            if vr_bytes in _LONG:
                if pos + 12 > size:
                    raise _Short(pos + 12)
                length = _LENGTH(buf, pos + 8)[0]
                pos += 12
            else:
                pos += 8
            if top:
                self.count += 1
            if length == UNDEFINED:
                if vr != "SQ" or depth >= MAX_DEPTH:
                    raise _Fallback
                items, pos = self.sequence(pos, None, (*path, tag), depth + 1, inherited)
                out[_KEYS.get(tag) or _key(tag)] = (
                    {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                )
                continue
            value_end = pos + length
            if length > DEFER_SIZE or (end is not None and value_end > end):
                raise _Fallback
            if value_end > size:
                raise _Short(value_end)
            if not element:
                pos = value_end  # group length: not in the JSON (group 0002 is not here)
                continue
            if vr == "SQ":
                if depth >= MAX_DEPTH:
                    raise _Fallback
                items, pos = self.sequence(pos, value_end, (*path, tag), depth + 1, inherited)
                out[_KEYS.get(tag) or _key(tag)] = (
                    {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                )
                continue
            if vr in _BINARY:
                out[_KEYS.get(tag) or _key(tag)] = self.binary(tag, vr, pos, length, path)
                pos = value_end
                continue
            value = buf[pos:value_end]
            if tag == CHARSET:
                if vr != "CS" or value.rstrip(b" \x00") not in _CHARSETS:
                    raise _Fallback  # absent, ISO_IR 6, 100 or 192 only
                encoding = inherited = _CHARSETS[value.rstrip(b" \x00")]
                strict = False
            elif top and tag in _UIDS:
                # converted by pydicom before encoding (see _uid_text), not by _fast_raw
                if vr != "UI":
                    raise _Fallback
                text = _uid_text(value)
                self.uids[tag] = text
                out[_KEYS.get(tag) or _key(tag)] = (
                    {"vr": "UI", "Value": [text]} if text else {"vr": "UI"}
                )
                pos = value_end
                continue
            if vr == "AT" or vr in _LONG_NUMBERS:
                out[_KEYS.get(tag) or _key(tag)] = _converted_number(vr, value)
                pos = value_end
                continue
            # The two commonest cases of dicomjson._fast_raw written out (same results);
            # the function itself for the others.
            if vr in _INTEGERS:
                width = _INTEGERS[vr]
                if length % width:
                    raise _Fallback
                numbers = struct.unpack(f"<{length // width}{_INTEGER_CODES[vr]}", value)
                encoded = {"vr": vr, "Value": list(numbers)} if numbers else {"vr": vr}
            elif vr in _PLAIN_TEXT and value.isascii():
                if b"\\" not in value:  # one value, the common case
                    text = value.decode("ascii").strip(" \x00")
                    encoded = {"vr": vr, "Value": [text]} if text else {"vr": vr}
                else:
                    parts = [part.strip(" \x00") for part in value.decode("ascii").split("\\")]
                    if any(parts):
                        encoded = {"vr": vr, "Value": [part or None for part in parts]}
                    else:
                        encoded = {"vr": vr}
            else:
                if strict and not value.isascii():
                    raise _Fallback
                fast = dicomjson.fast_value(vr, value, encoding)
                if fast is None:
                    raise _Fallback
                encoded = fast
            if top and tag in _IMAGE:
                self.image.values[_IMAGE[tag]] = _image_value(tag, vr, encoded)
            out[_KEYS.get(tag) or _key(tag)] = encoded
            pos = value_end

    def sequence(
        self, pos: int, end: int | None, path: tuple[int, ...], depth: int, inherited: str
    ) -> tuple[list[dict[str, Any]], int]:
        """The items of a sequence (PS3.5 7.5), of defined or undefined length."""
        buf = self.buf
        size = len(buf)
        items: list[dict[str, Any]] = []
        while True:
            if end is not None and pos >= end:
                if pos != end:
                    raise _Fallback
                return items, pos
            if pos + 8 > size:
                raise _Short(pos + 8)
            group, element, length = _ITEM_HEADER(buf, pos)
            tag = group << 16 | element
            pos += 8
            if tag == SEQUENCE_DELIMITER and end is None and not length:
                return items, pos
            if tag != ITEM:
                raise _Fallback
            item_end = None
            if length != UNDEFINED:
                item_end = pos + length
                if end is not None and item_end > end:
                    raise _Fallback
            item, pos = self.dataset(
                pos, item_end, (*path, len(items)), depth, "latin-1", inherited
            )
            items.append(item)

    def binary(
        self, tag: int, vr: str, pos: int, length: int, path: tuple[int, ...]
    ) -> dict[str, Any]:
        """PS3.18 F.2.7: inline below the threshold, else a bulk data URI (whose byte range is
        known, as in the general path, for top-level values only)."""
        if not length:
            return {"vr": vr}
        if length > dicomjson.BULK_THRESHOLD or tag in dicomjson.BULK_TAGS:
            key = dicomjson.path_text((*path, tag))
            if not path:
                self.bulk[key] = (self.base + pos, length)
            return {"vr": vr, "BulkDataURI": dicomjson.BULK_URI_PREFIX + key}
        inline = base64.b64encode(self.buf[pos : pos + length]).decode("ascii")
        return {"vr": vr, "InlineBinary": inline}


def _converted_number(vr: str, value: bytes) -> dict[str, Any]:
    """JSON of an AT, SV or UV value, which the encoder takes from pydicom's conversion."""
    size = 4 if vr == "AT" else 8
    if len(value) % size:
        raise _Fallback
    if not value:
        return {"vr": vr}
    count = len(value) // size
    if vr == "AT":
        pairs = struct.unpack(f"<{2 * count}H", value)
        tags = [f"{pairs[i] << 16 | pairs[i + 1]:08X}" for i in range(0, len(pairs), 2)]
        return {"vr": vr, "Value": tags}
    return {"vr": vr, "Value": list(struct.unpack(f"<{count}{_LONG_NUMBERS[vr]}", value))}


def _image_value(tag: int, vr: str, encoded: dict[str, Any]) -> int | None:
    """The value pydicom gives an image attribute: one number, or None when empty."""
    if vr != ("IS" if tag == 0x00280008 else "US"):
        raise _Fallback
    values = encoded.get("Value")
    if values is None:
        return None
    if len(values) != 1:
        raise _Fallback
    number: int = values[0]
    return number
