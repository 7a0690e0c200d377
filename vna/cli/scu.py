"""`vna echo|store|move` and `vna find --remote`: small DICOM clients for testing a link.

A target is ``AET@HOST:PORT`` or the AE title of a known peer (`vna ae list`). Objects are
sent as stored in their files (no re-encoding): one presentation context is proposed for
each SOP class and transfer syntax found.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import typer
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.dsutils import split_dataset

from vna import dicomjson
from vna.cli.base import DataDir, app, console, err_console, fail, open_archive, settings_from_cli
from vna.errors import BadRequest, NotFound
from vna.remote_aes import get_remote_ae

VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
MAX_CONTEXTS = 128
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR is an index, never sent

Target = typer.Argument(..., help="AET@HOST:PORT, or the AE title of a known peer.")
CallingAe = typer.Option(None, "--aet", help="Our calling AE title (default: VNA_AE_TITLE).")


def parse_target(target: str, data_dir: Path | None) -> tuple[str, str, int]:
    """``AET@HOST:PORT`` or a known AE title -> (AE title, host, port)."""
    if "@" in target:
        aet, _, address = target.partition("@")
        host, colon, port = address.rpartition(":")
        if not (aet and colon and host and port.isdigit()):
            fail(f"{target!r} is not AET@HOST:PORT", 2)
        return aet.strip(), host.strip("[]"), int(port)
    with open_archive(data_dir) as archive:
        try:
            peer = get_remote_ae(archive, target)
        except NotFound as exc:
            fail(str(exc), 2)
    return peer.ae_title, peer.host, peer.port


def _nodelay(event: evt.Event) -> None:
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@contextmanager
def associated(
    target: str, calling: str | None, contexts: list[Any], data_dir: Path | None
) -> Iterator[Any]:
    """An established association to the target (released afterwards), or exit 1."""
    aet, host, port = parse_target(target, data_dir)
    settings = settings_from_cli(data_dir)
    if settings.log_level.upper() != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    ae = AE(ae_title=(calling or settings.ae_title).strip())
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.dimse_timeout
    assoc = ae.associate(
        host, port, contexts=contexts, ae_title=aet, evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)]
    )
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
        fail(f"association with {aet} at {host}:{port} {why}")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _status(ds: Dataset | None) -> int:
    return int(ds.Status) if ds is not None and "Status" in ds else -1


@app.command("echo")
def echo_command(
    target: str = Target,
    calling: str = CallingAe,
    repeat: int = typer.Option(1, "--repeat", "-n", help="Number of C-ECHOs."),
    data_dir: Path | None = DataDir,
) -> None:
    """Send C-ECHO to a peer and print the round-trip time."""
    with associated(target, calling, [build_context(VERIFICATION)], data_dir) as assoc:
        for _ in range(max(1, repeat)):
            start = time.perf_counter()
            code = _status(assoc.send_c_echo())
            took = (time.perf_counter() - start) * 1000
            if code != 0:
                fail(f"C-ECHO answered 0x{code:04X}" if code >= 0 else "no C-ECHO response")
            console.print(f"C-ECHO success in {took:.2f} ms", highlight=False)


def _dicom_files(paths: list[Path]) -> list[tuple[Path, str, str, bool]]:
    """(path, SOP class, transfer syntax, has File Meta) of every DICOM file under the paths;
    a bare data set (no Part 10 header) is sent decoded, in its own encoding."""
    from vna.ingest import iter_files

    found = []
    for path in iter_files(paths):
        try:
            meta, _offset = split_dataset(path)
            found.append(
                (path, str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID), True)
            )
            continue
        except Exception:
            pass
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
            implicit, little = ds.original_encoding
            ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
            if not little:
                ts = ExplicitVRBigEndian
            found.append((path, str(ds.SOPClassUID), str(ts), False))
        except Exception:
            err_console.print(f"skipped {path}: not a DICOM file", highlight=False)
    return found


def _decoded(path: Path, ts: str) -> Dataset:
    ds = pydicom.dcmread(path, force=True)
    ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    return ds


@app.command("store")
def store_command(
    target: str = Target,
    paths: list[Path] = typer.Argument(..., help="Files and folders (walked recursively)."),
    calling: str = CallingAe,
    data_dir: Path | None = DataDir,
) -> None:
    """Send DICOM files to a peer with C-STORE, byte for byte as they are stored."""
    files = [f for f in _dicom_files(paths) if f[1] != MEDIA_STORAGE_DIRECTORY]
    if not files:
        fail("no DICOM file to send")
    pairs = list(dict.fromkeys((cls, ts) for _p, cls, ts, _meta in files))
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's data set without decoding it
    sent = failed = 0
    for start in range(0, len(pairs), MAX_CONTEXTS):
        batch = set(pairs[start : start + MAX_CONTEXTS])
        contexts = [build_context(cls, [ts]) for cls, ts in sorted(batch)]
        with associated(target, calling, contexts, data_dir) as assoc:
            for path, cls, ts, has_meta in files:
                if (cls, ts) not in batch:
                    continue
                try:
                    code = _status(assoc.send_c_store(path if has_meta else _decoded(path, ts)))
                except (ValueError, AttributeError, RuntimeError) as exc:
                    code, why = -1, str(exc)
                else:
                    why = f"status 0x{code:04X}" if code >= 0 else "no response"
                if code == 0 or 0xB000 <= code <= 0xBFFF:
                    sent += 1
                else:
                    failed += 1
                    err_console.print(f"failed {path}: {why}", highlight=False)
    console.print(f"sent {sent}, failed {failed}", highlight=False)
    raise typer.Exit(1 if failed else 0)


@app.command("move")
def move_command(
    target: str = Target,
    destination: str = typer.Option(..., "--dest", help="Move destination AE title."),
    level: str = typer.Option("study", "--level", "-l", help="patient, study, series, image."),
    keys: list[str] = typer.Option([], "--key", "-k", help="KEY=VALUE (unique keys)."),
    calling: str = CallingAe,
    data_dir: Path | None = DataDir,
) -> None:
    """Ask a peer to C-MOVE objects to a destination AE; prints the sub-operation counts."""
    from vna.cli.core import LEVEL_ALIASES, parse_keys

    level_name = LEVEL_ALIASES.get(level.lower())
    if level_name is None:
        fail(f"level must be patient, study, series or image, not {level!r}", 2)
    try:
        identifier = _identifier(level_name, parse_keys(keys), [])
    except BadRequest as exc:
        fail(str(exc), 2)
    model = PATIENT_ROOT_MOVE if level_name == "PATIENT" else STUDY_ROOT_MOVE
    code = -1
    last: Dataset | None = None
    with associated(target, calling, [build_context(model)], data_dir) as assoc:
        for rsp, _found in assoc.send_c_move(identifier, destination, model):
            code, last = _status(rsp), rsp
            if code in (0xFF00, 0xFF01):
                console.print(_counts(rsp), highlight=False)
    if last is None:
        fail("no C-MOVE response")
    text = f"C-MOVE final status 0x{code:04X}: {_counts(last)}"
    if "ErrorComment" in last:
        text += f" ({last.ErrorComment})"
    console.print(text, highlight=False)
    raise typer.Exit(0 if code == 0 else 1)


def _counts(rsp: Dataset) -> str:
    names = ("Remaining", "Completed", "Failed", "Warning")
    parts = []
    for name in names:
        value = rsp.get(f"NumberOf{name}Suboperations")
        if value is not None:
            parts.append(f"{name.lower()} {value}")
    return ", ".join(parts) or "no counts"


def _identifier(level: str, keys: dict[int, str], returns: list[int]) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = level
    for tag, value in keys.items():
        ds.add_new(tag, _vr(tag), value or None)
    for tag in returns:
        if tag not in ds:
            ds.add_new(tag, _vr(tag), None)
    return ds


def _vr(tag: int) -> str:
    from pydicom.datadict import dictionary_VR

    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "UN"


def remote_find(
    target: str,
    level: str,
    keys: dict[int, str],
    returns: list[int],
    as_json: bool,
    data_dir: Path | None,
) -> list[Dataset]:
    """`vna find --remote`: the same query as a C-FIND to a peer; returns the answers
    (printed here as DICOM JSON with ``as_json``)."""
    model = PATIENT_ROOT_FIND if level == "PATIENT" else STUDY_ROOT_FIND
    identifier = _identifier(level, keys, returns)
    answers: list[Dataset] = []
    with associated(target, None, [build_context(model)], data_dir) as assoc:
        for rsp, found in assoc.send_c_find(identifier, model):
            code = _status(rsp)
            if code in (0xFF00, 0xFF01) and found is not None:
                answers.append(found)
            elif code not in (0xFF00, 0xFF01):
                if code not in (0x0000, 0xB001):
                    comment = f" ({rsp.ErrorComment})" if "ErrorComment" in rsp else ""
                    fail(f"C-FIND answered 0x{code:04X}{comment}")
                if code == 0xB001:
                    err_console.print("the peer's response limit was reached")
    if as_json:
        print(dicomjson.dumps([dicomjson.dataset_to_json(a, None)[0] for a in answers]))
    return answers
