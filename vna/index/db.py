"""The index database: engine, sessions, migrations and the write discipline.

Concurrency model (written down once, here): the core is synchronous. DIMSE handlers run in
pynetdicom's association threads and call it directly; the HTTP layer calls it in a thread
pool. Each call opens its own short session from the engine's pool. SQLite allows one writer
at a time, so writes on SQLite take a process-wide lock (and ``BEGIN IMMEDIATE`` against other
processes, with a busy timeout); PostgreSQL writers run concurrently and retry on unique-key
races. The ingest path, which writes once per received object, uses a Core connection
(``transaction()``) and :class:`Prepared` statements instead of an ORM session.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ClauseElement

from vna.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
#: SQLite connections kept open for the ingest path (Database.connection).
_IDLE_CONNECTIONS = 8
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
        self._lock_fd: tuple[int, int] | None = None  # (process id, descriptor)
        #: Idle SQLite connections kept open for the ingest path: (process id, connection)
        self._idle: list[tuple[int, Connection]] = []
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
                pool_use_lifo=True,
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
        if conn.connection.dbapi_connection.in_transaction:
            return  # begun by transaction()
        mode = conn.info.get("begin_mode", "BEGIN")
        conn.exec_driver_sql(mode)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        """A Core connection for reading: the hot read paths (QIDO-RS, WADO-RS) run a
        statement or two and need no ORM session; nothing is committed."""
        with self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """A Core connection for statements run with :class:`Prepared` (the ingest path).

        On SQLite the connection is kept open for the next caller instead of going back to
        the engine's pool: a checkout and a check-in (with its reset) cost more than the
        one or two statements of an ingest's check. Prepared statements run in autocommit
        mode there, so an idle connection holds no transaction and no snapshot; one that
        SQLAlchemy believes to be in a transaction, or that failed, is closed instead.
        """
        if not self.is_sqlite:
            with self.engine.connect() as conn:
                yield conn
            return
        conn = self._checkout()
        reusable = False
        try:
            yield conn
            reusable = True
        finally:
            self._checkin(conn, reusable)

    def _checkout(self) -> Connection:
        pid = os.getpid()
        while True:
            try:
                owner, conn = self._idle.pop()  # atomic: threads never share one
            except IndexError:
                return self.engine.connect()
            if owner == pid:
                return conn
            # inherited from the parent of a forked process: the parent's to close

    def _checkin(self, conn: Connection, reusable: bool) -> None:
        if (
            reusable
            and len(self._idle) < _IDLE_CONNECTIONS
            and not conn.invalidated
            and not conn.closed
            and not conn.in_transaction()
            and not conn.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
        ):
            self._idle.append((os.getpid(), conn))
            return
        with contextlib.suppress(Exception):
            conn.close()

    def _close_idle(self) -> None:
        pid = os.getpid()
        idle, self._idle = self._idle, []
        for owner, conn in idle:
            if owner == pid:
                with contextlib.suppress(Exception):
                    conn.close()

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
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in a write transaction: committed on success, rolled back on any
        exception; the same locks as :meth:`write`, without an ORM session (the ingest path
        runs a handful of statements per object and needs neither identity map nor flush).
        """
        if not self.is_sqlite:
            with self.engine.begin() as conn:
                yield conn
            return
        # BEGIN and COMMIT go straight to the DBAPI connection (SQLAlchemy's begin adds an
        # event and a statement execution: more than the statements of a small ingest).
        # Core statements run inside still work: _begin sees the transaction and sends none.
        with self._write_lock, self._process_lock(), self.connection() as conn:
            _BEGIN_IMMEDIATE.execute(conn, {})
            try:
                yield conn
                _COMMIT.execute(conn, {})
            except BaseException:
                with contextlib.suppress(Exception):  # a lost connection rolls back by itself
                    conn.connection.dbapi_connection.rollback()  # type: ignore[union-attr]
                raise

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
        fd = self._lock_file(self._lock_path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_depth.value = 1
        try:
            yield
        finally:
            self._lock_depth.value = 0
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock_file(self, path: Path) -> int:
        """The lock file, opened once per process (called under _write_lock).

        A forked child opens its own: a flock belongs to the open file, which a child
        would otherwise share with its parent (and then hold the parent's lock).
        """
        pid = os.getpid()
        if self._lock_fd is None or self._lock_fd[0] != pid:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            self._lock_fd = (pid, os.open(path, flags, 0o666))
        return self._lock_fd[1]

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
            self._close_idle()
            with contextlib.suppress(Exception), self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        self.engine.dispose()
        with self._write_lock:
            if self._lock_fd is not None and self._lock_fd[0] == os.getpid():
                os.close(self._lock_fd[1])
            self._lock_fd = None


@dataclass(frozen=True)
class _Form:
    """A statement as one dialect runs it: its SQL text and how to build its parameters."""

    sql: str
    positional: bool
    names: tuple[str, ...]  # parameter names in the SQL text, in order when positional
    keys: tuple[str, ...]  # the key of each in the values given to run the statement
    constants: dict[str, Any]  # values fixed in the statement itself (``x + 1``)
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, bind processor)

    def parameters(self, values: Mapping[str, Any]) -> Any:
        if self.constants:
            values = {**self.constants, **values}
        args = [values[key] for key in self.keys]  # KeyError: a parameter without a value
        for position, processor in self.processors:
            args[position] = processor(args[position])
        return args if self.positional else dict(zip(self.names, args, strict=True))


