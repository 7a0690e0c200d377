"""The index database: engine, sessions, migrations and the write discipline.

Concurrency model (written down once, here): the core is synchronous. DIMSE handlers run in
pynetdicom's association threads and call it directly; the HTTP layer calls it in a thread
pool. Each call opens its own short session from the engine's pool. SQLite allows one writer
at a time, so writes on SQLite take a process-wide lock (and ``BEGIN IMMEDIATE`` against other
processes, with a busy timeout); PostgreSQL writers run concurrently and retry on unique-key
races.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from vna.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_ID = 0x564E41  # "VNA": the advisory lock that serialises schema migrations


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers never block the writer. synchronous=NORMAL: a commit is safe against a
    # process crash; a power loss can drop the last commits, never corrupt the index, and
    # never an object (objects are fsynced before their row is written), so `vna verify
    # --repair` re-indexes whatever such a loss left without a row. case_sensitive_like:
    # DICOM matching is case sensitive (PS3.4 C.2.2.2.4); SQLite's LIKE is not by default.
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _begin)
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA case_sensitive_like=ON")
    cur.execute("PRAGMA cache_size=-65536")
    cur.execute("PRAGMA temp_store=MEMORY")
    # After each checkpoint the write-ahead log is cut back to 64 MB: a long import with
    # readers open would otherwise leave it at its largest size (gigabytes) for good.
    cur.execute("PRAGMA journal_size_limit=67108864")
    cur.close()


class Database:
    """Engine + session factory + migration runner for one index URL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        try:
            parsed = make_url(url)
        except Exception as exc:
            raise ConfigError(f"index_url is not a database URL: {url!r}") from exc
        self.url = url
        self.dialect = parsed.get_backend_name()
        self._write_lock = threading.RLock()
        self._lock_path: Path | None = None
        self._lock_depth = threading.local()
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                self._lock_path = Path(database + ".writelock")
            self.engine: Engine = create_engine(
                url,
                echo=echo,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=8,
                max_overflow=16,
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", self._begin)
        elif self.dialect == "postgresql":
            self.engine = create_engine(
                url, echo=echo, pool_size=10, max_overflow=20, pool_pre_ping=True
            )
        else:
            raise ConfigError(
                f"index_url must be sqlite:/// or postgresql+psycopg://, not {parsed.drivername}"
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @staticmethod
    def _begin(conn: Any) -> None:
        # Deferred transactions that later write can deadlock between processes; every
        # transaction that may write begins IMMEDIATE (see write()).
        mode = conn.info.get("begin_mode", "BEGIN")
        conn.exec_driver_sql(mode)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; nothing it does is committed."""
        session = self._sessions()
        try:
            yield session
        finally:
            session.rollback()
            session.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose work is committed on success and rolled back on any exception.

        On SQLite it holds the process-wide write lock and begins IMMEDIATE, so writers queue
        instead of failing with "database is locked".
        """
        if not self.is_sqlite:
            session = self._sessions()
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()
            return
        with self._write_lock, self._process_lock(), self.engine.connect() as conn:
            conn.info["begin_mode"] = "BEGIN IMMEDIATE"  # read by _begin before BEGIN is sent
            session = Session(bind=conn, expire_on_commit=False)
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()
                conn.info.pop("begin_mode", None)

    @contextlib.contextmanager
    def _process_lock(self) -> Iterator[None]:
        """An exclusive lock shared by every process writing this SQLite file.

        SQLite's own busy handler waits by sleeping (up to 100 ms a turn), so processes
        writing together (import workers, several servers) would mostly sleep; a blocking
        file lock hands the turn over at once. Threads are serialised by _write_lock first,
        as a flock is shared by the threads of one process.
        """
        depth = getattr(self._lock_depth, "value", 0)
        if self._lock_path is None or depth:  # re-entered by the thread holding it
            self._lock_depth.value = depth + 1
            try:
                yield
            finally:
                self._lock_depth.value = depth
            return
        with self._lock_path.open("a") as fp:
            fcntl.flock(fp.fileno(), fcntl.LOCK_EX)
            self._lock_depth.value = 1
            try:
                yield
            finally:
                self._lock_depth.value = 0
                fcntl.flock(fp.fileno(), fcntl.LOCK_UN)

    def migrate(self) -> None:
        """Bring the schema to the newest revision (alembic ``upgrade head``)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self._write_lock, self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # several archive processes may start together on one database: one migrates,
                # the others wait and then find nothing left to do
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def table_names(self) -> list[str]:
        """Tables present in the database (for checks and tests)."""
        return sorted(inspect(self.engine).get_table_names())

    def dispose(self) -> None:
        """Close every pooled connection (on SQLite, first fold the write-ahead log back
        into the database and empty it, when no other process is reading)."""
        if self.is_sqlite:
            with contextlib.suppress(Exception), self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        self.engine.dispose()
