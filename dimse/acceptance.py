"""Who may associate, and which presentation contexts are accepted (PS3.8 7.1, 9.3.3/9.3.4).

Transfer syntax selection honours the requester's order of preference: for each abstract
syntax the accepted list is the requester's own proposal order, filtered to what the archive
supports. A modality that proposes JPEG first therefore sends JPEG and the archive stores the
bytes it compressed, instead of forcing a decompression to the first syntax on our list.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ parameters (PS3.8 9.3.4)
REJECTED_PERMANENT = 0x01
REJECTED_TRANSIENT = 0x02
SOURCE_SERVICE_USER = 0x01
SOURCE_SERVICE_PROVIDER_PRESENTATION = 0x03
REASON_NO_REASON_GIVEN = 0x01
REASON_CALLING_AE_NOT_RECOGNIZED = 0x03
REASON_CALLED_AE_NOT_RECOGNIZED = 0x07
REASON_LOCAL_LIMIT_EXCEEDED = 0x02  # with SOURCE_SERVICE_PROVIDER_PRESENTATION

# SOP classes (PS3.4 A.4 Verification, C.6 Query/Retrieve, J.3 Storage Commitment)
VERIFICATION = UID("1.2.840.10008.1.1")
PATIENT_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.1.1")
PATIENT_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.1.2")
PATIENT_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.1.3")
STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
STUDY_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.2.2")
STUDY_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.2.3")
STORAGE_COMMITMENT_PUSH_MODEL = UID("1.2.840.10008.1.20.1")
FIND_MODELS = (PATIENT_ROOT_FIND, STUDY_ROOT_FIND)
MOVE_MODELS = (PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE)
GET_MODELS = (PATIENT_ROOT_GET, STUDY_ROOT_GET)
PATIENT_ROOT_MODELS = frozenset({PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET})
#: Syntaxes for everything that is not a stored object (identifiers, commitment requests).
PLAIN_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
#: Branch of the composite storage SOP classes (PS3.4 Annex B), retired ones included.
STORAGE_BRANCH = "1.2.840.10008.5.1.4.1.1."
#: Retired Basic Print storage classes still found in old archives (PS3.4 2004 Annex H).
PRINT_STORAGE = ("1.2.840.10008.5.1.1.27", "1.2.840.10008.5.1.1.29", "1.2.840.10008.5.1.1.30")


def storage_classes() -> frozenset[str]:
    """Every storage SOP class pynetdicom knows, plus the retired ones in pydicom's UID
    dictionary (old ultrasound and SR trial objects still arrive from old systems); the
    latter are registered with pynetdicom's storage service so that it serves them."""
    from pydicom._uid_dict import UID_dictionary
    from pynetdicom import register_uid
    from pynetdicom.service_class import StorageServiceClass
    from pynetdicom.sop_class import uid_to_service_class

    known = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
    for uid, (name, kind, _info, _retired, keyword) in UID_dictionary.items():
        if kind != "SOP Class" or "Storage" not in name or uid in known:
            continue
        if not (uid.startswith(STORAGE_BRANCH) or uid in PRINT_STORAGE):
            continue
        if uid_to_service_class(uid) is not StorageServiceClass:
            register_uid(uid, keyword, StorageServiceClass)
        known.add(uid)
    return frozenset(known)


@dataclass(frozen=True)
class Supported:
    """What the archive accepts for one abstract syntax; ``roles`` as pynetdicom's acceptor
    ``(scu_role, scp_role)``: whether a proposed SCU / SCP role is accepted (None = no role
    selection)."""

    transfer_syntaxes: frozenset[str]
    roles: tuple[bool | None, bool | None] = (None, None)


def supported_syntaxes() -> dict[str, Supported]:
    """Every abstract syntax the listener accepts (built once per server)."""
    table: dict[str, Supported] = {}
    plain = frozenset(PLAIN_SYNTAXES)
    table[VERIFICATION] = Supported(plain)
    # storage: every class pynetdicom knows, every transfer syntax; a C-GET requester may
    # propose the SCP role for them (PS3.4 C.4.3, role selection PS3.7 D.3.3.4)
    everything = frozenset(str(ts) for ts in ALL_TRANSFER_SYNTAXES)
    for uid in storage_classes():
        table[uid] = Supported(everything, (True, True))
    for uid in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS, STORAGE_COMMITMENT_PUSH_MODEL):
        table[uid] = Supported(plain)
    return table


def contexts_for(
    proposed: Iterable[PresentationContext], table: Mapping[str, Supported]
) -> list[PresentationContext]:
    """Acceptor contexts for one association: the proposed abstract syntaxes we support, each
    with the transfer syntaxes in the order the requester proposed them."""
    order: dict[str, list[str]] = {}
    for cx in proposed:
        abstract = str(cx.abstract_syntax)
        supported = table.get(abstract)
        if supported is None:
            continue
        wanted = order.setdefault(abstract, [])
        for ts in cx.transfer_syntax:
            if ts in supported.transfer_syntaxes and ts not in wanted:
                wanted.append(str(ts))
    return [
        _context(abstract, tuple(syntaxes), table[abstract].roles)
        for abstract, syntaxes in order.items()
        if syntaxes
    ]


@functools.lru_cache(maxsize=4096)
def _context(
    abstract: str, syntaxes: tuple[str, ...], roles: tuple[bool | None, bool | None]
) -> PresentationContext:
    """One acceptor context, built once: requesters propose the same lists again and again,
    and building one validates every UID in it. The object is shared by associations, which
    is safe because pynetdicom's negotiation only reads the acceptor's contexts."""
    cx = build_context(abstract, list(syntaxes))
    scu_role, scp_role = roles
    if scu_role is not None and scp_role is not None:
        cx.scu_role, cx.scp_role = scu_role, scp_role
    return cx


class CallingAePolicy:
    """The allow-list of calling AE titles, host names resolved once when the server starts."""

    def __init__(self, rules: Mapping[str, frozenset[str]]) -> None:
        self._open = not rules
        # AE title -> addresses it must come from (None: any address)
        self._rules: dict[str, frozenset[str] | None] = {
            aet: _resolve(hosts) if hosts else None for aet, hosts in rules.items()
        }

    def allows(self, calling_ae: str, peer_address: str) -> bool:
        """Whether this calling AE title may associate from this address."""
        if self._open:
            return True
        title = calling_ae.strip()
        if title not in self._rules:
            return False
        hosts = self._rules[title]
        return hosts is None or _normalise(peer_address) in hosts


def _normalise(address: str) -> str:
    try:
        parsed = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def _resolve(hosts: frozenset[str]) -> frozenset[str]:
    """Addresses of the given host names and addresses (an unresolvable name is logged and
    matches nothing)."""
    out: set[str] = set()
    for host in hosts:
        try:
            for info in socket.getaddrinfo(host, None):
                out.add(_normalise(str(info[4][0])))
        except OSError:
            log.warning("allowed host %r of dimse_allowed_aes does not resolve", host)
    return frozenset(out)
