"""A throwaway PostgreSQL database for the index tests (pytest plugin).

The server at 127.0.0.1:5432 (trust auth) is used; ``VNA_TEST_PG_ADMIN_URL`` can point
elsewhere. One database per test session (per xdist worker) is created with the schema
migrated, every test starts from empty tables, and the database is dropped at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

ADMIN_URL = os.environ.get(
    "VNA_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """URL of a fresh, migrated database, dropped after the session."""
    name = f"vna_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(ADMIN_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"PostgreSQL is not reachable at {ADMIN_URL}: {exc}")
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    from vna.index.db import Database

    db = Database(url)
    db.migrate()
    db.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def pg_index_url(pg_database_url: str) -> str:
    """The session's database, emptied for this test."""
    engine = create_engine(pg_database_url, poolclass=NullPool)
    with engine.begin() as conn:
        tables = (
            conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
            )
            .scalars()
            .all()
        )
        if tables:
            joined = ", ".join(f'"{t}"' for t in tables)
            conn.execute(text(f"TRUNCATE {joined} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return pg_database_url
