"""The pseudonymisation key store: original -> pseudonym and original -> new UID, per project.

It is its own database (``deid_keystore_url``), never the archive's index, so identifying data
and health data are kept apart (USERS.md 5). Originals are stored encrypted (Fernet, AES-128-CBC
with HMAC-SHA256) with a master key read from a file or an environment variable; lookups use an
HMAC of the original under the project's own secret, so finding a pseudonym never needs a
decryption and the database alone reveals nothing. Each project has a random secret (stored
encrypted); new UIDs are derived from it (``2.25.`` + 128 bits of HMAC), so they are the same
across runs and machines sharing the key store, and unrelated between projects.

Thread model: one engine per KeyStore; every call opens a short session. SQLite runs in WAL
mode; PostgreSQL works too (unique constraints settle concurrent first uses).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import (
    DateTime,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from vna.errors import ConfigError

DIGEST = 64  # hex characters of an HMAC-SHA256


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Base(DeclarativeBase):
    pass


class KsProject(_Base):
    """A de-identification project: its encrypted secret and pseudonym counter."""

    __tablename__ = "ks_project"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet(master, 32 random bytes)
    next_seq: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class KsPseudonym(_Base):
    """One patient of one project: HMAC of the patient key -> pseudonym, date offset."""

    __tablename__ = "ks_pseudonym"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    digest: Mapped[str] = mapped_column(String(DIGEST))
    pseudonym: Mapped[str] = mapped_column(String(64))
    date_offset: Mapped[int] = mapped_column(Integer)
    identity: Mapped[bytes] = mapped_column(LargeBinary)  # Fernet(master, JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    __table_args__ = (
        UniqueConstraint("project", "digest", name="uq_ks_pseudonym_digest"),
        UniqueConstraint("project", "pseudonym", name="uq_ks_pseudonym_pseudonym"),
    )


class KsUid(_Base):
    """One UID of one project: HMAC of the original -> new UID (and the original, encrypted)."""

    __tablename__ = "ks_uid"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(DIGEST))
    new_uid: Mapped[str] = mapped_column(String(64))
    original: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (
        UniqueConstraint("project", "digest", name="uq_ks_uid_digest"),
        UniqueConstraint("project", "new_uid", name="uq_ks_uid_new"),
    )


@dataclass(frozen=True)
class PatientEntry:
    """What the key store knows of a patient in a project."""

    pseudonym: str
    date_offset: int


def load_master_key(key_file: Path | None, key_env: str, default_file: Path) -> bytes:
    """The master key: the environment variable ``key_env`` if set, else ``key_file``, else a
    key file created (mode 0600) at ``default_file`` on first use.

    Any text is accepted: a Fernet key is used as is, other text is hashed into one.

    Raises:
        ConfigError: the named key file cannot be read.
    """
    text = os.environ.get(key_env, "") if key_env else ""
    if not text and key_file is not None:
        try:
            text = key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the de-identification key file {key_file}: {exc}"
            ) from exc
    if not text:
        if not default_file.exists():
            default_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(default_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fp:
                fp.write(Fernet.generate_key().decode())
        text = default_file.read_text(encoding="utf-8").strip()
    return _as_fernet_key(text)


def _as_fernet_key(text: str) -> bytes:
    raw = text.encode()
    with contextlib.suppress(ValueError, TypeError):
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


class KeyStore:
    """Pseudonym and UID maps per project, encrypted at rest."""

    def __init__(self, url: str, master_key: bytes, *, max_date_shift: int = 1825) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        _Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._fernet = Fernet(master_key)
        self.max_date_shift = max(1, max_date_shift)
        self._secrets: dict[str, bytes] = {}
        self._known_uids: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # -- projects ---------------------------------------------------------------------------
    def secret(self, project: str) -> bytes:
        """The project's secret, created on first use."""
        if project in self._secrets:
            return self._secrets[project]
        for _attempt in range(3):
            try:
                with self._session() as session:
                    row = session.get(KsProject, project)
                    if row is None:
                        row = KsProject(
                            name=project, secret=self._fernet.encrypt(secrets.token_bytes(32))
                        )
                        session.add(row)
                    token = row.secret
                break
            except IntegrityError:
                continue
        else:  # pragma: no cover - three concurrent creations in a row
            raise ConfigError(f"could not create de-identification project {project}")
        try:
            value = self._fernet.decrypt(token)
        except InvalidToken as exc:
            raise ConfigError(
                "the de-identification key does not open this key store (wrong key?)"
            ) from exc
        self._secrets[project] = value
        return value

    def digest(self, project: str, kind: str, original: str) -> str:
        """HMAC-SHA256 of an original under the project's secret (hex)."""
        return hmac.new(self.secret(project), f"{kind}:{original}".encode(), "sha256").hexdigest()

    # -- UIDs ---------------------------------------------------------------------------------
    def new_uid(self, project: str, original: str) -> str:
        """The project's UID for ``original`` (PS3.5 9.1: 2.25 + a 128-bit integer)."""
        digest = self.digest(project, "uid", original)
        return "2.25." + str(int(digest[:32], 16))

    def record_uids(self, project: str, originals: dict[str, str]) -> None:
        """Remember original -> new UID pairs (one transaction; already known ones skipped)."""
        todo = {o: n for o, n in originals.items() if (project, o) not in self._known_uids}
        if not todo:
            return
        digests = {self.digest(project, "uid", o): (o, n) for o, n in todo.items()}
        for _attempt in range(3):
            try:
                with self._session() as session:
                    present = set(
                        session.execute(
                            select(KsUid.digest).where(
                                KsUid.project == project, KsUid.digest.in_(list(digests))
                            )
                        ).scalars()
                    )
                    for digest, (original, new) in digests.items():
                        if digest not in present:
                            session.add(
                                KsUid(
                                    project=project,
                                    digest=digest,
                                    new_uid=new,
                                    original=self._fernet.encrypt(original.encode()),
                                )
                            )
                break
            except IntegrityError:
                continue
        for original, new in todo.items():
            self._known_uids[(project, original)] = new

    def original_uid(self, project: str, new_uid: str) -> str | None:
        """The original of a project UID (re-identification), or None."""
        with self._session() as session:
            token = session.execute(
                select(KsUid.original).where(KsUid.project == project, KsUid.new_uid == new_uid)
            ).scalar_one_or_none()
        return None if token is None else self._fernet.decrypt(token).decode()

    # -- pseudonyms ---------------------------------------------------------------------------
    def patient(
        self, project: str, patient_key: str, identity: dict[str, Any], pattern: str
    ) -> PatientEntry:
        """The patient's pseudonym and date offset in the project, created on first use."""
        digest = self.digest(project, "patient", patient_key)
        for _attempt in range(5):
            with self._session() as session:
                row = session.execute(
                    select(KsPseudonym).where(
                        KsPseudonym.project == project, KsPseudonym.digest == digest
                    )
                ).scalar_one_or_none()
                if row is not None:
                    return PatientEntry(row.pseudonym, row.date_offset)
            try:
                with self._session() as session:
                    proj = session.get(KsProject, project)
                    assert proj is not None  # secret() created it
                    seq = proj.next_seq
                    proj.next_seq = seq + 1
                    pseudonym = format_pseudonym(pattern, project, seq, digest)
                    offset = self._offset(digest)
                    session.add(
                        KsPseudonym(
                            project=project,
                            digest=digest,
                            pseudonym=pseudonym,
                            date_offset=offset,
                            identity=self._fernet.encrypt(json.dumps(identity).encode()),
                        )
                    )
                return PatientEntry(pseudonym, offset)
            except IntegrityError:
                continue
        raise ConfigError(f"could not assign a pseudonym in project {project}")

    def _offset(self, digest: str) -> int:
        """A per-patient shift in days, never 0, from the digest (PS3.15 E.3.6 modified dates)."""
        return -(1 + int(digest[32:48], 16) % self.max_date_shift)

    def identity_of(self, project: str, pseudonym: str) -> dict[str, Any] | None:
        """The original identity behind a pseudonym (re-identification), or None."""
        with self._session() as session:
            token = session.execute(
                select(KsPseudonym.identity).where(
                    KsPseudonym.project == project, KsPseudonym.pseudonym == pseudonym
                )
            ).scalar_one_or_none()
        if token is None:
            return None
        return dict(json.loads(self._fernet.decrypt(token)))

    def projects(self) -> list[str]:
        with self._session() as session:
            return list(session.execute(select(KsProject.name).order_by(KsProject.name)).scalars())


def format_pseudonym(pattern: str, project: str, seq: int, digest: str) -> str:
    """A pseudonym from the configured pattern: ``{project}``, ``{seq}`` (with a format spec,
    e.g. ``{seq:06d}``) and ``{hash}`` (hex from the HMAC, not reversible). Characters that
    PN and LO values cannot carry are replaced; the result is cut to 64 characters."""
    try:
        text = pattern.format(project=project, seq=seq, hash=digest[:16].upper())
    except (KeyError, ValueError, IndexError) as exc:
        raise ConfigError(f"invalid pseudonym pattern {pattern!r}: {exc}") from exc
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.upper())
    return cleaned[:64] or f"P{seq}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
