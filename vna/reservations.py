"""Recovery of object files reserved by a process that ended without deciding them.

The DIMSE receiver writes each object straight into a file reserved in the filesystem store
under its future key (storage/reserve.py). A process that crashes leaves such files behind,
empty or partly written, and none of them was acknowledged: an object is acknowledged only
once its index row is committed. So a reserved key with an index row is a stored object and
stays; any other reserved file is removed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select

from storage import FilesystemStore
from storage.base import InvalidKey
from vna.archive import Archive
from vna.dicomfile import read_object
from vna.index.tables import Instance

log = logging.getLogger(__name__)


def recover_reservations(archive: Archive) -> list[str]:
    """Remove the empty or incomplete unindexed files of abandoned reservations; return
    their keys.

    Batches still held by a live process (of any archive process on this machine) are left
    alone. Run at start-up (``vna serve``) and by ``vna verify``.
    """
    store = archive.store
    if not isinstance(store, FilesystemStore):
        return []
    removed: list[str] = []
    for batch in store.abandoned_reservations():
        try:
            with archive.db.reading() as conn:
                indexed = set(
                    conn.execute(
                        select(Instance.storage_key).where(Instance.storage_key.in_(batch.keys))
                    ).scalars()
                )
            for key in batch.keys:
                if key in indexed:
                    continue
                try:
                    path = store.path_for(key)
                except InvalidKey:  # the journal was damaged
                    log.warning("reservation journal %s names %r, not a key", batch.journal, key)
                    continue
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                if size and _whole_object(path):
                    continue  # perhaps acknowledged: left for `vna verify --repair`
                store.delete(key)
                removed.append(key)
        except BaseException:
            batch.release()
            raise
        batch.finish()
    if removed:
        log.warning(
            "removed %d object file(s) a stopped process had reserved and never indexed",
            len(removed),
        )
    return removed


def _whole_object(path: Path) -> bool:
    """Whether the file holds a complete DICOM object (a transfer cut short does not parse:
    its last element runs past the end of the file)."""
    try:
        read_object(path)
    except Exception:
        return False
    return True
