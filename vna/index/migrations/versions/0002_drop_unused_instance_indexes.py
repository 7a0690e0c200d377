"""drop instance indexes no query uses

Every index is one more B-tree insert (and, for random keys such as a SHA-256, one more
page written) per stored object. No query filters instances by SHA-256 or received time,
and ``ix_instance_series_current`` (series_fk, is_current, instance_number) serves every
lookup by series, including the foreign key's checks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 19:30:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UNUSED = {
    "ix_instance_sha256": ["sha256"],
    "ix_instance_received_at": ["received_at"],
    "ix_instance_series_fk": ["series_fk"],
}


def upgrade() -> None:
    for name in UNUSED:
        op.drop_index(name, table_name="instance")


def downgrade() -> None:
    for name, columns in UNUSED.items():
        op.create_index(name, "instance", columns, unique=False)
