"""Memoized UID checks for pynetdicom's association negotiation.

pynetdicom converts and validates every UID of an A-ASSOCIATE-RQ several times over: when it
decodes the PDU, when it turns the items into presentation contexts, and again when contexts
are built for the answer. Each pass costs about 8 µs per UID (a pydicom UID object, two
regular-expression checks), so a request proposing 120 contexts with their transfer syntaxes
(what dcmtk's storescu and getscu send) took 10–16 ms to accept, most of it in these
checks. The same few hundred UIDs come back in every association, so the results are kept.

The checks stay exactly the same (the original functions compute every result once, and a
transfer syntax of the standard's registry passes every check a presentation context makes);
only their repetition is saved. A value that fails a check is not cached, so its error or warning
is raised or logged every time, as before.
"""

from __future__ import annotations

import functools
from typing import Any

from pydicom._uid_dict import UID_dictionary
from pydicom.uid import UID
from pynetdicom import _config, pdu_items, pdu_primitives, presentation, utils

#: Distinct UIDs remembered; an association proposes a few hundred, a busy site a few more.
CACHE_SIZE = 4096

_installed = False


def install() -> None:
    """Replace pynetdicom's UID conversion and pydicom's ``UID.is_valid`` by memoized
    versions (idempotent; every thread and association of the process shares them)."""
    global _installed
    if _installed:
        return
    _installed = True
    original_is_valid = UID.__dict__["is_valid"].fget

    known: dict[str, bool] = {}

    def is_valid(self: UID) -> bool:
        # Only the UIDs of the standard's registry (SOP classes, transfer syntaxes) are
        # remembered: instance UIDs pass here too, each once, and would crowd the memory.
        text = str.__str__(self)
        result = known.get(text)
        if result is None:
            result = bool(original_is_valid(self))
            if text in UID_dictionary:
                known[text] = result
        return result

    UID.is_valid = property(is_valid, doc=UID.is_valid.__doc__)  # type: ignore[method-assign,assignment]

    original_set_uid = utils.set_uid

    @functools.lru_cache(maxsize=CACHE_SIZE)
    def converted(
        value: str | bytes,
        name: str,
        allow_empty: bool,
        allow_none: bool,
        validate: bool,
        strict: bool,
    ) -> UID | None:
        return original_set_uid(value, name, allow_empty, allow_none, validate)

    def set_uid(
        value: Any,
        name: str,
        allow_empty: bool = True,
        allow_none: bool = True,
        validate: bool = True,
    ) -> UID | None:
        # Plain text and the registry's UIDs are cached; another UID object may carry a
        # private transfer syntax's encoding, which must be kept.
        kind = type(value)
        if kind is str or kind is bytes or (kind is UID and value in UID_dictionary):
            strict = bool(_config.ENFORCE_UID_CONFORMANCE)
            return converted(value, name, allow_empty, allow_none, validate, strict)
        return original_set_uid(value, name, allow_empty, allow_none, validate)

    for module in (utils, pdu_items, pdu_primitives, presentation):
        module.set_uid = set_uid  # type: ignore[attr-defined]

    # A presentation context checks each transfer syntax added to it the same way; those of
    # the registry pass every check, so they are appended at once.
    registry = {
        uid: UID(uid) for uid, entry in UID_dictionary.items() if entry[1] == "Transfer Syntax"
    }
    original_add = presentation.PresentationContext.add_transfer_syntax

    def add_transfer_syntax(self: presentation.PresentationContext, syntax: Any) -> None:
        known = registry.get(syntax) if type(syntax) is str or type(syntax) is UID else None
        if known is None:
            original_add(self, syntax)
        elif known not in self._transfer_syntax:
            self._transfer_syntax.append(known)

    presentation.PresentationContext.add_transfer_syntax = add_transfer_syntax  # type: ignore[method-assign]
