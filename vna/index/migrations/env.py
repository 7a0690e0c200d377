"""Alembic environment: runs on the connection the archive passes in (Database.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from vna.index.tables import Base

target_metadata = Base.metadata


def run() -> None:
    """Migrate on the given connection, or on the URL given with ``-x url=…``."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        url = context.get_x_argument(as_dictionary=True).get("url")
        if not url:
            raise SystemExit("pass the index URL with -x url=...")
        with create_engine(url).begin() as conn:
            _configure(conn)
        return
    _configure(connection)


def _configure(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
