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