class Prepared:
    """A Core statement compiled once per dialect and run straight on the DBAPI cursor.

    SQLAlchemy spends about 20 µs per execute (cache lookup, execution context, result
    wrapping) on statements SQLite runs in 2 µs; the ingest path runs several per object.
    The SQL text is still SQLAlchemy's, values pass through the column types' bind
    processors, and DBAPI errors are raised as SQLAlchemy's (IntegrityError,
    OperationalError, ...), so callers see what ``Connection.execute`` would give them.

    Every value is a parameter: Python-side column defaults are not applied (an INSERT
    names each of its columns in ``column_keys`` and gets a value for each). Rows come back
    as DBAPI tuples without result processing, so select plain integers and text only.
    The statements bypass SQLAlchemy's execution events, so its ``echo`` log omits them.
    """

    def __init__(self, statement: ClauseElement, column_keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.column_keys = list(column_keys) if column_keys is not None else None
        self._forms: dict[tuple[str, str, str], _Form] = {}

    def _form(self, dialect: Dialect) -> _Form:
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        form = self._forms.get(key)
        if form is None:
            compiled: Any = self.statement.compile(dialect=dialect, column_keys=self.column_keys)
            names: list[str] = list(
                compiled.positiontup if compiled.positional else compiled.bind_names.values()
            )
            by_name = {name: bind for bind, name in compiled.bind_names.items()}
            escaped = compiled.escaped_bind_names or {}
            keys: list[str] = []
            constants: dict[str, Any] = {}
            processors: list[tuple[int, Callable[[Any], Any]]] = []
            for position, name in enumerate(names):
                bind = by_name[name]
                if bind.expanding or bind.literal_execute:
                    raise ValueError(f"{name}: a prepared statement binds single values only")
                keys.append(bind.key)
                if not bind.required and bind.value is not None:
                    constants[bind.key] = bind.value
                processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                if processor is not None:
                    processors.append((position, processor))
            form = _Form(
                compiled.string,
                bool(compiled.positional),
                tuple(escaped.get(name, name) for name in names),
                tuple(keys),
                constants,
                tuple(processors),
            )
            self._forms[key] = form
        return form

    def _cursor(self, conn: Connection, params: Any, many: bool) -> Any:
        form = self._form(conn.dialect)
        args = [form.parameters(p) for p in params] if many else form.parameters(params)
        dbapi_connection = conn.connection.dbapi_connection
        assert dbapi_connection is not None
        cursor = dbapi_connection.cursor()
        try:
            if many:
                cursor.executemany(form.sql, args)
            else:
                cursor.execute(form.sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            lost = conn.dialect.is_disconnect(exc, dbapi_connection, cursor)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                form.sql,
                args,
                exc,
                conn.dialect.loaded_dbapi.Error,
                connection_invalidated=lost,
                dialect=conn.dialect,
                ismulti=many,
            ) from exc
        return cursor

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run the statement; the number of rows it changed."""
        cursor = self._cursor(conn, params, False)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per parameter set (DBAPI ``executemany``)."""
        if rows:
            self._cursor(conn, rows, True).close()

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of the result (a tuple), or None."""
        cursor = self._cursor(conn, params, False)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return tuple(row) if row is not None else None

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row of the result (tuples)."""
        cursor = self._cursor(conn, params, False)
        try:
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = self.first(conn, params)
        return row[0] if row is not None else None


_BEGIN_IMMEDIATE = Prepared(text("BEGIN IMMEDIATE"))
_COMMIT = Prepared(text("COMMIT"))
