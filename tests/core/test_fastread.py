"""The fast reader gives exactly what the general (pydicom) reader gives, or declines."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.data.data_manager import online_test_file_dummy_paths
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from tests.support.data import pydicom_file, real_data_dir, real_files
from tests.support.factory import make_dataset, write
from vna.dicomfile import ParsedObject, read_object, read_with_pydicom
from vna.fastread import CHUNK, read_simple

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on odd values

EXPLICIT = "1.2.840.10008.1.2.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
FIELDS = (
    "transfer_syntax",
    "sop_class_uid",
    "sop_instance_uid",
    "study_instance_uid",
    "series_instance_uid",
    "pixel",
    "bulk",
    "metadata",
    "warnings",
    "has_preamble",
    "dataset_offset",
)


def check(path: Path) -> ParsedObject | None:
    """The fast reader's result equals the general reader's, field by field; or it declines
    (None), or both refuse the file with the same error. Reading from the file's content in
    memory (a small spooled object) gives the same as reading the file."""
    got = _check(path)
    if path.is_file():
        assert _outcome(path, path.read_bytes()) == _outcome(path, None)
    return got


def _outcome(path: Path, content: bytes | None) -> object:
    try:
        parsed = read_simple(path, content)
    except Exception as exc:
        return type(exc)
    if parsed is None:
        return None
    return [getattr(parsed, name) for name in FIELDS] + [json.dumps(parsed.metadata)]


def _check(path: Path) -> ParsedObject | None:
    try:
        expected = read_with_pydicom(path)
    except Exception as exc:
        try:
            got = read_simple(path)
        except Exception as fast_exc:
            assert type(fast_exc) is type(exc), (fast_exc, exc)
            return None
        assert got is None, f"the general reader refuses it ({exc!r}), the fast one does not"
        return None
    got = read_simple(path)
    if got is None:
        return None
    for name in FIELDS:
        assert getattr(got, name) == getattr(expected, name), name
    # same order too, at every level (what the index stores is this JSON text)
    assert json.dumps(got.metadata) == json.dumps(expected.metadata)
    assert list(got.bulk.items()) == list(expected.bulk.items())
    assert got.path == expected.path
    return got


def _corpus() -> list[tuple[str, Path]]:
    """pydicom's files, pydicom-data's files present here, the shared real-world files."""
    found = [("pydicom/" + Path(f).name, Path(f)) for f in get_testdata_files()]
    for name in sorted({os.path.basename(k) for k in online_test_file_dummy_paths()}):
        local = get_testdata_file(name, download=False)
        if local is not None:
            found.append(("pydicom-data/" + name, Path(str(local))))
    base = real_data_dir()
    if base is not None:
        found += [("real/" + str(p.relative_to(base)), p) for p in real_files()]
        dicomdirs = [p for p in base.rglob("*") if p.is_file() and p.name.upper() == "DICOMDIR"]
        found += [("real/" + str(p.relative_to(base)), p) for p in sorted(dicomdirs)]
    return found


CORPUS = _corpus()


@pytest.mark.parametrize("path", [p for _, p in CORPUS], ids=[i for i, _ in CORPUS])
def test_same_result_as_pydicom_on_every_known_file(path: Path) -> None:
    check(path)


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # trailing padding after the pixel data
        "MR_small.dcm",
        "JPEG2000.dcm",
        "JPGExtended.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "color3d_jpeg_baseline.dcm",
        "MR_small_RLE.dcm",
        "emri_small.dcm",  # multi-frame
        "test-SR.dcm",  # nested sequences
        "liver.dcm",  # enhanced multi-frame: functional groups
        "waveform_ecg.dcm",
    ],
)
def test_common_files_take_the_fast_path(name: str) -> None:
    assert check(pydicom_file(name)) is not None


def test_real_explicit_files_take_the_fast_path() -> None:
    base = real_data_dir()
    if base is None:
        pytest.skip("real-world test data not found (set VNA_TESTDATA)")
    for name in ("1.2.840.10008.1.2.1.dcm", "1.2.840.10008.1.2.4.50.dcm"):
        assert check(base / "TransferSyntaxes" / name) is not None, name


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"frames": 3},
        {"rows": 64, "columns": 64},
        {"charset": "ISO_IR 100", "patient_name": "Müller^Jürgen"},
        {"charset": "ISO_IR 192", "patient_name": "山田^太郎"},
        {"charset": "ISO_IR 6"},
    ],
)
def test_generated_objects_take_the_fast_path(tmp_path: Path, options: dict[str, object]) -> None:
    path = write(make_dataset(**options), tmp_path / "x.dcm")  # type: ignore[arg-type]
    assert check(path) is not None
    assert read_object(path).metadata == read_with_pydicom(path).metadata


def test_dataset_and_file_meta_are_parsed_on_first_use(tmp_path: Path) -> None:
    ds = make_dataset(patient_id="LAZY")
    path = write(ds, tmp_path / "x.dcm")
    parsed = read_object(path)
    assert parsed._dataset is None and parsed._file_meta is None  # the fast path built none
    assert parsed.dataset.PatientID == "LAZY"
    assert "PixelData" not in parsed.dataset
    assert parsed.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    parsed.dataset = Dataset()  # what Staged.detach does
    assert len(parsed.dataset) == 0


# -- hand-built files: every structure the fast reader accepts, and some it must decline --

_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF


def el(tag: int, vr: str, value: bytes = b"", *, length: int | None = None) -> bytes:
    """One explicit VR little endian element (PS3.5 7.1.2), value written as given."""
    size = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr in _LONG_VRS:
        return head + b"\0\0" + struct.pack("<I", size) + value
    return head + struct.pack("<H", size) + value


def item(body: bytes, *, undefined: bool = False) -> bytes:
    if undefined:
        return (
            struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED) + body + b"\xfe\xff\x0d\xe0" + bytes(4)
        )
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


def seq(tag: int, items: list[bytes], *, undefined: bool = False) -> bytes:
    body = b"".join(items)
    if undefined:
        return el(tag, "SQ", body + b"\xfe\xff\xdd\xe0" + bytes(4), length=UNDEFINED)
    return el(tag, "SQ", body)


def uid(text: str) -> bytes:
    raw = text.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def part10(elements: dict[int, bytes], *, ts: str = EXPLICIT, instance: str = "1.2.3.4") -> bytes:
    """A Part 10 file: preamble, DICM, file meta, then ``elements`` (the four UIDs are added
    unless given) in tag order."""
    meta = (
        el(0x00020001, "OB", b"\0\1")
        + el(0x00020002, "UI", uid(CT))
        + el(0x00020003, "UI", uid(instance))
        + el(0x00020010, "UI", uid(ts))
    )
    body = {
        0x00080016: el(0x00080016, "UI", uid(CT)),
        0x00080018: el(0x00080018, "UI", uid(instance)),
        0x0020000D: el(0x0020000D, "UI", uid("1.2.3")),
        0x0020000E: el(0x0020000E, "UI", uid("1.2.3.1")),
    }
    body.update(elements)
    group_length = el(0x00020000, "UL", struct.pack("<I", len(meta)))
    data = b"".join(body[t] for t in sorted(body))
    return bytes(128) + b"DICM" + group_length + meta + data


def _pixels(rows: int = 4, columns: int = 4, frames: str | None = None) -> dict[int, bytes]:
    out = {
        0x00280002: el(0x00280002, "US", struct.pack("<H", 1)),
        0x00280010: el(0x00280010, "US", struct.pack("<H", rows)),
        0x00280011: el(0x00280011, "US", struct.pack("<H", columns)),
        0x00280100: el(0x00280100, "US", struct.pack("<H", 8)),
        0x7FE00010: el(0x7FE00010, "OB", bytes(rows * columns * int(float(frames or 1)))),
    }
    if frames is not None:
        out[0x00280008] = el(0x00280008, "IS", frames.encode("ascii"))
    return out


PN = 0x00100010
LO = 0x00100020
NESTED = {
    # undefined-length sequence of undefined-length items, holding a defined-length sequence
    0x00081110: seq(
        0x00081110,
        [
            item(el(0x00081150, "UI", uid("1.2.840.10008.3.1.2.3.1")), undefined=True),
            item(
                el(0x00081155, "UI", uid("1.2.9"))
                + seq(0x0040A730, [item(el(0x0040A040, "CS", b"TEXT"))]),
                undefined=True,
            ),
            item(b"", undefined=True),
        ],
        undefined=True,
    ),
    # defined-length sequence holding undefined-length items and an empty item
    0x00082112: seq(
        0x00082112, [item(el(0x00081150, "UI", uid("1.2")), undefined=True), item(b"")]
    ),
    0x00089215: seq(0x00089215, []),
    0x00400275: seq(0x00400275, [], undefined=True),
}


CASES: dict[str, tuple[dict[int, bytes], bool]] = {
    # name: (elements, whether the fast reader must take it)
    "nested sequences": (NESTED, True),
    "deep nesting": (
        {
            0x00081110: seq(
                0x00081110,
                [item(seq(0x0040A730, [item(seq(0x0040A730, [item(el(PN, "PN", b"A^B"))]))]))],
            )
        },
        True,
    ),
    "private tags": (
        {
            0x00090010: el(0x00090010, "LO", b"ACME 1.0"),
            0x00091001: el(0x00091001, "OB", b"\x01\x02\x03\x04"),
            0x00091002: el(0x00091002, "DS", b"1.5\\2 "),
            0x00091003: seq(0x00091003, [item(el(0x00091004, "LT", b"x"))], undefined=True),
            0x00091005: el(0x00091005, "FD", struct.pack("<2d", 1.5, -2.0)),
        },
        True,
    ),
    "empty values": (
        {
            0x00080020: el(0x00080020, "DA", b""),
            0x00100010: el(PN, "PN", b""),
            0x00101010: el(0x00101010, "AS", b""),
            0x00181030: el(0x00181030, "LO", b"  "),
            0x00200013: el(0x00200013, "IS", b""),
            0x00280034: el(0x00280034, "IS", b""),
            0x00209161: el(0x00209161, "UI", b""),
            0x00280009: el(0x00280009, "AT", b""),
            0x00189219: el(0x00189219, "FD", b""),
            0x00420011: el(0x00420011, "OB", b""),
            0x00660040: el(0x00660040, "OL", b""),
            0x0072005E: el(0x0072005E, "SV", b""),
        },
        True,
    ),
    "odd lengths": (
        {
            LO: el(LO, "LO", b"ABC"),
            0x00081030: el(0x00081030, "LO", b"odd value "),
            0x00091001: el(0x00091001, "OB", b"\x01\x02\x03"),
            0x00090010: el(0x00090010, "LO", b"X"),
            0x00209161: el(0x00209161, "UI", b"1.2.3"),
        },
        True,
    ),
    "numbers": (
        {
            0x00181050: el(0x00181050, "DS", b" 1e3\\-2.5 \\\\+7"),
            0x00200013: el(0x00200013, "IS", b" 42 "),
            0x00209128: el(0x00209128, "UL", struct.pack("<2I", 1, 4294967295)),
            0x00280106: el(0x00280106, "SS", struct.pack("<h", -5)),  # US or SS: file VR wins
            0x00283002: el(0x00283002, "US", struct.pack("<3H", 0, 0, 16)),  # LUT descriptor
            0x00283006: el(0x00283006, "OW", bytes(8)),  # US or OW: OW in the file
            0x00280009: el(0x00280009, "AT", struct.pack("<4H", 0x0018, 0x1063, 0x0054, 0x0080)),
            0x0072005E: el(0x0072005E, "SV", struct.pack("<q", -(2**40))),
            0x0072005F: el(0x0072005F, "UV", struct.pack("<2Q", 1, 2**63)),
        },
        True,
    ),
    "text": (
        {
            0x00080008: el(0x00080008, "CS", b"ORIGINAL\\PRIMARY\\\\"),
            PN: el(PN, "PN", b"Doe^John==Doe^J \\Roe^Ann"),
            0x00081030: el(0x00081030, "LO", b" padded both "),
            0x00204000: el(0x00204000, "LT", b"a\\b with backslash  \0"),
            0x00080119: el(0x00080119, "UC", b"long code value"),
            0x00080120: el(0x00080120, "UR", b"http://example.org/x "),
        },
        True,
    ),
    "UIDs padded and spaced": (
        {
            0x00080018: el(0x00080018, "UI", b" 1.2.3.4"),
            0x0020000D: el(0x0020000D, "UI", b"1.2.3\0\0"),
            0x0020000E: el(0x0020000E, "UI", b"1.2.3.1 "),
        },
        True,
    ),
    "UIDs with other white space": (
        {
            0x00080018: el(0x00080018, "UI", b"\t1.2.3.4\t"),
            0x0020000D: el(0x0020000D, "UI", b"1.2.3\r\n"),
            0x00209161: el(0x00209161, "UI", b" 1.2\t"),
        },
        True,
    ),
    "UID not conformant": ({0x0020000E: el(0x0020000E, "UI", b"1.2.a")}, True),
    "group lengths": (
        {
            0x00080000: el(0x00080000, "UL", struct.pack("<I", 1234)),
            0x00100000: el(0x00100000, "UL", struct.pack("<I", 0)),
            0x00081110: seq(0x00081110, [item(el(0x00080000, "UL", bytes(4)))]),
        },
        True,
    ),
    "binary inline and bulk": (
        {
            0x00091001: el(0x00091001, "OB", bytes(range(256)) * 5),
            0x00090010: el(0x00090010, "LO", b"ACME"),
            0x00420011: el(0x00420011, "OB", b"%PDF"),  # a bulk tag, however small
            0x00880200: seq(
                0x00880200,
                [item(el(0x00280010, "US", b"\x02\0") + el(0x7FE00010, "OB", bytes(2000)))],
            ),
            0x54001010: el(0x54001010, "OW", bytes(100)),
        },
        True,
    ),
    "native pixel data": (_pixels(), True),
    "multi-frame": (_pixels(frames="3"), True),
    "multi-frame, spaced count": (_pixels(frames=" 2 "), True),
    "multi-frame, fractional count": (_pixels(frames="2.5"), True),
    "multi-frame, fewer bytes than frames": (
        {**_pixels(frames="2"), 0x00280008: el(0x00280008, "IS", b"9 ")},
        True,
    ),
    "float pixel data": (
        {
            0x00280010: el(0x00280010, "US", b"\2\0"),
            0x00280011: el(0x00280011, "US", b"\2\0"),
            0x7FE00008: el(0x7FE00008, "OF", bytes(16)),
        },
        True,
    ),
    "trailing padding": (
        {
            **_pixels(),
            0xFFFCFFFC: el(0xFFFCFFFC, "OB", bytes(10)),
        },
        True,
    ),
    "trailing bulk": ({**_pixels(), 0xFFFCFFFC: el(0xFFFCFFFC, "OB", bytes(3000))}, True),
    "no pixel data": ({PN: el(PN, "PN", b"A^B")}, True),
    "ISO_IR 100": (
        {
            0x00080005: el(0x00080005, "CS", b"ISO_IR 100"),
            PN: el(PN, "PN", "Müller".encode("latin-1")),
        },
        True,
    ),
    "ISO_IR 192": (
        {
            0x00080005: el(0x00080005, "CS", b"ISO_IR 192"),
            PN: el(PN, "PN", "Ωmega^Ü".encode()),
            0x00081110: seq(0x00081110, [item(el(0x00081150, "UI", uid("1.2")))]),
        },
        True,
    ),
    "ISO_IR 192, item with its own": (
        {
            0x00080005: el(0x00080005, "CS", b"ISO_IR 192"),
            0x00081110: seq(
                0x00081110,
                [
                    item(
                        el(0x00080005, "CS", b"ISO_IR 100")
                        + el(0x00081030, "LO", "é".encode("latin-1") + b" ")
                    )
                ],
            ),
        },
        True,
    ),
    # the general path decodes an item without its own character set as latin-1: declined
    "ISO_IR 192, non-ASCII in an item": (
        {
            0x00080005: el(0x00080005, "CS", b"ISO_IR 192"),
            0x00081110: seq(0x00081110, [item(el(0x00081030, "LO", "Ü ".encode()))]),
        },
        False,
    ),
    "ISO 2022": (
        {0x00080005: el(0x00080005, "CS", b"\\ISO 2022 IR 87"), PN: el(PN, "PN", b"A^B ")},
        False,
    ),
    "ISO 2022 in an item": (
        {
            0x00081110: seq(
                0x00081110, [item(el(0x00080005, "CS", b"ISO 2022 IR 100"))], undefined=True
            )
        },
        False,
    ),
    "empty character set": ({0x00080005: el(0x00080005, "CS", b"")}, False),
    "UN": (
        {0x00091001: el(0x00091001, "UN", b"\1\2"), 0x00090010: el(0x00090010, "LO", b"A ")},
        False,
    ),
    "UN public": ({0x00181030: el(0x00181030, "UN", b"ABCD")}, False),
    "unknown VR": ({0x00181030: el(0x00181030, "XX", b"ABCD")}, False),
    "not a number": ({0x00181050: el(0x00181050, "DS", b"abc ")}, False),
    "NaN": ({0x00189219: el(0x00189219, "FD", struct.pack("<d", float("nan")))}, False),
    "US of odd length": ({0x00280010: el(0x00280010, "US", b"\1\0\0")}, False),
    "two Rows": ({**_pixels(), 0x00280010: el(0x00280010, "US", struct.pack("<2H", 4, 4))}, False),
    "Rows as SS": ({**_pixels(), 0x00280010: el(0x00280010, "SS", struct.pack("<h", 4))}, False),
    "non-ASCII UID": ({0x00209161: el(0x00209161, "UI", "1.é".encode("latin-1"))}, False),
    "two SOP Instance UIDs": ({0x00080018: el(0x00080018, "UI", b"1.2\\1.3 ")}, False),
    "large value": ({0x00091001: el(0x00091001, "OB", bytes(300 * 1024))}, False),
    "undefined-length OB": ({0x00091001: el(0x00091001, "OB", b"", length=UNDEFINED)}, False),
    "private element after the pixel data": (
        {**_pixels(), 0x7FE10010: el(0x7FE10010, "OB", b"\1\2")},
        True,
    ),
    "second pixel data element": (
        {**_pixels(), 0x7FE00011: el(0x7FE00010, "OB", b"\1\2")},
        False,
    ),
    "data set element after the pixel data": (
        {**_pixels(), 0x7FE00011: el(0x00081030, "LO", b"AB")},
        False,
    ),
    "extended offset table after the pixel data": (
        {**_pixels(), 0x7FE00011: el(0x7FE00001, "OV", bytes(8))},
        False,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hand_built_files(tmp_path: Path, name: str) -> None:
    elements, taken = CASES[name]
    path = tmp_path / "x.dcm"
    path.write_bytes(part10(elements))
    got = check(path)
    assert (got is not None) == taken, name


def test_header_larger_than_the_first_read(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(part10({0x00204000: el(0x00204000, "UT", b"t" * (3 * CHUNK)), **_pixels()}))
    assert check(path) is not None
    items = [item(el(0x00081150, "UI", uid(f"1.2.{i}")), undefined=True) for i in range(5000)]
    path.write_bytes(part10({0x00081115: seq(0x00081115, items, undefined=True), **_pixels()}))
    assert check(path) is not None


def test_nesting_deeper_than_the_limit_is_declined(tmp_path: Path) -> None:
    body = el(PN, "PN", b"A^B ")
    for _ in range(20):
        body = seq(0x0040A730, [item(body)], undefined=True)
    path = tmp_path / "x.dcm"
    path.write_bytes(part10({0x0040A730: body}))
    assert check(path) is None


@pytest.mark.parametrize(
    "ts", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.3.99"]
)
def test_other_transfer_syntaxes_are_declined(tmp_path: Path, ts: str) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(part10({}, ts=ts))
    assert read_simple(path) is None


def test_out_of_order_and_repeated_elements_are_declined(tmp_path: Path) -> None:
    base = part10({})
    for extra in (el(PN, "PN", b"A^B "), el(0x00080016, "UI", uid(CT))):
        path = tmp_path / "x.dcm"
        path.write_bytes(base + extra)  # after (0020,000E): out of order, or repeated
        check(path)
        assert read_simple(path) is None


def test_bare_data_set_is_declined(tmp_path: Path) -> None:
    ds = make_dataset()
    path = tmp_path / "bare.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=False)
    assert read_simple(path) is None
    assert read_object(path).sop_instance_uid == ds.SOPInstanceUID


def test_encapsulated_frames(tmp_path: Path) -> None:
    for has_bot in (True, False):
        ds = make_dataset(frames=3)
        fragments = [b"\xff\xd8" + bytes([i]) * 101 + b"\xff\xd9" for i in range(3)]
        ds.PixelData = encapsulate(fragments, has_bot=has_bot)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
        path = write(ds, tmp_path / f"mf{has_bot}.dcm")
        got = check(path)
        assert got is not None and got.pixel is not None
        assert [f.number for f in got.pixel.frames] == [1, 2, 3]


def test_pydicom_written_sequences_of_both_kinds(tmp_path: Path) -> None:
    for undefined in (False, True):
        ds = make_dataset()
        icon = Dataset()
        icon.Rows = 40
        icon.Columns = 40
        icon.PixelData = bytes(range(256)) * 7
        icon["PixelData"].VR = "OB"
        inner = Dataset()
        inner.CodeValue = "123"
        inner.CodeMeaning = "thing"
        icon.ConceptNameCodeSequence = Sequence([inner])
        icon.is_undefined_length_sequence_item = undefined
        ds.IconImageSequence = Sequence([icon])
        ds["IconImageSequence"].is_undefined_length = undefined
        path = write(ds, tmp_path / f"icon{undefined}.dcm")
        assert check(path) is not None


# -- malformed input: declined, or refused with the general reader's error ------------------


SAMPLES = ("native", "nested", "encapsulated")


def _sample(kind: str, tmp_path: Path) -> Path:
    """A small file of a kind the fast reader takes."""
    path = tmp_path / f"{kind}.dcm"
    if kind == "native":
        write(make_dataset(rows=8, columns=8), path)
    elif kind == "nested":
        trailing = el(0xFFFCFFFC, "OB", bytes(6))
        path.write_bytes(part10({**NESTED, **_pixels(), 0xFFFCFFFC: trailing}))
    else:
        ds = make_dataset(frames=2)
        ds.PixelData = encapsulate([b"\xff\xd8" + b"a" * 30 + b"\xff\xd9"] * 2, has_bot=True)
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
        write(ds, path)
    assert read_simple(path) is not None
    return path


@pytest.mark.parametrize("kind", SAMPLES)
def test_truncated_anywhere(tmp_path: Path, kind: str) -> None:
    data = _sample(kind, tmp_path).read_bytes()
    cut = tmp_path / "cut.dcm"
    for size in [*range(0, len(data), 3), len(data) - 1]:
        cut.write_bytes(data[:size])
        check(cut)


@pytest.mark.parametrize("kind", SAMPLES)
def test_garbage_after_the_header_and_the_pixel_data(tmp_path: Path, kind: str) -> None:
    source = _sample(kind, tmp_path)
    data = source.read_bytes()
    start = read_with_pydicom(source).dataset_offset
    junk = [b"\0", b"\0" * 7, b"\xff" * 13, bytes(range(256)), b"\x08\0\x20\0DA\x08\0"]
    bad = tmp_path / "bad.dcm"
    for extra in junk:
        bad.write_bytes(data + extra)
        check(bad)
        bad.write_bytes(data[:start] + extra + data[start:])
        check(bad)


@pytest.mark.parametrize("kind", SAMPLES)
def test_every_header_word_changed(tmp_path: Path, kind: str) -> None:
    """Lengths, tags and VRs made wrong, one 16-bit word at a time."""
    source = _sample(kind, tmp_path)
    data = source.read_bytes()
    parsed = read_with_pydicom(source)
    end = parsed.pixel.value_offset + 16 if parsed.pixel else len(data)
    bad = tmp_path / "bad.dcm"
    for offset in range(128, min(end, len(data) - 1), 2):
        (word,) = struct.unpack_from("<H", data, offset)
        for changed in (word + 2, word - 1, 0xFFFF):
            patched = data[:offset] + struct.pack("<H", changed & 0xFFFF) + data[offset + 2 :]
            bad.write_bytes(patched)
            check(bad)


def test_read_object_refuses_like_before(tmp_path: Path) -> None:
    """The errors of read_object are the general reader's, whoever parsed first."""
    from vna.errors import MissingAttribute, TruncatedObject

    ds = make_dataset()
    del ds.StudyInstanceUID
    path = write(ds, tmp_path / "nostudy.dcm")
    with pytest.raises(MissingAttribute, match="StudyInstanceUID"):
        read_object(path)
    full = write(make_dataset(rows=64, columns=64), tmp_path / "full.dcm")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(full.read_bytes()[:-100])
    with pytest.raises(TruncatedObject):
        read_object(cut)
    assert pydicom.dcmread(full).SOPInstanceUID == read_object(full).sop_instance_uid


def test_cut_trailing_element_does_not_read_the_pixel_data(tmp_path: Path) -> None:
    import tracemalloc

    pixels = {**_pixels(rows=1024, columns=1024), 0xFFFCFFFC: el(0xFFFCFFFC, "OB", bytes(40))}
    path = tmp_path / "x.dcm"
    path.write_bytes(part10(pixels)[:-20])  # 1 MiB of pixel data, then half an element
    tracemalloc.start()
    assert read_simple(path) is None
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 512 * 1024
    check(path)
