"""DIMSE status codes by their PS3.4 / PS3.7 names, and the one table that turns the core's
exceptions (vna.errors) into them.

A status is chosen per service because the same failure is named differently by each:
a data set that does not match its SOP class is 0xA900 for C-STORE (PS3.4 B.2.3) and an
identifier that does not match the information model is 0xA900 for C-FIND (PS3.4 C.4.1.1.4).
"""

from __future__ import annotations

from vna.errors import (
    BadRequest,
    ChecksumMismatch,
    Conflict,
    DuplicateRejected,
    InvalidObject,
    NotAcceptable,
    NotFound,
    OutOfResources,
    PermissionDenied,
    SopClassMismatch,
    StorageError,
    StudyConflict,
    VnaError,
)

# -- every service (PS3.7 Annex C) ----------------------------------------------------------
SUCCESS = 0x0000
CANCEL = 0xFE00  # PS3.4 C.4.1.1.4: Matching terminated due to Cancel request
PENDING = 0xFF00  # Matches / sub-operations are continuing
PENDING_WARNING = 0xFF01  # Matches are continuing: an optional key was not supported
PROCESSING_FAILURE = 0x0110  # PS3.7 C.4.2
DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 C.4.3
NO_SUCH_SOP_INSTANCE = 0x0112
NO_SUCH_ACTION_TYPE = 0x0123
INVALID_ARGUMENT_VALUE = 0x0115
CLASS_INSTANCE_CONFLICT = 0x0119
SOP_CLASS_NOT_SUPPORTED = 0x0122
NOT_AUTHORIZED = 0x0124
DUPLICATE_TRANSACTION_UID = 0x0131
RESOURCE_LIMITATION = 0x0213

# -- Storage (PS3.4 B.2.3) ---------------------------------------------------------------
OUT_OF_RESOURCES = 0xA700  # Refused: Out of Resources
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Error
CANNOT_UNDERSTAND = 0xC000  # Error
COERCION_OF_DATA_ELEMENTS = 0xB000  # Warning
ELEMENTS_DISCARDED = 0xB006  # Warning
DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007  # Warning

# -- Query/Retrieve (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4) ------------------------------
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000
RESPONSE_LIMIT_REACHED = 0xB001  # Warning: matching reached the response limit
UNABLE_TO_CALCULATE_NUMBER_OF_MATCHES = 0xA701  # Refused: Out of Resources
UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702  # Refused: Out of Resources
MOVE_DESTINATION_UNKNOWN = 0xA801
SUB_OPERATIONS_COMPLETE_WITH_FAILURES = 0xB000  # Warning

#: Services a status is chosen for.
STORE, FIND, RETRIEVE, COMMIT = "C-STORE", "C-FIND", "C-MOVE/C-GET", "N-ACTION"

#: vna.errors class -> status per service; the most specific class of an exception wins.
#: For COMMIT the value is the Failure Reason of a Failed SOP Sequence item (PS3.4 J.3.2.1.2).
ERROR_STATUS: dict[type[BaseException], dict[str, int]] = {
    SopClassMismatch: {
        STORE: DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
        FIND: IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
        RETRIEVE: IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
        COMMIT: CLASS_INSTANCE_CONFLICT,
    },
    InvalidObject: {
        STORE: CANNOT_UNDERSTAND,
        FIND: UNABLE_TO_PROCESS,
        RETRIEVE: UNABLE_TO_PROCESS,
        COMMIT: PROCESSING_FAILURE,
    },
    BadRequest: {
        STORE: CANNOT_UNDERSTAND,
        FIND: IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
        RETRIEVE: IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
        COMMIT: INVALID_ARGUMENT_VALUE,
    },
    DuplicateRejected: {
        STORE: DUPLICATE_SOP_INSTANCE,
        FIND: UNABLE_TO_PROCESS,
        RETRIEVE: UNABLE_TO_PROCESS,
        COMMIT: PROCESSING_FAILURE,
    },
    StudyConflict: {
        STORE: PROCESSING_FAILURE,
        FIND: UNABLE_TO_PROCESS,
        RETRIEVE: UNABLE_TO_PROCESS,
        COMMIT: PROCESSING_FAILURE,
    },
    Conflict: {
        STORE: PROCESSING_FAILURE,
        FIND: UNABLE_TO_PROCESS,
        RETRIEVE: UNABLE_TO_PROCESS,
        COMMIT: PROCESSING_FAILURE,
    },
    OutOfResources: {
        STORE: OUT_OF_RESOURCES,
        FIND: OUT_OF_RESOURCES,
        RETRIEVE: UNABLE_TO_PERFORM_SUB_OPERATIONS,
        COMMIT: RESOURCE_LIMITATION,
    },
    ChecksumMismatch: {
        STORE: OUT_OF_RESOURCES,
        FIND: UNABLE_TO_PROCESS,
        RETRIEVE: UNABLE_TO_PERFORM_SUB_OPERATIONS,
        COMMIT: PROCESSING_FAILURE,
    },
    StorageError: {
        STORE: OUT_OF_RESOURCES,
        FIND: UNABLE_TO_PROCESS,
        RETRIEVE: UNABLE_TO_PERFORM_SUB_OPERATIONS,
        COMMIT: RESOURCE_LIMITATION,
    },
    NotFound: {
        STORE: PROCESSING_FAILURE,
        FIND: UNABLE_TO_PROCESS,
        RETRIEVE: UNABLE_TO_PROCESS,
        COMMIT: NO_SUCH_SOP_INSTANCE,
    },
    NotAcceptable: {
        STORE: CANNOT_UNDERSTAND,
        FIND: UNABLE_TO_PROCESS,
        RETRIEVE: UNABLE_TO_PERFORM_SUB_OPERATIONS,
        COMMIT: PROCESSING_FAILURE,
    },
    PermissionDenied: {
        STORE: NOT_AUTHORIZED,
        FIND: NOT_AUTHORIZED,
        RETRIEVE: NOT_AUTHORIZED,
        COMMIT: PROCESSING_FAILURE,
    },
    VnaError: {
        STORE: PROCESSING_FAILURE,
        FIND: UNABLE_TO_PROCESS,
        RETRIEVE: UNABLE_TO_PROCESS,
        COMMIT: PROCESSING_FAILURE,
    },
    # anything unforeseen (a bug): the peer learns that the operation failed, the log why
    Exception: {
        STORE: PROCESSING_FAILURE,
        FIND: UNABLE_TO_PROCESS,
        RETRIEVE: UNABLE_TO_PROCESS,
        COMMIT: PROCESSING_FAILURE,
    },
}


def status_for(exc: BaseException, service: str) -> int:
    """The status (or Failure Reason) a service answers for an exception."""
    for cls in type(exc).__mro__:
        statuses = ERROR_STATUS.get(cls)
        if statuses is not None:
            return statuses[service]
    return ERROR_STATUS[Exception][service]


def error_comment(exc: BaseException) -> str:
    """Error Comment (0000,0902) text: LO in the default repertoire (the command set has no
    Specific Character Set), at most 64 characters, no backslash (PS3.7 C.4, PS3.5 6.2)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text.replace("\\", "/").encode("ascii", "replace").decode("ascii")
    return text if len(text) <= 64 else text[:61] + "..."
