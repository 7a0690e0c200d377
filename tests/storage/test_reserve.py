"""Object files reserved ahead of their objects (storage/reserve.py): each batch's names are
durable and journaled before use, and nothing of an unfinished batch is lost or left."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from storage import FilesystemStore
from storage.filesystem import TEMP_DIR_NAME
from storage.reserve import BATCH, JOURNAL_PREFIX


def _key() -> str:
    return "ab12" + uuid.uuid4().hex[4:]


def _journals(store: FilesystemStore) -> list[Path]:
    return sorted((store.root / TEMP_DIR_NAME).glob(JOURNAL_PREFIX + "*"))


def test_a_reserved_file_is_empty_under_its_key_and_journaled(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects")
    path = store.reserve(_key)
    key = path.name
    assert path == store.path_for(key) and path.stat().st_size == 0
    assert store.reserved_key(path) == key
    [journal] = _journals(store)
    named = journal.read_text().split()
    assert key in named and len(named) == BATCH
    assert all(store.path_for(k).exists() for k in named)  # the whole batch, one flush
    assert store.reserved_keys() == set(named)
    assert store.abandoned_reservations() == []  # its process (this one) holds it
    store.close()


def test_the_journal_goes_once_every_key_is_decided(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects")
    paths = [store.reserve(_key) for _ in range(BATCH)]
    assert len({p.name for p in paths}) == BATCH and len(_journals(store)) == 1
    for path in paths[:-1]:
        path.write_bytes(b"an object")
        store.settle(path.name)  # indexed
    assert len(_journals(store)) == 1  # one key is still undecided
    store.unreserve(paths[-1], used=True)  # received, then refused: removed
    assert not paths[-1].exists()
    assert _journals(store) == [] and store.reserved_keys() == set()
    assert sorted(store.keys()) == sorted(p.name for p in paths[:-1])


def test_an_unused_file_is_given_back_and_close_removes_the_untaken(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects")
    first = store.reserve(_key)
    store.unreserve(first, used=False)  # the association ended before a request came
    assert first.exists() and store.reserved_key(first) is None
    again = store.reserve(_key)
    assert again == first  # handed out again
    again.write_bytes(b"half an object")  # and in use when the store closes
    store.close()
    assert list(store.keys()) == [again.name]  # the untaken files went
    [journal] = _journals(store)  # the undecided key stays journaled for recovery
    assert again.name in journal.read_text().split()


def test_a_batch_whose_process_ended_is_abandoned(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    child = os.fork()
    if child == 0:  # a process that reserves, writes and dies without deciding anything
        try:
            taken = FilesystemStore(root).reserve(_key)
            taken.write_bytes(b"half an object")
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    store = FilesystemStore(root)
    [batch] = store.abandoned_reservations()
    assert len(batch.keys) == BATCH and set(batch.keys) == set(store.keys())
    assert store.abandoned_reservations() == []  # locked by the one recovering it
    batch.finish()
    assert _journals(store) == [] and store.reserved_keys() == set()


def test_stale_temporary_cleanup_leaves_journals(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "objects")
    store.reserve(_key)
    [journal] = _journals(store)
    os.utime(journal, (0, 0))  # a server idle for hours keeps its batch
    assert store.remove_stale_temp_files() == 0
    assert journal.exists()
    store.close()
