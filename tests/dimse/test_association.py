"""Association acceptance: C-ECHO, AE title policy with the proper A-ASSOCIATE-RJ reasons,
maximum PDU and associations, TCP_NODELAY."""

from __future__ import annotations

import socket
import time

import pytest
from pynetdicom import build_context

from tests.dimse.conftest import Endpoint, associate, dcmtk, running
from vna.archive import Archive

VERIFICATION = "1.2.840.10008.1.1"
pytestmark = pytest.mark.dcmtk


def test_echoscu(server: Endpoint) -> None:
    result = dcmtk("echoscu", "-v", "-aec", server.ae_title, server.host, str(server.port))
    assert result.returncode == 0, result.stderr
    assert "Received Echo Response (Success)" in result.stderr


def test_open_by_default_and_settings_reach_the_peer(local_archive: Archive) -> None:
    with running(local_archive, dimse_max_pdu=65536) as endpoint:
        assoc = associate(endpoint, [build_context(VERIFICATION)], ae_title="ANYONE")
        assert assoc.is_established
        assert assoc.acceptor.maximum_length == 65536
        assert assoc.send_c_echo().Status == 0
        # TCP_NODELAY on the socket the listener accepted
        accepted = [a for a in endpoint.server._ae.active_associations if a.is_acceptor]  # type: ignore[union-attr]
        assert accepted
        sock = accepted[0].dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assoc.release()


def _rejection(endpoint: Endpoint, calling: str) -> tuple[int, int, int] | None:
    assoc = associate(endpoint, [build_context(VERIFICATION)], ae_title=calling)
    if assoc.is_established:
        assoc.release()
        return None
    assert assoc.is_rejected
    rsp = assoc.acceptor.primitive
    return (rsp.result, rsp.result_source, rsp.diagnostic)


def test_calling_ae_allow_list_and_host_binding(local_archive: Archive) -> None:
    allowed = "MODALITY, BOUND@127.0.0.1, ELSEWHERE@10.255.255.1"
    with running(local_archive, dimse_allowed_aes=allowed) as endpoint:
        assert _rejection(endpoint, "MODALITY") is None
        assert _rejection(endpoint, "BOUND") is None
        # rejected-permanent, service-user, calling AE title not recognised (PS3.8 9.3.4)
        assert _rejection(endpoint, "STRANGER") == (1, 1, 3)
        assert _rejection(endpoint, "ELSEWHERE") == (1, 1, 3)
        result = dcmtk("echoscu", "-aet", "STRANGER", endpoint.host, str(endpoint.port))
        assert result.returncode != 0
        assert "Calling AE Title Not Recognized" in result.stderr


def test_called_ae_title_checked_when_asked(local_archive: Archive) -> None:
    with running(local_archive, dimse_check_called_ae=True) as endpoint:
        result = dcmtk("echoscu", "-aec", "SOMEONE", endpoint.host, str(endpoint.port))
        assert result.returncode != 0
        assert "Called AE Title Not Recognized" in result.stderr
        ok = dcmtk("echoscu", "-aec", endpoint.ae_title, endpoint.host, str(endpoint.port))
        assert ok.returncode == 0, ok.stderr


def test_maximum_associations(local_archive: Archive) -> None:
    with running(local_archive, dimse_max_associations=1) as endpoint:
        first = associate(endpoint, [build_context(VERIFICATION)])
        assert first.is_established
        # rejected-transient, service-provider (presentation), local limit exceeded
        assert _rejection(endpoint, "SECOND") == (2, 3, 2)
        first.release()
        # the slot is free once the server's association thread has ended
        deadline = time.monotonic() + 10
        while (outcome := _rejection(endpoint, "THIRD")) is not None:
            assert time.monotonic() < deadline, outcome
        assert outcome is None


def test_many_contexts_accepted_in_the_requesters_order_twice(server: Endpoint) -> None:
    """A request proposing every storage class (as storescu and getscu do) is answered from
    memoized UID checks and cached acceptor contexts: an identical second request gets the
    same answer, and a context proposed in another order keeps that order."""
    from pynetdicom import AllStoragePresentationContexts

    jpeg, explicit = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.1"
    storage = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts[:120]]
    answers = []
    for last_order in ([jpeg, explicit], [jpeg, explicit], [explicit, jpeg]):
        contexts = [build_context(uid, [jpeg, explicit]) for uid in storage[:-1]]
        contexts.append(build_context(storage[-1], last_order))
        assoc = associate(server, contexts)
        assert assoc.is_established
        answers.append(
            {str(cx.abstract_syntax): str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
        )
        assoc.release()
    assert answers[0] == answers[1]
    assert answers[0] == dict.fromkeys(storage, jpeg)
    assert answers[2] == {**answers[0], storage[-1]: explicit}


def test_release_answered_at_once_however_seldom_the_reactor_polls(
    local_archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The A-RELEASE-RQ wakes the association's reactor: with its poll made a minute long,
    a release must still be answered (pynetdicom would wait 30 s for the A-RELEASE-RP)."""
    from dimse import server as dimse_server

    monkeypatch.setattr(dimse_server, "REACTOR_POLL", 60.0)
    with running(local_archive) as endpoint:
        for _ in range(2):
            assoc = associate(endpoint, [build_context(VERIFICATION)])
            assert assoc.send_c_echo().Status == 0
            started = time.monotonic()
            assoc.release()
            assert assoc.is_released
            assert time.monotonic() - started < 10
