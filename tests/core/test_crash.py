"""A `vna import` killed mid-way leaves no half-stored object and no row without its object."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from tests.support.cli import ROOT, run_vna, vna_env
from tests.support.factory import make_file, uid
from vna.archive import Archive
from vna.index.tables import Instance


def _instances(archive: Archive) -> int:
    try:
        with archive.db.read() as session:
            return int(session.execute(select(func.count()).select_from(Instance)).scalar_one())
    except OperationalError:  # the import is still creating the index
        return 0


@pytest.mark.slow
def test_killed_import_leaves_a_consistent_archive(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    study = uid()
    for i in range(400):
        make_file(
            src / f"{i:04d}.dcm", study_uid=study, instance_number=i, rows=128, columns=128, seed=i
        )
    proc = subprocess.Popen(
        [sys.executable, "-m", "vna", "import", str(src), "-j", "2"],
        env=vna_env(settings),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    try:
        # watched in-process (a `vna stats` subprocess starts slower than the import runs)
        with Archive.open(settings) as archive:
            while time.monotonic() < deadline:
                if _instances(archive) >= 40:
                    break
                assert proc.poll() is None, "the import finished before it could be interrupted"
                time.sleep(0.005)
            else:
                pytest.fail("the import did not make progress")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    report = json.loads(run_vna("verify", "--json", settings=settings).stdout)
    assert report["missing_objects"] == []
    assert report["checksum_mismatches"] == [] and report["size_mismatches"] == []
    repaired = json.loads(run_vna("verify", "--repair", "--json", settings=settings).stdout)
    assert repaired["unreadable_orphans"] == []  # every object in the store is complete
    assert repaired["ok_after_repair"] is True
    # importing again completes the job: everything stored exactly once
    again = run_vna("import", str(src), "--json", settings=settings)
    assert again.returncode == 0, again.stderr
    final = json.loads(run_vna("stats", "--json", settings=settings).stdout)
    assert final["instances"] == 400 and final["versions"] == 400


@pytest.mark.slow
@pytest.mark.dcmtk
def test_killed_listener_leaves_no_reserved_file_behind(local_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`vna serve` receives each object into a file reserved in the store under its future
    key. Killed with objects stored and one half received, it leaves that file and its
    batch's unused ones; `vna verify` (and the next `vna serve`) remove exactly those."""
    import socket as socket_module

    import pydicom
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import build_context

    from tests.dimse.conftest import associate, data_set_bytes, dcmtk, free_port
    from tests.dimse.test_store import send_partial

    stored = [make_file(tmp_path / f"{i}.dcm", rows=64, columns=64, seed=i) for i in range(3)]
    big = make_file(tmp_path / "big.dcm", rows=1024, columns=1024, seed=9)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vna", "serve", "--no-http"],
        env=vna_env(local_settings, VNA_DIMSE_PORT=str(port), VNA_DIMSE_PROCESSES="1"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while dcmtk("echoscu", "-aec", "VNA", "127.0.0.1", str(port)).returncode != 0:
            assert time.monotonic() < deadline and proc.poll() is None, "the listener did not start"
            time.sleep(0.1)
        result = dcmtk("storescu", "-aec", "VNA", "127.0.0.1", str(port), *map(str, stored))
        assert result.returncode == 0, result.stderr
        endpoint = type("E", (), {"host": "127.0.0.1", "port": port, "ae_title": "VNA"})()
        assoc = associate(endpoint, [build_context(CTImageStorage, [ExplicitVRLittleEndian])])
        assert assoc.is_established
        send_partial(assoc, pydicom.dcmread(big).SOPInstanceUID, data_set_bytes(big), 2 / 3)
        objects = local_settings.data_dir / "objects"
        deadline = time.monotonic() + 30
        while not any(p.stat().st_size > 1_000_000 for p in objects.glob("??/??/*")):
            assert time.monotonic() < deadline, "the listener did not receive the object"
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        with contextlib.suppress(Exception):
            assoc.dul.socket.socket.shutdown(socket_module.SHUT_RDWR)
            assoc.kill()
    files = list(objects.glob("??/??/*"))
    assert len(files) > 3  # the stored three, the half-received one and unused reserved ones
    report = json.loads(run_vna("verify", "--json", settings=local_settings).stdout)
    assert report["orphan_objects"] == [] and report["missing_objects"] == []
    assert report["checksum_mismatches"] == [] and report["ok_after_repair"]
    assert len(list(objects.glob("??/??/*"))) == 3  # exactly the stored objects
    assert not list((objects / ".tmp").glob("reserved-*"))
    with Archive.open(local_settings) as archive:
        assert _instances(archive) == 3
