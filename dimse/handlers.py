"""Event handlers bound to pynetdicom: C-ECHO, C-STORE, extended negotiation, cleanup.

Each handler parses the event, calls one core function and renders a status.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dsutils import split_dataset

from dimse import status
from dimse.acceptance import FIND_MODELS, GET_MODELS, MOVE_MODELS
from dimse.receive import ReceivedStore
from dimse.services import Services
from dimse.transfer import encode_store_response
from vna.errors import VnaError
from vna.ingest import DUPLICATE, IngestResult, Spool, ingest_spooled, part10_meta

log = logging.getLogger(__name__)


def handle_echo(event: evt.Event) -> int:
    """C-ECHO (PS3.7 9.1.5): the link works."""
    return status.SUCCESS


def store_received(
    services: Services,
    received: Path,
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str,
    calling_ae: str,
) -> IngestResult:
    """Ingest a C-STORE data set that pynetdicom received into ``received``.

    pynetdicom writes the data set after a File Meta Information of its own; the archive
    keeps the data set bytes exactly as received behind its own meta (PS3.10 7.1, with the
    Source AE Title), built in the spool folder without decoding the data set. (Most
    C-STOREs never get here: dimse/receive.py spools them straight from the socket.)

    Raises:
        VnaError: whatever ingest refuses (see dimse.status.ERROR_STATUS).
    """
    _meta, offset = split_dataset(received)
    archive = services.archive
    with Spool(archive) as spool:
        spool.write(part10_meta(sop_class, sop_instance, transfer_syntax, source_ae=calling_ae))
        with received.open("rb") as fp:
            fp.seek(offset)
            spool.copy_from(fp)
        sha256 = spool.finish()
        return ingest_spooled(
            archive,
            spool.path,
            sha256,
            spool.size,
            source=f"dimse:{calling_ae}",
            expected_sop_class=sop_class,
            route=f"ae:{calling_ae}",
            content=spool.content,
        )


def store_status(result: IngestResult) -> tuple[int, str]:
    """Status and comment for a stored object (PS3.4 B.2.3).

    An identical duplicate is a success (the object is in the archive). An object stored
    with warnings (a non-conformant value accepted, a new version of a known instance, a
    study flagged for review) is the warning "Data Set does not match SOP Class", with the
    first warning as Error Comment; every warning is kept in the index.
    """
    if result.status == DUPLICATE or not result.warnings:
        return status.SUCCESS, ""
    return status.DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING, status.error_comment(
        Exception(result.warnings[0])
    )


def refusal(exc: Exception, sop_instance: str, calling: str) -> tuple[int, str]:
    """Status and Error Comment of a C-STORE that ingest refused, logged."""
    code = status.status_for(exc, status.STORE)
    log.warning(
        "C-STORE of %s from %s refused (0x%04X): %s",
        sop_instance,
        calling,
        code,
        exc,
        exc_info=not isinstance(exc, VnaError),  # a bug: keep the traceback
    )
    return code, status.error_comment(exc)


def store_and_answer(assoc: Any, received: ReceivedStore) -> bytes | None:
    """Ingest a C-STORE spooled by dimse/receive.py; return its C-STORE-RSP command set
    (PS3.7 9.3.1.2), or None when the association ended first. A failure leaves nothing
    stored. Runs on the association's DUL thread (dimse/dul.py sends the answer)."""
    calling = str(assoc.requestor.ae_title).strip()
    if not received.take():
        return None  # the association ended and the spooled file is gone
    with received.spool:
        if received.error is not None:
            code, comment = refusal(received.error, received.sop_instance, calling)
        else:
            try:
                received.spool.hand_over()  # ingest stores or removes it from here on
                result = ingest_spooled(
                    assoc.services.archive,
                    received.spool.path,
                    received.sha256,
                    received.spool.size,
                    source=f"dimse:{calling}",
                    expected_sop_class=received.sop_class,
                    route=f"ae:{calling}",
                    content=received.spool.content,
                )
            except Exception as exc:
                code, comment = refusal(exc, received.sop_instance, calling)
            else:
                code, comment = store_status(result)
    return encode_store_response(
        received.sop_class, received.sop_instance, received.message_id, code, comment
    )


def handle_store(event: evt.Event, services: Services) -> Dataset:
    """C-STORE (PS3.4 B.2.2) as pynetdicom delivers it: spool, ingest, answer; a failure
    leaves nothing stored."""
    request: Any = event.request
    calling = str(event.assoc.requestor.ae_title).strip()
    reply = Dataset()
    try:
        result = store_received(
            services,
            Path(event.dataset_path),
            str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID),
            str(event.context.transfer_syntax),
            calling,
        )
    except Exception as exc:
        code, comment = refusal(exc, str(request.AffectedSOPInstanceUID), calling)
    else:
        code, comment = store_status(result)
    reply.Status = code
    if comment:
        reply.ErrorComment = comment
    return reply


def handle_extended_negotiation(event: evt.Event) -> dict[str, bytes]:
    """SOP Class Extended Negotiation (PS3.4 C.5.1.1, C.5.2.1, C.5.3.1): relational
    queries and retrievals, fuzzy semantic matching of person names; combined date-time
    matching and timezone adjustment are declined."""
    replies: dict[str, bytes] = {}
    requested: dict[str, bytes] = getattr(event, "app_info", {})
    for uid, info in requested.items():
        if uid in FIND_MODELS:
            wanted = bytes(info or b"")
            relational = wanted[0:1] == b"\x01"
            fuzzy = wanted[2:3] == b"\x01"
            replies[uid] = bytes([relational, 0, fuzzy])[: max(1, min(len(wanted), 3))]
        elif uid in MOVE_MODELS or uid in GET_MODELS:
            replies[uid] = b"\x01" if bytes(info or b"")[0:1] == b"\x01" else b"\x00"
    return replies


def discard_partial_store(event: evt.Event) -> None:
    """A connection that closes in the middle of a C-STORE leaves pynetdicom's half-written
    temporary file behind; remove it (the archive itself never saw the object)."""
    message = getattr(event.assoc.dimse, "message", None)
    handle = getattr(message, "_data_set_file", None)
    if handle is None:
        return
    with contextlib.suppress(OSError):
        handle.close()
    with contextlib.suppress(OSError):
        os.unlink(handle.name)


def bindings(services: Services) -> list[Any]:
    """The (event, handler[, args]) list the listener binds."""
    return [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [services]),
        (evt.EVT_SOP_EXTENDED, handle_extended_negotiation),
        (evt.EVT_CONN_CLOSE, discard_partial_store),
    ]
