"""Storage Commitment Push Model SCP (PS3.4 J.3): N-ACTION, then N-EVENT-REPORT.

The N-ACTION is answered at once; each referenced object is then checked in the store (its
bytes must still hash to the SHA-256 recorded at ingest) and the result is reported with an
N-EVENT-REPORT. The report goes on the requester's association when it is still open (the
requester waits for it there), otherwise on a new association to the requester, found among
the known AEs (`vna ae add`), proposing the SCP role for the SOP class (PS3.4 J.3.3).
Verification runs in its own thread so that the requester's association stays responsive.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import build_context, build_role
from pynetdicom.dimse_primitives import N_ACTION

from dimse import identifiers, status
from dimse.acceptance import STORAGE_COMMITMENT_PUSH_MODEL
from dimse.services import Services
from vna.errors import BadRequest, NotFound
from vna.remote_aes import get_remote_ae
from vna.retrieve import get_instance, has_checksum

log = logging.getLogger(__name__)

#: The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.1).
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID (PS3.4 J.3.2.1)
ALL_COMMITTED = 1  # Event Type IDs (PS3.4 J.3.3.1)
FAILURES_EXIST = 2
#: Seconds after the N-ACTION response within which a requester that will not wait for the
#: report on its association has asked to release it.
LEAVE_GRACE = 0.25


@dataclass
class Outcome:
    """Which references are committed and which failed (with their Failure Reason)."""

    committed: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, int]] = field(default_factory=list)


def parse_request(info: Dataset) -> tuple[str, list[tuple[str, str]]]:
    """Transaction UID and (SOP Class, SOP Instance) references of an N-ACTION.

    Raises:
        BadRequest: a missing Transaction UID or Referenced SOP Sequence.
    """
    transaction = str(info.get("TransactionUID", "") or "").strip()
    if not transaction:
        raise BadRequest("Transaction UID (0008,1195) is missing")
    items = info.get("ReferencedSOPSequence") or []
    refs = []
    for item in items:
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "").strip()
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not sop_class or not sop_instance:
            raise BadRequest("a Referenced SOP Sequence item lacks its UIDs")
        refs.append((sop_class, sop_instance))
    if not refs:
        raise BadRequest("Referenced SOP Sequence (0008,1199) is missing or empty")
    return transaction, refs


def verify(services: Services, refs: list[tuple[str, str]]) -> Outcome:
    """Commit what is stored, of the right class, with bytes that still verify."""
    outcome = Outcome()
    for sop_class, sop_instance in refs:
        try:
            ref = get_instance(services.archive, sop_instance)
        except NotFound:
            outcome.failed.append((sop_class, sop_instance, status.NO_SUCH_SOP_INSTANCE))
            continue
        except Exception as exc:
            outcome.failed.append((sop_class, sop_instance, status.status_for(exc, status.COMMIT)))
            continue
        if ref.sop_class_uid != sop_class:
            outcome.failed.append((sop_class, sop_instance, status.CLASS_INSTANCE_CONFLICT))
        elif not has_checksum(services.archive, ref):
            log.error("storage commitment: %s fails its checksum", sop_instance)
            outcome.failed.append((sop_class, sop_instance, status.PROCESSING_FAILURE))
        else:
            outcome.committed.append((sop_class, sop_instance))
    return outcome


def event_information(transaction: str, outcome: Outcome, retrieve_ae: str) -> Dataset:
    """N-EVENT-REPORT Event Information (PS3.4 Table J.3-2)."""
    ds = Dataset()
    ds.TransactionUID = transaction
    ds.RetrieveAETitle = retrieve_ae
    if outcome.committed:
        items = []
        for sop_class, sop_instance in outcome.committed:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            item.RetrieveAETitle = retrieve_ae
            items.append(item)
        ds.ReferencedSOPSequence = Sequence(items)
    if outcome.failed:
        failed = []
        for sop_class, sop_instance, reason in outcome.failed:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            item.FailureReason = reason
            failed.append(item)
        ds.FailedSOPSequence = Sequence(failed)
    return ds


def commit_scp(assoc: Any, req: N_ACTION, context: Any) -> None:
    """Answer the N-ACTION, then verify and report in the background."""
    services: Services = assoc.services
    rsp = N_ACTION()
    rsp.MessageIDBeingRespondedTo = req.MessageID
    rsp.AffectedSOPClassUID = req.RequestedSOPClassUID
    rsp.AffectedSOPInstanceUID = req.RequestedSOPInstanceUID
    rsp.ActionTypeID = req.ActionTypeID
    rsp_any: Any = rsp  # pynetdicom types these attributes as None
    cx_id = int(context.context_id)
    if req.ActionTypeID != REQUEST_STORAGE_COMMITMENT:
        rsp.Status = status.NO_SUCH_ACTION_TYPE
        assoc.dimse.send_msg(rsp, cx_id)
        return
    if str(req.RequestedSOPInstanceUID) != WELL_KNOWN_INSTANCE:
        rsp.Status = status.NO_SUCH_SOP_INSTANCE
        assoc.dimse.send_msg(rsp, cx_id)
        return
    try:
        info = identifiers.decode(req.ActionInformation, str(context.transfer_syntax[0]))
        transaction, refs = parse_request(info)
    except BadRequest as exc:
        rsp.Status = status.INVALID_ARGUMENT_VALUE
        rsp_any.ErrorComment = status.error_comment(exc)
        assoc.dimse.send_msg(rsp, cx_id)
        return
    rsp.Status = status.SUCCESS
    assoc.dimse.send_msg(rsp, cx_id)
    requester = str(assoc.requestor.ae_title).strip()
    threading.Thread(
        target=_verify_and_report,
        args=(assoc, services, requester, transaction, refs),
        name=f"commitment-{transaction[-12:]}",
        daemon=True,
    ).start()


def _requester_waits(assoc: Any, started: float) -> bool:
    """Whether the requester stays on its association for the report. One that leaves sends
    its A-RELEASE-RQ right after the N-ACTION response; give it LEAVE_GRACE to do so."""
    while True:
        if not assoc.is_established or assoc.acse.is_release_requested():
            return False
        if time.monotonic() - started >= LEAVE_GRACE:
            return True
        time.sleep(0.01)


def _verify_and_report(
    assoc: Any, services: Services, requester: str, transaction: str, refs: list[tuple[str, str]]
) -> None:
    started = time.monotonic()
    try:
        outcome = verify(services, refs)
        info = event_information(transaction, outcome, services.ae_title)
        event_type = FAILURES_EXIST if outcome.failed else ALL_COMMITTED
        if _requester_waits(assoc, started) and _report(assoc, info, event_type):
            return
        _report_on_new_association(services, requester, info, event_type)
    except Exception:
        log.exception("storage commitment %s for %s failed", transaction, requester)


def _report(assoc: Any, info: Dataset, event_type: int) -> bool:
    """Send the N-EVENT-REPORT on an association; True when the peer acknowledged it."""
    try:
        reply = assoc.send_n_event_report(
            info, event_type, STORAGE_COMMITMENT_PUSH_MODEL, WELL_KNOWN_INSTANCE
        )
    except (RuntimeError, ValueError) as exc:
        log.info("storage commitment report not sent on this association: %s", exc)
        return False
    return int(reply.get("Status", 0xFFFF)) == status.SUCCESS if reply else False


def _report_on_new_association(
    services: Services, requester: str, info: Dataset, event_type: int
) -> None:
    try:
        peer = get_remote_ae(services.archive, requester)
    except NotFound:
        log.error(
            "storage commitment report for %s cannot be delivered: the requester left and "
            "its address is unknown (add it with `vna ae add`)",
            requester,
        )
        return
    store = services.associate(
        peer.host,
        peer.port,
        peer.ae_title,
        contexts=[build_context(STORAGE_COMMITMENT_PUSH_MODEL)],
        ext_neg=[build_role(STORAGE_COMMITMENT_PUSH_MODEL, scp_role=True)],
    )
    if not store.is_established:
        log.error("storage commitment report: cannot associate with %s", peer.ae_title)
        return
    try:
        if not _report(store, info, event_type):
            log.error("storage commitment report refused by %s", peer.ae_title)
    finally:
        if store.is_established:
            store.release()
