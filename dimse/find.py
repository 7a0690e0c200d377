"""C-FIND SCP (PS3.4 C.4.1), Patient Root and Study Root, through the core's query engine.

Matches are streamed: each pending response is sent as soon as its row is read, so the
first answer leaves before the whole result is built. A C-CANCEL is looked for before each
response and ends the query at once (the iterator is closed, which ends the database read).
After the first, responses leave in groups of up to
BATCH, packed into as few PDUs as the peer's maximum PDU length allows. The number of
answers is capped by ``max_query_results``; when more match, the final
response is the warning "matching reached response limit" (0xB001).
"""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom.dimse_primitives import C_FIND

from dimse import identifiers, status
from dimse.transfer import encode_find_response, send_messages
from vna import query

log = logging.getLogger(__name__)

#: Pending responses packed together after the first (C-CANCEL is checked before each).
BATCH = 16


def fuzzy_negotiated(assoc: Any, sop_class: str) -> bool:
    """Whether the SCU asked for (and was granted) fuzzy semantic matching of person names
    (SOP Class Extended Negotiation byte 3, PS3.4 C.5.1.1)."""
    info = assoc.acceptor.sop_class_extended.get(sop_class) or b""
    return bytes(info)[2:3] == b"\x01"


def is_cancelled(assoc: Any, message_id: int) -> bool:
    """Whether a C-CANCEL for this request has arrived (pynetdicom files them by the Message
    ID Being Responded To as they are decoded)."""
    return message_id in assoc.dimse.cancel_req


def find_scp(assoc: Any, req: C_FIND, context: Any) -> None:
    """Answer one C-FIND request on ``assoc``."""
    services = assoc.services
    cx_id = int(context.context_id)
    transfer_syntax = str(context.transfer_syntax[0])
    sop_class = str(req.AffectedSOPClassUID)
    message_id = int(req.MessageID or 0)

    def final(code: int, comment: str = "") -> None:
        response = encode_find_response(sop_class, message_id, code, False, comment)
        send_messages(assoc, cx_id, [(response, None)])

    cap = services.settings.max_query_results or None
    try:
        ds = identifiers.decode(req.Identifier, transfer_syntax)
        found = identifiers.parse_find(
            ds,
            sop_class,
            fuzzy=fuzzy_negotiated(assoc, sop_class),
            limit=cap + 1 if cap else None,
        )
        warn = bool(query.unsupported_keys(found.request))
        matches = query.run(services.archive, found.request)
    except Exception as exc:
        _log_failure(assoc, exc)
        final(status.status_for(exc, status.FIND), status.error_comment(exc))
        return
    pending = status.PENDING_WARNING if warn else status.PENDING
    sent = 0
    batch: list[tuple[bytes, bytes | None]] = []

    def flush() -> None:
        send_messages(assoc, cx_id, batch)
        batch.clear()

    try:
        for match in matches:
            if is_cancelled(assoc, message_id):
                batch.clear()
                final(status.CANCEL)
                return
            if cap is not None and sent >= cap:
                flush()
                final(status.RESPONSE_LIMIT_REACHED, f"more than {cap} matches; narrow the query")
                return
            answer = identifiers.answer(found, match, services.ae_title)
            batch.append(
                (
                    encode_find_response(sop_class, message_id, pending, True),
                    identifiers.encode(answer, transfer_syntax),
                )
            )
            sent += 1
            if sent == 1 or len(batch) >= BATCH:
                flush()  # the first answer goes out at once, the others in groups
            if not assoc.is_established:
                return
    except Exception as exc:
        _log_failure(assoc, exc)
        batch.clear()
        final(status.status_for(exc, status.FIND), status.error_comment(exc))
        return
    finally:
        matches.close()  # type: ignore[attr-defined]
    if is_cancelled(assoc, message_id):
        batch.clear()
        final(status.CANCEL)
        return
    batch.append((encode_find_response(sop_class, message_id, status.SUCCESS, False), None))
    flush()


def _log_failure(assoc: Any, exc: Exception) -> None:
    from vna.errors import VnaError

    if isinstance(exc, VnaError):
        log.info("C-FIND from %s refused: %s", assoc.requestor.ae_title, exc)
    else:
        log.exception("C-FIND from %s failed", assoc.requestor.ae_title)
