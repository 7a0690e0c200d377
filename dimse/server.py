"""The DIMSE listener: one pynetdicom AE, its presentation contexts and handler binding.

pynetdicom runs every association in its own threads and the core is synchronous, so
handlers call the core directly from those threads (vna/index/db.py explains how the index
copes). C-ECHO and C-STORE use pynetdicom's service classes with our handlers; C-FIND,
C-MOVE, C-GET and storage commitment are served by our own service loops (dimse/find.py,
dimse/retrieve.py, dimse/commitment.py), because they stream from the index, send the stored
bytes unchanged and order N-EVENT-REPORT after N-ACTION, which pynetdicom's generic loops
cannot do. Three small subclasses plug that in:

- ``_RequestHandler`` sets TCP_NODELAY on each accepted socket and gives the association
  the two behaviours below;
- ``VnaACSE`` applies the calling/called AE title policy (with the proper A-ASSOCIATE-RJ
  reason) and builds the accepted contexts in the requester's order of preference;
- ``VnaAssociation`` routes Q/R and storage commitment requests to our service loops and
  wakes up as soon as a message arrives instead of polling every millisecond.
"""

from __future__ import annotations

import functools
import logging
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any, cast

from pydicom import config as pydicom_config
from pynetdicom import AE, _config, evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, N_ACTION
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dimse import acceptance, commitment, find, handlers, retrieve, transfer, uidcache
from dimse.dul import WakingDUL
from dimse.receive import ReceivedStore, StoreReceiver
from dimse.services import QuickEndAssociation, Services, nodelay
from vna.archive import Archive
from vna.config import Settings
from vna.ingest import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

log = logging.getLogger(__name__)
#: How often an association's reactor checks, between requests, for the network timeout
#: and a dead DUL thread (a release or abort wakes it at once: WakingDUL; so does a report
#: sent from another thread). C-STOREs never wake it (the DUL thread serves them), and each
#: wake-up takes the interpreter lock from the thread that does (a 5 ms poll cost four
#: small-object associations 2–7% of their rate, in alternating rounds on a noisy VM).
REACTOR_POLL = 0.05

ServiceLoop = Callable[[Any, Any, Any], None]


def _service_loop(msg: Any) -> ServiceLoop | None:
    """Our own implementation of a request, or None to let pynetdicom serve it."""
    if isinstance(msg, C_FIND) and msg.AffectedSOPClassUID in acceptance.FIND_MODELS:
        return find.find_scp
    if isinstance(msg, C_MOVE) and msg.AffectedSOPClassUID in acceptance.MOVE_MODELS:
        return retrieve.move_scp
    if isinstance(msg, C_GET) and msg.AffectedSOPClassUID in acceptance.GET_MODELS:
        return retrieve.get_scp
    if (
        isinstance(msg, N_ACTION)
        and msg.RequestedSOPClassUID == acceptance.STORAGE_COMMITMENT_PUSH_MODEL
    ):
        return commitment.commit_scp
    return None


class VnaAssociation(QuickEndAssociation):
    """An acceptor association that serves Q/R and commitment with our service loops."""

    services: Services

    def _serve_request(self, msg: Any, context_id: int) -> None:
        if isinstance(msg, ReceivedStore):  # when the DUL thread does not ingest itself
            try:
                command = handlers.store_and_answer(self, msg)
                if command is not None:
                    transfer.send_messages(self, context_id, [(command, None)])
            except Exception:
                log.exception("C-STORE from %s failed", self.requestor.ae_title)
                self.abort()
            return
        loop = _service_loop(msg)
        context = self._accepted_cx.get(context_id)
        if loop is None or context is None or self._sent_release or not msg.is_valid_request:
            super()._serve_request(msg, context_id)
            return
        # a C-CANCEL may arrive before its request is served: keep it (pynetdicom drops it)
        self._is_paused = True  # our loop sends and receives itself (see send_* methods)
        try:
            loop(self, msg, context)
        except Exception:
            log.exception("%s from %s failed", msg.msg_type, self.requestor.ae_title)
            self.abort()
        finally:
            self._is_paused = False
            self.dimse.cancel_req = {}

    def send_n_event_report(self, *args: Any, **kwargs: Any) -> Any:
        """As pynetdicom's, which waits for the reactor to pause: wake it first, rather than
        let the report wait for the reactor's next poll (the checkpoint is closed first, so
        that the woken reactor stops at it)."""
        self._reactor_checkpoint.clear()
        self.dimse.msg_queue.put((None, None))
        return super().send_n_event_report(*args, **kwargs)

    def _run_reactor(self) -> None:
        """pynetdicom's reactor checks for messages every millisecond; this one waits on the
        DIMSE queue, so a request is served as soon as it is decoded. Release, abort, a dead
        DUL thread and the network timeout are checked between waits as before."""
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            try:
                context_id, msg = self.dimse.msg_queue.get(timeout=REACTOR_POLL)
            except queue.Empty:
                context_id, msg = None, None
            if msg is not None:
                self._serve_request(msg, cast(int, context_id))
            if self._check_end():
                return

    def _check_end(self) -> bool:
        """Release, abort, dead DUL or idle timeout: True when the association is over."""
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            log.warning(
                "network timeout: aborting the association with %s", self.requestor.ae_title
            )
            self.abort()
            self.kill()
            return True
        return False


