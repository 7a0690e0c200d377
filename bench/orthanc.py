"""The reference archive for benchmarks: a private Orthanc on free loopback ports.

Started with `TCP_NODELAY=1` in its environment (its best case, see STACK.md), default
SQLite index and file storage in a temporary folder, optionally with the DICOMweb plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Orthanc:
    """``with Orthanc() as o:`` — ``o.http`` (base URL), ``o.dicom_port``, ``o.aet``."""

    def __init__(
        self,
        dicomweb: bool = False,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, str, int]] | None = None,
    ) -> None:
        self.dicomweb = dicomweb
        self.aet = aet
        self.modalities = modalities or {}
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.http = f"http://127.0.0.1:{self.http_port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="vna-orthanc-"))
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Orthanc:
        if not Path(ORTHANC).exists():
            raise SystemExit("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
        config = {
            "Name": "bench",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": False,
            "UnknownSopClassAccepted": True,
            "DicomModalities": {k: list(v) for k, v in self.modalities.items()},
            "Plugins": [DICOMWEB_PLUGIN] if self.dicomweb else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StableAge": 3600,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
        }
        (self.workdir / "orthanc.json").write_text(json.dumps(config))
        env = dict(os.environ, TCP_NODELAY="1")
        log = (self.workdir / "orthanc.log").open("wb")
        self.process = subprocess.Popen(
            [ORTHANC, str(self.workdir / "orthanc.json")], stdout=log, stderr=log, env=env
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit((self.workdir / "orthanc.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{self.http}/system", timeout=1) as response:
                    response.read()
                return self
            except OSError:
                time.sleep(0.05)
        raise SystemExit("Orthanc did not start within 60 s")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
