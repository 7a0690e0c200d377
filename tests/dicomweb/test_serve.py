"""`vna serve` as an operator runs it: DIMSE and DICOMweb over one index and one store, so an
object sent by C-STORE is found by QIDO-RS and fetched by WADO-RS at once, and an object
stored by STOW-RS is found and retrieved over DIMSE."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore

from tests.support.cli import ROOT, vna_env
from tests.support.factory import make_dataset, make_file
from tests.support.seaweed import free_ports


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A `vna serve` subprocess on free ports: (DICOMweb URL, DIMSE port)."""
    dimse_port, http_port = free_ports(2)
    env = vna_env(
        VNA_DATA_DIR=str(tmp_path / "data"),
        VNA_DIMSE_PORT=str(dimse_port),
        VNA_HTTP_PORT=str(http_port),
    )
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vna", "serve"], env=env, cwd=ROOT, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{http_port}/dicom-web"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "serve.log").read_text())
        try:
            with urllib.request.urlopen(url, timeout=2):
                break
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield url, dimse_port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(30) == 0, (tmp_path / "serve.log").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.dcmtk
@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed")
def test_c_store_then_qido_and_wado(served: tuple[str, int], tmp_path: Path) -> None:
    url, dimse_port = served
    path = make_file(tmp_path / "ct.dcm", patient_id="SERVE-1", patient_name="Serve^Dimse")
    done = subprocess.run(
        ["storescu", "-aec", "VNA", "127.0.0.1", str(dimse_port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(url=url)
    studies = client.search_for_studies(search_filters={"PatientID": "SERVE-1"})
    assert len(studies) == 1
    ds = pydicom.dcmread(path)
    fetched = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert fetched.PatientName == "Serve^Dimse"
    assert fetched.PixelData == ds.PixelData


def test_stow_then_c_find(served: tuple[str, int]) -> None:
    url, dimse_port = served
    from dicomweb_client.api import DICOMwebClient

    ds = make_dataset(patient_id="SERVE-2", patient_name="Serve^Web")
    DICOMwebClient(url=url).store_instances([ds])
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", dimse_port, ae_title="VNA")
    assert assoc.is_established
    try:
        query = pydicom.Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = "SERVE-2"
        query.StudyInstanceUID = ""
        answers = [
            identifier
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            )
            if status and status.Status in (0xFF00, 0xFF01)
        ]
    finally:
        assoc.release()
    assert [a.StudyInstanceUID for a in answers] == [ds.StudyInstanceUID]