class VnaACSE(ACSE):
    """Association acceptance: AE title policy and contexts in the requester's order."""

    def _negotiate_as_acceptor(self) -> None:
        assoc = cast(VnaAssociation, self.assoc)
        services = assoc.services
        request = cast(Any, self.requestor.primitive)
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        peer = str(assoc.requestor.address)
        reason = None
        if not services.policy.allows(calling, peer):
            reason = acceptance.REASON_CALLING_AE_NOT_RECOGNIZED
        elif services.settings.dimse_check_called_ae and called != services.ae_title:
            reason = acceptance.REASON_CALLED_AE_NOT_RECOGNIZED
        if reason is not None:
            log.warning("association from %s at %s (called %s) rejected", calling, peer, called)
            self.requestor.ae_title = calling
            self.send_reject(acceptance.REJECTED_PERMANENT, acceptance.SOURCE_SERVICE_USER, reason)
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()
            return
        self.acceptor.supported_contexts = acceptance.contexts_for(
            request.presentation_context_definition_list, services.supported
        )
        super()._negotiate_as_acceptor()


class _RequestHandler(RequestHandler):
    """Creates our association for each accepted connection."""

    def handle(self) -> None:
        try:
            super().handle()  # returns once the association's thread runs
        finally:
            server = cast(_Server, self.server)
            with server.adopting_lock:
                server.adopting = max(0, server.adopting - 1)

    def _create_association(self) -> Association:
        nodelay(self.request)
        assoc = super()._create_association()
        # pynetdicom builds the association and its ACSE itself; our subclasses only add
        # methods, so switching the class of the fresh objects is safe
        assoc.__class__ = VnaAssociation
        assoc.acse.__class__ = VnaACSE
        WakingDUL.install(assoc.dul)
        services = cast(_Server, self.server).services
        cast(VnaAssociation, assoc).services = services
        dul = cast(WakingDUL, assoc.dul)
        dul.receiver_factory = functools.partial(_receiver, services)
        dul.store_handler = handlers.store_and_answer
        return assoc


def _receiver(services: Services, assoc: Any) -> StoreReceiver:
    """The StoreReceiver of an established association (its calling AE title is known)."""
    calling = str(assoc.requestor.ae_title).strip()
    return StoreReceiver(assoc, services.archive, calling)


class _AE(AE):
    """The archive's AE: the associations it requests (C-MOVE sub-operations, storage
    commitment reports) get the waking DUL too, with C-STORE responses decoded directly."""

    def _create_socket(self, assoc: Association, address: Any, tls_args: Any) -> Any:
        sock = super()._create_socket(assoc, address, tls_args)
        WakingDUL.install(assoc.dul)
        cast(WakingDUL, assoc.dul).receiver_factory = _response_receiver
        return sock


def _response_receiver(assoc: Any) -> StoreReceiver:
    """For an association we requested: responses only (no C-STORE is spooled)."""
    return StoreReceiver(assoc, None, "")


