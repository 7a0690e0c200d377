"""One exception tree for everything that can go wrong in the archive.

Each front end maps these classes to its own statuses in a single table (DIMSE status codes,
HTTP statuses, CLI exit codes), so the core never speaks a protocol.
"""

from __future__ import annotations


class VnaError(Exception):
    """Base of every error the archive raises on purpose."""


class ConfigError(VnaError):
    """A setting is missing, unknown or has a value nothing can work with."""


class NotFound(VnaError):
    """The study, series, instance, frame or AE asked for does not exist."""


class Conflict(VnaError):
    """The request contradicts what is already stored."""


class DuplicateRejected(Conflict):
    """A known SOP Instance UID arrived with different bytes under the `reject` policy."""


class StudyConflict(Conflict):
    """A Study Instance UID arrived under a different patient (policy `reject`)."""


class InvalidObject(VnaError):
    """The data is not a storable DICOM object (PS3.4 status 0xC000 family)."""


class NotDicom(InvalidObject):
    """The data is not DICOM at all."""


class TruncatedObject(InvalidObject):
    """The object ends before its declared content does."""


class MissingAttribute(InvalidObject):
    """A Type 1 attribute the archive needs (a UID) is absent or empty."""


class SopClassMismatch(InvalidObject):
    """The data set does not match its SOP class (PS3.4 status 0xA900)."""


class OutOfResources(VnaError):
    """No space or no capacity left to store (PS3.4 status 0xA700)."""


class StorageError(VnaError):
    """The object store failed (I/O error, unreachable S3, checksum mismatch)."""


class ChecksumMismatch(StorageError):
    """Stored bytes no longer hash to the checksum recorded at ingest."""


class NotAcceptable(VnaError):
    """The object cannot be given in any of the requested transfer syntaxes or media types."""


class BadRequest(VnaError):
    """A query or request is malformed (unknown attribute, bad date range, bad UID list)."""


class PermissionDenied(VnaError):
    """The caller is not allowed to do this."""


class ConversionError(InvalidObject):
    """A photo, video, sound, document or slide cannot be made into DICOM (corrupt, wrong
    kind, encrypted, nothing reads it)."""


class MissingContext(ConversionError):
    """A file to convert has no patient (or other required) context from the user."""


class UnsupportedMedia(ConversionError):
    """The content is of no kind the converters read."""
