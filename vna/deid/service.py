"""Where de-identification applies: files to a folder, archived studies to a folder or into a
project of the archive (teaching copies: the clinical original stays untouched), ingest
routes, and exports to registries. Every decision is audited in the archive's AuditEvent
table, never with a pseudonym or an original-to-new UID pair (those live in the key store).

Projects are configured in the ``[deid_projects.NAME]`` tables of the settings file:
``profile`` (the default profile), ``options`` and ``anonymous_only`` (refuse objects that
still carry identity).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from vna.archive import Archive
from vna.config import Settings
from vna.deid import pixels
from vna.deid.engine import Engine, Result
from vna.deid.keystore import KeyStore, load_master_key
from vna.deid.profiles import compose
from vna.errors import ConfigError, InvalidObject, PermissionDenied
from vna.index.tables import AuditEvent


class IdentityLeft(InvalidObject):
    """An anonymous-only project refuses an object that still carries identity."""


def open_keystore(settings: Settings) -> KeyStore:
    """The key store of the settings (its own database, its own key)."""
    key = load_master_key(
        settings.deid_key_file, settings.deid_key_env, settings.effective_deid_key_file
    )
    return KeyStore(
        settings.effective_keystore_url, key, max_date_shift=settings.deid_max_date_shift_days
    )


def keystore_of(archive: Archive) -> KeyStore:
    """The archive's key store, opened once and closed with the archive."""
    store = archive.services.get("deid.keystore")
    if store is None:
        store = open_keystore(archive.settings)
        archive.services["deid.keystore"] = store
    return store


def projects(settings: Settings) -> dict[str, dict[str, Any]]:
    """The ``[deid_projects]`` tables of the settings file."""
    table = settings.extra.get("deid_projects", {})
    return {str(k): dict(v) for k, v in table.items()} if isinstance(table, Mapping) else {}


def project_options(settings: Settings, project: str) -> dict[str, Any]:
    return projects(settings).get(project, {})


@dataclass
class Outcome:
    """One object through de-identification."""

    source: str
    result: Result | None = None
    output: Path | None = None
    stored: bool = False
    error: str = ""
    pixel: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class Deidentifier:
    """A profile bound to a project, a key store and the pixel policy of the settings."""

    settings: Settings
    profile_name: str
    project: str
    keystore: KeyStore
    options: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = project_options(self.settings, self.project)
        extra = [str(o) for o in config.get("options", [])]
        self.profile = compose(self.profile_name, [*extra, *self.options])
        self.anonymous_only = bool(config.get("anonymous_only", False))
        if self.anonymous_only and not self.profile.anonymous:
            raise ConfigError(
                f"project {self.project} is anonymous-only; profile {self.profile_name} "
                f"with options {list(self.profile.options)} keeps pseudonyms or links"
            )
        self.engine = Engine(
            self.profile,
            self.project,
            self.keystore,
            pseudonym_pattern=self.settings.deid_pseudonym_pattern,
        )
        raw_regions = self.settings.extra.get("deid_pixel_regions", {})
        self.regions = dict(raw_regions) if isinstance(raw_regions, Mapping) else {}

    def apply(self, ds: Dataset) -> tuple[Result, pixels.PixelDecision]:
        """De-identify one data set in place (pixels first, then the header).

        Raises:
            InvalidObject: refused by the pixel policy, or identity left in an anonymous-only
                project.
        """
        decision = pixels.apply_policy(ds, self.settings.deid_burned_in_policy, self.regions)
        result = self.engine.apply(ds, pixels_cleaned=decision.action == "cleaned")
        if self.anonymous_only:
            problems = identity_problems(result.dataset)
            if problems:
                raise IdentityLeft("; ".join(problems))
        return result, decision

    def apply_file(self, path: Path) -> tuple[Result, pixels.PixelDecision]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, force=True)
        if "SOPInstanceUID" not in ds:
            raise InvalidObject(f"{path} is not a DICOM object")
        return self.apply(ds)


def identity_problems(ds: Dataset) -> list[str]:
    """Why an object is not anonymous (what an anonymous-only project refuses)."""
    problems = []
    if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
        problems.append("PatientIdentityRemoved is not YES")
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs"):
        if str(ds.get(keyword, "") or "").strip():
            problems.append(f"{keyword} is not empty")
    if any(e.tag.is_private for e in ds):
        problems.append("private attributes are present")
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        problems.append("burned-in annotation")
    if str(ds.get("LongitudinalTemporalInformationModified", "")).upper() == "UNMODIFIED":
        problems.append("real dates are kept")
    return problems


def output_path(out_dir: Path, result: Result) -> Path:
    """Where a de-identified object is written: new UIDs only, nothing from the source name."""
    ds = result.dataset
    return (
        out_dir
        / str(ds.get("StudyInstanceUID", "study"))
        / str(ds.get("SeriesInstanceUID", "series"))
        / f"{result.sop_instance_uid}.dcm"
    )


def write(result: Result, path: Path) -> Path:
    """Save as Part 10 in the transfer syntax of the new File Meta Information (the pixel
    cleaner may have turned a big endian object into a little endian one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = result.dataset
    syntax = ds.file_meta.TransferSyntaxUID
    if ds.original_encoding != (syntax.is_implicit_VR, syntax.is_little_endian):
        for element in list(ds.iterall()):
            _ = element.value  # decode raw elements in their old encoding first
        ds.set_original_encoding(syntax.is_implicit_VR, syntax.is_little_endian)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def audit(
    archive: Archive,
    action: str,
    *,
    object_uid: str = "",
    origin: str = "cli",
    reason: str = "",
    detail: Mapping[str, Any] | None = None,
    actor: str = "",
) -> None:
    """Append one audit record (the AuditEvent table is append-only)."""
    with archive.db.write() as session:
        session.add(
            AuditEvent(
                actor=actor or current_user(),
                action=action,
                object_uid=object_uid[:64],
                origin=origin[:128],
                reason=reason,
                detail=json.dumps(dict(detail or {}), sort_keys=True),
            )
        )


def current_user() -> str:
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return "unknown"


def reidentify(
    archive: Archive,
    project: str,
    *,
    pseudonym: str = "",
    uid: str = "",
    user: str,
    reason: str,
) -> dict[str, Any]:
    """The original identity behind a pseudonym or a project UID, for an authorised admin.

    Raises:
        PermissionDenied: the user is not in ``deid_reidentify_admins`` or gave no reason
            (the refusal is audited too).
    """
    admins = {a.strip() for a in archive.settings.deid_reidentify_admins.split(",") if a.strip()}
    asked = {"project": project, "pseudonym": pseudonym, "uid": uid}
    if user not in admins or not reason.strip():
        audit(archive, "reidentify-denied", actor=user, reason=reason, detail=asked)
        why = (
            "a reason is required" if user in admins else f"{user} is not a re-identification admin"
        )
        raise PermissionDenied(why)
    store = keystore_of(archive)
    found: dict[str, Any] = {}
    if pseudonym:
        identity = store.identity_of(project, pseudonym)
        if identity is not None:
            found["identity"] = identity
    if uid:
        original = store.original_uid(project, uid)
        if original is not None:
            found["original_uid"] = original
    audit(
        archive,
        "reidentify",
        actor=user,
        reason=reason,
        detail={**asked, "found": bool(found)},
    )
    return found