class _Server(ThreadedAssociationServer):
    services: Services
    #: Connections handed to adopt() whose association thread has not started yet.
    adopting: int = 0
    adopting_lock = threading.Lock()

    def service_actions(self) -> None:
        """Nothing between accepts. pynetdicom forces a full garbage collection every 60
        turns of the accept loop; with the archive loaded that takes 50 ms or more, and
        every association of the process waits meanwhile. Python's own collector reclaims
        finished associations."""


class _AdoptingServer(_Server):
    """A server that does not listen: `vna serve` accepts the connections in one process
    and hands each to a server process (vna/cli/balance.py), which adopts it."""

    def server_bind(self) -> None:
        pass

    def server_activate(self) -> None:
        pass

    def shutdown(self) -> None:
        """Nothing to stop but the (unbound) socket: there is no accept loop."""
        self.server_close()
        self.ae._servers.remove(cast(Any, self))


class DimseServer:
    """The archive's DICOM listener; ``start`` returns at once, ``stop`` ends every
    association and closes the port."""

    def __init__(
        self, archive: Archive, settings: Settings | None = None, *, listen: bool = True
    ) -> None:
        self.archive = archive
        self.settings = settings or archive.settings
        self.listen = listen  # False: serve only the connections given to adopt()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ae: AE | None = None

    def start(self) -> None:
        """Bind the port (unless not listening) and serve in a background thread.

        Raises:
            OSError: the address cannot be bound.
        """
        settings = self.settings
        # pynetdicom's switches are process-wide: receive C-STORE data into a file (memory
        # does not grow with object size) and skip its per-message logging handlers.
        _config.STORE_RECV_CHUNKED_DATASET = True
        _config.LOG_HANDLER_LEVEL = "none"
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        # pydicom checks every UID it builds against a regular expression only to warn:
        # an association request proposing a hundred storage classes built thousands. The
        # archive judges what it receives itself (vna/dicomfile.py), so the check is off.
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
        uidcache.install()
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        ae = _AE(ae_title=settings.ae_title.strip())
        ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        ae.maximum_pdu_size = settings.dimse_max_pdu
        ae.maximum_associations = settings.dimse_max_associations
        for name in ("acse_timeout", "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(ae, name, settings.dimse_timeout)
        # the accepted contexts are built per association (VnaACSE); pynetdicom wants one
        ae.add_supported_context(acceptance.VERIFICATION)
        services = Services(
            archive=self.archive,
            settings=settings,
            ae=ae,
            policy=acceptance.CallingAePolicy(settings.calling_ae_rules),
            supported=acceptance.supported_syntaxes(),
        )
        server = cast(
            _Server,
            ae.make_server(
                (settings.bind_address, settings.dimse_port),
                server_class=_Server if self.listen else _AdoptingServer,
                request_handler=_RequestHandler,
                evt_handlers=handlers.bindings(services),
            ),
        )
        server.services = services
        ae._servers.append(server)
        thread = None
        if self.listen:
            thread = threading.Thread(
                target=server.serve_forever, name=f"dimse-{settings.dimse_port}", daemon=True
            )
            thread.start()
        self._ae, self._server, self._thread = ae, server, thread
        if self.listen:
            log.info(
                "DIMSE listener %s on %s:%s", settings.ae_title, settings.bind_address, self.port
            )

    def adopt(self, sock: socket.socket) -> None:
        """Serve a connection accepted elsewhere, as if this server had accepted it."""
        server = self._server
        assert server is not None, "start() first"
        with server.adopting_lock:
            server.adopting += 1
        # On this thread rather than on a new one (process_request): the handler only builds
        # the association and starts its own thread, and one thread start less shortens
        # every association.
        server.process_request_thread(sock, sock.getpeername())

    @property
    def open_associations(self) -> int:
        """Associations being served now, or about to be."""
        server = self._server
        return len(server.active_associations) + server.adopting if server is not None else 0

    @property
    def port(self) -> int:
        """The bound port (the real one when the settings asked for port 0)."""
        if self._server is None:
            return self.settings.dimse_port
        return int(self._server.server_address[1])

    def stop(self) -> None:
        """Abort every association and close the listening socket."""
        if self._ae is not None:
            self._ae.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._ae, self._server, self._thread = None, None, None
