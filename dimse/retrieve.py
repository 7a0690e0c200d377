"""C-MOVE (PS3.4 C.4.2) and C-GET (PS3.4 C.4.3) SCPs: C-STORE sub-operations of stored
objects, over a new association to the move destination or over the requester's own.

After each sub-operation a pending response reports the remaining, completed, failed and
warning counts; the final response lists the failed SOP Instance UIDs (PS3.4 C.4.2.1.4.2).
Each object goes out in its stored transfer syntax when the peer accepts it, else in one the
peer accepts and vna.transcode can produce; an object that can be given in none is a failed
sub-operation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import build_context
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.presentation import PresentationContext

from dimse import identifiers, status
from dimse.find import is_cancelled
from dimse.services import Services
from dimse.transfer import (
    SendFailed,
    encode_pending_retrieve_response,
    reactor_paused,
    send_c_store,
    send_messages,
    stored_data_set,
    without_meta,
)
from vna import transcode
from vna.errors import NotAcceptable, NotFound, StorageError, VnaError
from vna.query import QueryRequest
from vna.query import run as run_query
from vna.remote_aes import get_remote_ae
from vna.retrieve import InstanceRef, find_instances, open_instance

log = logging.getLogger(__name__)

#: Number of ... Sub-operations are US (PS3.7 E.1): no more instances per request.
MAX_SUB_OPERATIONS = 0xFFFF
#: Presentation contexts in one A-ASSOCIATE-RQ (odd IDs 1-255, PS3.8 9.3.2.2).
MAX_CONTEXTS = 128
#: Syntaxes proposed besides the stored ones, so a destination that refuses those can still
#: be served by transcoding.
FALLBACK_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
)


@dataclass
class Counts:
    """Sub-operation bookkeeping of one C-MOVE / C-GET."""

    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def record(self, ref: InstanceRef, code: int | None) -> None:
        """Count one finished sub-operation (None: it could not be attempted)."""
        self.remaining -= 1
        if code == status.SUCCESS:
            self.completed += 1
        elif code is not None and 0xB000 <= code <= 0xBFFF:
            self.warning += 1  # PS3.4 B.2.3 storage warnings
        else:
            self.failed += 1
            self.failed_uids.append(ref.sop_instance_uid)

    def fail_rest(self, refs: Iterable[InstanceRef]) -> None:
        for ref in refs:
            self.record(ref, None)


def instances(archive: Any, level: str, given: dict[str, list[str]]) -> list[InstanceRef]:
    """Current instances named by the unique keys of a retrieve identifier; higher-level
    keys given with a lower level narrow the search. Unknown UIDs match nothing."""
    found: dict[int, InstanceRef] = {}

    def add(study: str | None = None, series: str | None = None, sop: str | None = None) -> None:
        try:
            refs = find_instances(archive, study_uid=study, series_uid=series, sop_instance_uid=sop)
        except NotFound:
            return
        for ref in refs:
            found.setdefault(ref.pk, ref)

    studies = given.get("STUDY", [])
    one_study = studies[0] if len(studies) == 1 else None
    series = given.get("SERIES", [])
    one_series = series[0] if len(series) == 1 else None
    if level == "IMAGE":
        for sop in given["IMAGE"]:
            add(one_study, one_series, sop)
    elif level == "SERIES":
        for uid in given["SERIES"]:
            add(one_study, uid)
    elif level == "STUDY":
        for uid in given["STUDY"]:
            add(uid)
    else:
        for patient_id in given["PATIENT"]:
            request = QueryRequest(level="STUDY", keys={0x00100020: patient_id})
            for match in run_query(archive, request):
                add(match.study_uid)
    return list(found.values())


def proposals(refs: list[InstanceRef]) -> list[tuple[list[PresentationContext], set[str]]]:
    """Contexts to propose to a move destination, in batches of at most 128, each with the
    SOP classes it covers: every stored syntax of a class on its own context (to learn
    exactly which the peer accepts), then the fallbacks."""
    per_class: dict[str, list[str]] = {}
    for ref in refs:
        syntaxes = per_class.setdefault(ref.sop_class_uid, [])
        if ref.transfer_syntax_uid not in syntaxes:
            syntaxes.append(ref.transfer_syntax_uid)
    batches: list[tuple[list[PresentationContext], set[str]]] = []
    contexts: list[PresentationContext] = []
    classes: set[str] = set()
    for sop_class, stored in per_class.items():
        wanted = [*stored, *(ts for ts in FALLBACK_SYNTAXES if ts not in stored)]
        if len(wanted) > MAX_CONTEXTS:
            wanted = wanted[:MAX_CONTEXTS]
        if len(contexts) + len(wanted) > MAX_CONTEXTS:
            batches.append((contexts, classes))
            contexts, classes = [], set()
        contexts.extend(build_context(sop_class, [ts]) for ts in wanted)
        classes.add(sop_class)
    if contexts:
        batches.append((contexts, classes))
    return batches


def accepted_for_storage(assoc: Any, role: str) -> dict[str, list[tuple[int, str]]]:
    """SOP class -> [(context ID, transfer syntax)] we may send C-STORE requests on."""
    out: dict[str, list[tuple[int, str]]] = {}
    for cx in assoc.accepted_contexts:
        allowed = cx.as_scu if role == "scu" else cx.as_scp
        if allowed:
            out.setdefault(str(cx.abstract_syntax), []).append(
                (int(cx.context_id), str(cx.transfer_syntax[0]))
            )
    return out


def store_one(
    services: Services,
    assoc: Any,
    ref: InstanceRef,
    accepted: dict[str, list[tuple[int, str]]],
    message_id: int,
    originator: tuple[str, int] | None,
) -> int | None:
    """One C-STORE sub-operation: the response status, or None when the object could not be
    sent (no usable context, transcoding impossible, object unreadable).

    Raises:
        SendFailed: the association broke; no further sub-operation can run on it.
    """
    choices = accepted.get(ref.sop_class_uid, [])
    has_pixels = ref.pixel_offset is not None
    target = transcode.choose(ref.transfer_syntax_uid, [ts for _, ts in choices], has_pixels)
    if target is None:
        log.warning(
            "%s: the peer accepts no syntax for %s in %s that it can be given in",
            ref.sop_instance_uid,
            ref.sop_class_uid,
            ref.transfer_syntax_uid,
        )
        return None
    cx_id = next(cx for cx, ts in choices if ts == target)
    try:
        data: Iterable[bytes]
        if target == ref.transfer_syntax_uid:
            data = stored_data_set(services.archive, ref)
        else:
            with open_instance(services.archive, ref) as stream:
                data = [without_meta(transcode.transcode_file(stream, target))]
        return send_c_store(
            assoc, cx_id, ref.sop_class_uid, ref.sop_instance_uid, data, message_id, originator
        )
    except (NotAcceptable, StorageError) as exc:
        log.warning("%s cannot be sent: %s", ref.sop_instance_uid, exc)
        return None


def _failed_list(counts: Counts, transfer_syntax: str) -> BytesIO:
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = counts.failed_uids
    return BytesIO(identifiers.encode(ds, transfer_syntax))


class _Responder:
    """Builds and sends the C-MOVE / C-GET responses of one request."""

    def __init__(self, assoc: Any, req: Any, context: Any, primitive: type) -> None:
        self.assoc = assoc
        self.cx_id = int(context.context_id)
        self.transfer_syntax = str(context.transfer_syntax[0])
        self.rsp = primitive()
        self.rsp.MessageIDBeingRespondedTo = req.MessageID
        self.rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
        self.command_field = 0x8021 if primitive is C_MOVE else 0x8010  # PS3.7 E.1

    def _send(self, code: int, counts: Counts | None, remaining: bool, listed: bool) -> None:
        rsp = self.rsp
        rsp.Status = code
        rsp.Identifier = None
        rsp.ErrorComment = None
        if counts is not None:
            rsp.NumberOfRemainingSuboperations = counts.remaining if remaining else None
            rsp.NumberOfCompletedSuboperations = counts.completed
            rsp.NumberOfFailedSuboperations = counts.failed
            rsp.NumberOfWarningSuboperations = counts.warning
            if listed and counts.failed_uids:
                rsp.Identifier = _failed_list(counts, self.transfer_syntax)
        self.assoc.dimse.send_msg(rsp, self.cx_id)

    def pending(self, counts: Counts) -> None:
        """Sent after every sub-operation: written directly, not through pydicom."""
        if max(counts.remaining, counts.completed, counts.failed, counts.warning) > 0xFFFF:
            self._send(status.PENDING, counts, remaining=True, listed=False)
            return
        command = encode_pending_retrieve_response(
            self.command_field,
            str(self.rsp.AffectedSOPClassUID),
            int(self.rsp.MessageIDBeingRespondedTo),
            (counts.remaining, counts.completed, counts.failed, counts.warning),
        )
        send_messages(self.assoc, self.cx_id, [(command, None)])

    def cancelled(self, counts: Counts) -> None:
        self._send(status.CANCEL, counts, remaining=True, listed=True)

    def done(self, counts: Counts) -> None:
        if counts.failed == 0 and counts.warning == 0:
            code = status.SUCCESS
        elif counts.completed == 0 and counts.warning == 0:
            code = status.UNABLE_TO_PERFORM_SUB_OPERATIONS
        else:
            code = status.SUB_OPERATIONS_COMPLETE_WITH_FAILURES
        self._send(code, counts, remaining=False, listed=True)

    def refuse(self, code: int, comment: str) -> None:
        rsp = self.rsp
        rsp.Status = code
        rsp.Identifier = None
        rsp.ErrorComment = comment
        self.assoc.dimse.send_msg(rsp, self.cx_id)


def _requested(services: Services, req: Any, context: Any) -> list[InstanceRef]:
    """The instances a retrieve request names.

    Raises:
        VnaError: a malformed identifier, or too many instances.
    """
    ds = identifiers.decode(req.Identifier, str(context.transfer_syntax[0]))
    level, given = identifiers.retrieve_keys(ds, str(req.AffectedSOPClassUID))
    refs = instances(services.archive, level, given)
    if len(refs) > MAX_SUB_OPERATIONS:
        from vna.errors import OutOfResources

        raise OutOfResources(
            f"{len(refs)} instances: more than {MAX_SUB_OPERATIONS} in one request"
        )
    return refs


def _run(
    responder: _Responder,
    req: Any,
    refs: list[InstanceRef],
    counts: Counts,
    send: Callable[[InstanceRef, int], int | None],
) -> bool:
    """Run the sub-operations; False when the request was cancelled (already answered)."""
    for index, ref in enumerate(refs):
        if is_cancelled(responder.assoc, req.MessageID):
            responder.cancelled(counts)
            return False
        try:
            code = send(ref, index + 1)
        except SendFailed as exc:
            log.warning("sub-operations stopped: %s", exc)
            counts.fail_rest(refs[index:])
            return True
        counts.record(ref, code)
        if not responder.assoc.is_established:
            return False
        responder.pending(counts)
    return True


def move_scp(assoc: Any, req: C_MOVE, context: Any) -> None:
    """C-MOVE: sub-operations over a new association to the move destination."""
    services: Services = assoc.services
    responder = _Responder(assoc, req, context, C_MOVE)
    destination = str(req.MoveDestination or "").strip()
    try:
        refs = _requested(services, req, context)
        peer = get_remote_ae(services.archive, destination)
    except NotFound as exc:
        responder.refuse(status.MOVE_DESTINATION_UNKNOWN, status.error_comment(exc))
        return
    except Exception as exc:
        _log_refusal("C-MOVE", assoc, exc)
        responder.refuse(status.status_for(exc, status.RETRIEVE), status.error_comment(exc))
        return
    counts = Counts(len(refs))
    originator = (str(assoc.requestor.ae_title).strip(), int(req.MessageID or 0))
    by_class: dict[str, list[InstanceRef]] = {}
    for ref in refs:
        by_class.setdefault(ref.sop_class_uid, []).append(ref)
    message_ids = iter(range(1, 1 << 30))
    for contexts, classes in proposals(refs):
        batch = [ref for sop_class in classes for ref in by_class[sop_class]]
        store = services.associate(peer.host, peer.port, peer.ae_title, contexts=contexts)
        if not store.is_established:
            log.warning(
                "C-MOVE: cannot associate with %s at %s:%s", peer.ae_title, peer.host, peer.port
            )
            counts.fail_rest(batch)
            continue
        accepted = accepted_for_storage(store, "scu")

        def send(ref: InstanceRef, _n: int, store: Any = store, accepted: Any = accepted) -> Any:
            message_id = next(message_ids) & 0xFFFF or 1
            return store_one(services, store, ref, accepted, message_id, originator)

        try:
            with reactor_paused(store):
                finished = _run(responder, req, batch, counts, send)
        finally:
            if store.is_established:
                store.release()
        if not finished:
            return
    responder.done(counts)


def get_scp(assoc: Any, req: C_GET, context: Any) -> None:
    """C-GET: sub-operations on the requester's own association, on the storage contexts for
    which it took the SCP role (SCP/SCU Role Selection, PS3.4 C.4.3.1)."""
    services: Services = assoc.services
    responder = _Responder(assoc, req, context, C_GET)
    try:
        refs = _requested(services, req, context)
    except Exception as exc:
        _log_refusal("C-GET", assoc, exc)
        responder.refuse(status.status_for(exc, status.RETRIEVE), status.error_comment(exc))
        return
    counts = Counts(len(refs))
    accepted = accepted_for_storage(assoc, "scu")
    if _run(
        responder,
        req,
        refs,
        counts,
        lambda ref, n: store_one(services, assoc, ref, accepted, n & 0xFFFF or 1, None),
    ):
        responder.done(counts)


def _log_refusal(what: str, assoc: Any, exc: Exception) -> None:
    if isinstance(exc, VnaError):
        log.info("%s from %s refused: %s", what, assoc.requestor.ae_title, exc)
    else:
        log.exception("%s from %s failed", what, assoc.requestor.ae_title)
