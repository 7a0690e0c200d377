"""The SCU commands and `vna serve` as an admin runs them (real subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dimse.conftest import Endpoint, dcmtk, free_port, wait_listening
from tests.support.cli import ROOT, run_vna, vna_env
from tests.support.data import require_real_data
from vna.retrieve import find_instances

pytestmark = pytest.mark.dcmtk


def test_echo_store_find_remote(server_any: Endpoint) -> None:
    settings = server_any.archive.settings
    echo = run_vna("echo", server_any.target, "-n", "2", settings=settings)
    assert echo.returncode == 0, echo.stderr
    assert echo.stdout.count("C-ECHO success") == 2
    folder = require_real_data() / "Encodings" / "DavidClunie"
    store = run_vna("store", server_any.target, str(folder), settings=settings)
    assert store.returncode == 0, store.stdout + store.stderr
    assert "sent 11, failed 0" in store.stdout
    found = run_vna(
        "find", "--remote", server_any.target, "-l", "patient", "-k", "PatientName=Wang*",
        "--json", settings=settings,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    names = sorted(m["00100010"]["Value"][0]["Ideographic"] for m in json.loads(found.stdout))
    assert names == ["王^小东", "王^小東"]
    assert find_instances(server_any.archive, study_uid=None)


def test_echo_to_nobody_fails(tmp_path: Path) -> None:
    result = run_vna("echo", f"NOBODY@127.0.0.1:{free_port()}", "--data-dir", str(tmp_path))
    assert result.returncode == 1


def test_vna_serve_runs_the_listener(tmp_path: Path) -> None:
    port = free_port()
    env = vna_env(None, VNA_DATA_DIR=str(tmp_path / "data"), VNA_DIMSE_PORT=str(port))
    process = subprocess.Popen(
        [sys.executable, "-m", "vna", "serve", "--no-http"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(port, process)  # type: ignore[arg-type]
        result = dcmtk("echoscu", "-aec", "VNA", "127.0.0.1", str(port))
        assert result.returncode == 0, result.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"DIMSE: AE VNA on 127.0.0.1:{port}" in out
    assert os.path.isdir(tmp_path / "data")
