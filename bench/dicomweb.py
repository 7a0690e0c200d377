"""DICOMweb benchmark: this archive against Orthanc with its DICOMweb plugin, in the same run.

STOW-RS instances/s and MB/s (CT-sized 512x512x16-bit objects, 50 per request, one client and
four in parallel); QIDO-RS latency (median and p95) at each archive size for PatientID exact,
PatientName wildcard, StudyDate range, ``/studies?limit=100``, a study's series and a series'
instances; WADO-RS latency of an instance, a single frame and a series' metadata, frames of a
CT-sized series, the retrieval of that 100-instance series in MB/s, and random tiles of a
whole-slide image (a synthetic Aperio slide converted by ``vna convert``).

Both servers get the same objects and the same requests, sent by the same client code
(http.client, one keep-alive connection; warm-up requests left out), with keys drawn at
random so that no two requests of a row ask for the same patient, study or instance. The
servers take turns every 10 requests (see ``latency``). The
archives grow from one size to the next: small 64x64 objects in studies of 10 to 20
instances (every fifth study has two series), 1.5 studies per patient, dates spread over
eight years, five modalities; loaded with ``vna import`` into ours and ``POST /instances``
into Orthanc. Each row prints ours, Orthanc's and the ratio (ours/Orthanc for rates,
Orthanc/ours for latencies: above 1 means this archive is faster), and at the largest size
the target it is held to.

    .venv/bin/python bench/dicomweb.py --sizes 5000,50000,200000
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime as dt
import http.client
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT)]

import pydicom  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    MRImageStorage,
    UltrasoundImageStorage,
)

from bench.orthanc import Orthanc, free_port  # noqa: E402
from tests.support.factory import make_dataset, write  # noqa: E402

UID_ROOT = "1.2.826.0.1.3680043.10.1234.77."
SURNAMES = (
    "SMITH", "MARTIN", "GARCIA", "MULLER", "ROSSI", "NOVAK", "DUBOIS", "SILVA", "KOWALSKI",
    "JANSEN", "BERG", "LEROY", "MEYER", "COSTA", "HANSEN", "PETIT", "WEBER", "MORENO",
    "FISCHER", "BLANC", "NIELSEN", "ROMERO", "LAMBERT", "VOGEL", "FERRARI", "BAKER",
)  # fmt: skip
GIVEN = ("ANNA", "LUCAS", "EMMA", "NOAH", "LEA", "HUGO", "MIA", "LEO", "ZOE", "ADAM", "SARA")
MODALITIES = (
    ("CT", CTImageStorage, "CT CHEST"),
    ("MR", MRImageStorage, "MR BRAIN"),
    ("CT", CTImageStorage, "CT ABDOMEN"),
    ("CR", ComputedRadiographyImageStorage, "CR THORAX"),
    ("MR", MRImageStorage, "MR KNEE"),
    ("US", UltrasoundImageStorage, "US ABDOMEN"),
    ("DX", DigitalXRayImageStorageForPresentation, "DX HAND"),
)
EPOCH = dt.date(2016, 1, 1)
DAYS = 8 * 365

ACCEPT_JSON = "application/dicom+json"
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ACCEPT_FRAME = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
ACCEPT_JPEG = 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50'
STOW_PER_REQUEST = 50
WIDTH = 62


# -- the objects ----------------------------------------------------------------------------


class Catalogue:
    """Where each filling object sits: instance ``i`` of study ``k``, series ``j``.

    Study ``k`` has 10 to 20 instances, in one series or (every fifth study) two; patient
    ``p`` has studies ``3p//2 …`` (one or two); study dates are spread over eight years.
    The layout depends on the index alone, so a larger archive extends a smaller one.
    """

    def __init__(self, total: int) -> None:
        self.rows: list[tuple[int, int, int]] = []  # (study, series, instance number)
        k = 0
        while len(self.rows) < total:
            count = 10 + (k * 7) % 11
            two = k % 5 == 0
            for n in range(count):
                series = 1 if two and n >= count // 2 else 0
                self.rows.append((k, series, n + 1))
            k += 1
        del self.rows[total:]

    @staticmethod
    def patient(study: int) -> int:
        return 2 * study // 3

    @staticmethod
    def patient_id(patient: int) -> str:
        return f"DW{patient:07d}"

    @staticmethod
    def name_group(patient: int) -> str:
        """The family name's prefix shared by the patients ``10g … 10g+9``."""
        group = patient // 10
        return f"{SURNAMES[group % len(SURNAMES)]}{group:05d}"

    @classmethod
    def patient_name(cls, patient: int) -> str:
        return f"{cls.name_group(patient)}{patient % 10}^{GIVEN[patient % len(GIVEN)]}"

    @staticmethod
    def study_uid(study: int) -> str:
        return f"{UID_ROOT}1.{study}"

    @staticmethod
    def series_uid(study: int, series: int) -> str:
        return f"{UID_ROOT}2.{study}.{series + 1}"

    @staticmethod
    def sop_uid(index: int) -> str:
        return f"{UID_ROOT}3.{index}"

    @staticmethod
    def study_date(study: int) -> dt.date:
        return EPOCH + dt.timedelta(days=(study * 7919) % DAYS)

    def studies(self, filled: int) -> int:
        """Studies with at least one of the first ``filled`` objects."""
        return self.rows[filled - 1][0] + 1 if filled else 0

    def write(self, folder: Path, start: int, end: int) -> None:
        """Objects ``start … end-1`` as Part 10 files in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        ds: Dataset | None = None
        current: tuple[int, int] | None = None
        for i in range(start, end):
            study, series, number = self.rows[i]
            if ds is None or current != (study, series):
                patient = self.patient(study)
                modality, sop_class, description = MODALITIES[study % len(MODALITIES)]
                ds = make_dataset(
                    patient_id=self.patient_id(patient),
                    patient_name=self.patient_name(patient),
                    birth_date=f"{1930 + patient % 80}{1 + patient % 12:02d}{1 + patient % 28:02d}",
                    sex="FM"[patient % 2],
                    study_uid=self.study_uid(study),
                    series_uid=self.series_uid(study, series),
                    modality=modality,
                    sop_class=sop_class,
                    study_date=self.study_date(study).strftime("%Y%m%d"),
                    study_time=f"{8 + study % 10:02d}{study % 60:02d}00",
                    accession=f"A{study:08d}",
                    study_description=description,
                    series_number=series + 1,
                    rows=64,
                    columns=64,
                    seed=study % 5,
                )
                current = (study, series)
            sop = UID(self.sop_uid(i))
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.InstanceNumber = number
            write(ds, folder / f"{i:07d}.dcm")


@dataclass
class Ct:
    """A 100-instance series of CT-sized objects (512x512, 16 bits)."""

    study: str = f"{UID_ROOT}4.1"
    series: str = f"{UID_ROOT}4.1.1"
    count: int = 100

    def instance(self, i: int) -> str:
        return f"{UID_ROOT}4.1.1.{i}"

    def write(self, folder: Path) -> None:
        for i in range(self.count):
            ds = make_dataset(
                patient_id="DWCT0001",
                patient_name="CTSERIES^BENCH",
                study_uid=self.study,
                series_uid=self.series,
                sop_uid=self.instance(i),
                study_date="20230405",
                instance_number=i + 1,
                rows=512,
                columns=512,
                seed=i % 7,
            )
            write(ds, folder / f"ct{i:04d}.dcm")


@dataclass
class Slide:
    """The base level of a whole-slide image: its UIDs and number of tiles."""

    study: str
    series: str
    instance: str
    frames: int
    files: list[Path]


def make_slide(folder: Path, width: int, height: int) -> Slide:
    """A synthetic Aperio slide converted to VL Whole Slide Microscopy by ``vna convert``."""
    from tests.support.slides import write_svs

    folder.mkdir(parents=True, exist_ok=True)
    svs = write_svs(folder / "slide.svs", width=width, height=height, levels=3)
    out = folder / "dicom"
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run(
        [sys.executable, "-m", "vna", "convert", str(svs), "--out", str(out),
         "--patient-id", "DWWSI0001", "--patient-name", "SLIDE^BENCH"],
        env=vna_env(folder), cwd=folder, capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"vna convert failed: {result.stderr[-2000:]}")
    files = sorted(out.glob("*.dcm"))
    headers = [(pydicom.dcmread(p, stop_before_pixels=True), p) for p in files]
    base, _ = max(headers, key=lambda h: int(getattr(h[0], "NumberOfFrames", 1)))
    return Slide(
        base.StudyInstanceUID, base.SeriesInstanceUID, base.SOPInstanceUID,
        int(base.NumberOfFrames), files,
    )  # fmt: skip


def stow_bodies(count: int, tag: str) -> list[tuple[bytes, int]]:
    """``count`` CT-sized objects as STOW-RS bodies of 50 (one study per body)."""
    bodies = []
    for first in range(0, count, STOW_PER_REQUEST):
        study = f"{UID_ROOT}5.{tag}.{first}"
        parts = []
        for i in range(first, min(count, first + STOW_PER_REQUEST)):
            ds = make_dataset(
                patient_id=f"DWSTOW{tag}",
                patient_name=f"STOW{tag}^BENCH",
                study_uid=study,
                series_uid=f"{study}.1",
                sop_uid=f"{study}.1.{i}",
                study_date="20240601",
                instance_number=i - first + 1,
                rows=512,
                columns=512,
                seed=i % 7,
            )
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            parts.append(buffer.getvalue())
        bodies.append((multipart(parts), len(parts)))
    return bodies


BOUNDARY = "dicomweb-bench-boundary-8f14e45f"


def multipart(parts: Sequence[bytes]) -> bytes:
    chunks = []
    for part in parts:
        chunks.append(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(chunks)


# -- the client -----------------------------------------------------------------------------


class RequestError(Exception):
    """A request answered with an unexpected status, or not at all."""


class Client:
    """One keep-alive HTTP/1.1 connection to a DICOMweb service root."""

    def __init__(self, root: str) -> None:
        url = urllib.parse.urlsplit(root)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.prefix = url.path.rstrip("/")
        self.connection: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=600)
            try:
                self.connection.request(method, self.prefix + path, body=body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status, data
            except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
                self.close()
                if attempt == 2:
                    raise RequestError(f"{type(exc).__name__}") from exc
        raise AssertionError("unreachable")

    def get(self, path: str, accept: str) -> tuple[int, bytes]:
        return self.request("GET", path, {"Accept": accept})

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@dataclass
class Server:
    """One side of the comparison: its DICOMweb root and how objects are loaded into it."""

    name: str
    root: str
    load: Callable[[Sequence[Path], Path], None]
    client: Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = Client(self.root)


@dataclass
class Timing:
    """Median and p95 of one row's requests, or why it could not be measured."""

    median: float | None = None
    p95: float | None = None
    error: str | None = None
    results: list[int] = field(default_factory=list)


BLOCK = 10


def latency(
    clients: Sequence[Client], paths: Sequence[str], accept: str, warmup: int
) -> list[Timing]:
    """Milliseconds per request (the whole body read) on each server, warm.

    The first ``warmup`` paths are sent first and not counted. The others go in blocks of
    ``BLOCK`` requests sent back to back, the servers taking turns block by block so that
    other work on the machine weighs on both alike; each block starts with one more
    uncounted request (a warm-up path again), because on this kind of virtual machine a
    request to a server idle for some milliseconds (here: while the other one worked)
    costs about a millisecond more whatever the server. A server's row stops at its first
    failure. ``results`` holds the number of matches of JSON answers, else the body size.
    """
    times: list[list[float]] = [[] for _ in clients]
    results: list[list[int]] = [[] for _ in clients]
    errors: list[str | None] = [None for _ in clients]
    warm, timed = paths[:warmup], paths[warmup:]

    def send(side: int, path: str) -> tuple[float, bytes] | None:
        client = clients[side]
        started = time.perf_counter()
        try:
            status, body = client.get(path, accept)
        except RequestError as exc:
            errors[side] = f"error: {exc}"
            return None
        elapsed = time.perf_counter() - started
        if status == 204:
            return elapsed, b"[]"
        if status != 200:
            note(f"{status} from {client.prefix}{path}: {body[:300].decode(errors='replace')}")
            errors[side] = f"error: {status}"
            return None
        return elapsed, body

    for side in range(len(clients)):
        for path in warm:
            if send(side, path) is None:
                break
    for number, first in enumerate(range(0, len(timed), BLOCK)):
        for side in range(len(clients)):
            if errors[side] or (warm and send(side, warm[number % len(warm)]) is None):
                continue
            for path in timed[first : first + BLOCK]:
                answer = send(side, path)
                if answer is None:
                    break
                times[side].append(answer[0] * 1000)
                results[side].append(count_results(answer[1], accept))
    timings = []
    for side_times, side_results, error in zip(times, results, errors, strict=True):
        if error or not side_times:
            timings.append(Timing(error=error or "error: no requests"))
            continue
        side_times.sort()
        p95 = side_times[int(0.95 * (len(side_times) - 1))]
        timings.append(Timing(statistics.median(side_times), p95, None, side_results))
    return timings


def count_results(body: bytes, accept: str) -> int:
    if accept == ACCEPT_JSON:
        try:
            return len(json.loads(body))
        except ValueError:
            return -1
    return len(body)


# -- the table ------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    unit: str
    ours: float | None
    theirs: float | None
    ours_error: str | None = None
    theirs_error: str | None = None
    higher_is_better: bool = False
    target: float | None = None
    size: int | None = None
    detail: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.ours or not self.theirs:
            return None
        return self.ours / self.theirs if self.higher_is_better else self.theirs / self.ours

    def verdict(self, largest: int | None) -> str:
        if self.target is None or (self.size is not None and self.size != largest):
            return ""
        ratio = self.ratio
        mark = "?" if ratio is None else ("ok" if ratio >= self.target else "MISS")
        return f">={self.target:g}x {mark}"


class Table:
    def __init__(self, largest: int | None) -> None:
        self.rows: list[Row] = []
        self.largest = largest

    @staticmethod
    def header() -> str:
        return (
            f"{'row':<{WIDTH}} {'ours':>12} {'Orthanc':>12} {'unit':<6} {'ratio':>7}  "
            f"{'target':<10} {'answer size'}"
        )

    def line(self, row: Row) -> str:
        def value(number: float | None, error: str | None) -> str:
            if error:
                return error[:12]
            return "-" if number is None else f"{number:.2f}"

        ratio = row.ratio
        return (
            f"{row.name:<{WIDTH}} {value(row.ours, row.ours_error):>12} "
            f"{value(row.theirs, row.theirs_error):>12} {row.unit:<6} "
            f"{'-' if ratio is None else f'{ratio:.2f}':>7}  {row.verdict(self.largest):<10} "
            f"{row.detail}"
        ).rstrip()

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(self.line(row), flush=True)


def load_average() -> str:
    """The machine's 1, 5 and 15-minute load averages (other work weighs on the figures)."""
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def note(text: str) -> None:
    print(f"-- {text}", flush=True)


# -- the servers ----------------------------------------------------------------------------


def vna_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VNA_")}
    env["VNA_DATA_DIR"] = str(work / "vna")
    env["VNA_MAX_QUERY_RESULTS"] = "0"
    env["VNA_LOG_LEVEL"] = "WARNING"
    env["PYTHONPATH"] = str(ROOT)
    env["TCP_NODELAY"] = "1"
    return env


def start_ours(work: Path, port: int) -> subprocess.Popen[bytes]:
    env = vna_env(work)
    env["VNA_HTTP_PORT"] = str(port)
    process = subprocess.Popen(
        [sys.executable, "-m", "vna", "serve", "--no-dimse"],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=(work / "vna.log").open("ab"),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit((work / "vna.log").read_text()[-3000:])
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/dicom-web")
            connection.getresponse().read()
            connection.close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("our server did not start within 60 s")


def import_into_ours(work: Path, workers: int) -> Callable[[Sequence[Path], Path], None]:
    def load(_files: Sequence[Path], folder: Path) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "vna", "import", str(folder), "-j", str(workers), "--json"],
            env=vna_env(work), cwd=work, capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise SystemExit(f"vna import failed: {result.stderr[-2000:]}")

    return load


def post_into_orthanc(http_root: str, clients: int) -> Callable[[Sequence[Path], Path], None]:
    """Orthanc's own upload path: ``POST /instances`` from several keep-alive clients."""

    def load(files: Sequence[Path], _folder: Path) -> None:
        def post(chunk: Sequence[Path]) -> None:
            client = Client(http_root)
            headers = {"Content-Type": "application/dicom"}
            for path in chunk:
                status, body = client.request("POST", "/instances", headers, path.read_bytes())
                if status != 200:
                    raise SystemExit(f"Orthanc refused {path}: {status} {body[:200]!r}")
            client.close()

        with cf.ThreadPoolExecutor(clients) as pool:
            list(pool.map(post, [files[i::clients] for i in range(clients)]))

    return load


def timed_load(server: Server, files: Sequence[Path], folder: Path) -> float:
    started = time.perf_counter()
    server.load(files, folder)
    return time.perf_counter() - started


# -- the measurements -----------------------------------------------------------------------


def stow(servers: Sequence[Server], count: int, table: Table) -> None:
    """STOW-RS of ``count`` new CT-sized objects per row, one client then four.

    The servers take turns: each round sends one request per client to one server at once,
    then the same requests to the other; a server's rate is its objects over its rounds' time.
    """
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Accept": ACCEPT_JSON,
    }

    def send(client: Client, body: bytes, expected: int) -> str | None:
        try:
            status, answer = client.request("POST", "/studies", headers, body)
        except RequestError as exc:
            return f"error: {exc}"
        if status not in (200, 202):
            note(f"STOW-RS {status} from {client.prefix}: {answer[:300]!r}")
            return f"error: {status}"
        try:
            stored = len(json.loads(answer).get("00081199", {}).get("Value", []))
        except (ValueError, AttributeError):
            stored = -1
        return None if stored == expected else f"error: {stored}/{expected}"

    for clients in (1, 4):
        bodies = stow_bodies(count, f"{clients}")
        connections = [[Client(server.root) for _ in range(clients)] for server in servers]
        elapsed = [0.0 for _ in servers]
        errors: list[str | None] = [None for _ in servers]
        with cf.ThreadPoolExecutor(clients) as pool:
            for first in range(0, len(bodies), clients):
                round_ = bodies[first : first + clients]
                for side in range(len(servers)):
                    if errors[side]:
                        continue
                    # Untimed: a server that leaves its writes in the page cache must not
                    # have the kernel write them back inside the other server's round.
                    os.sync()
                    started = time.perf_counter()
                    outcomes = list(pool.map(send, connections[side], *zip(*round_, strict=True)))
                    elapsed[side] += time.perf_counter() - started
                    errors[side] = next((e for e in outcomes if e), None)
        for side_connections in connections:
            for client in side_connections:
                client.close()
        objects = sum(n for _, n in bodies)
        megabytes = sum(len(body) for body, _ in bodies) / 1e6
        rates = [None if e else objects / t for e, t in zip(errors, elapsed, strict=True)]
        speeds = [None if e else megabytes / t for e, t in zip(errors, elapsed, strict=True)]
        name = f"STOW-RS {STOW_PER_REQUEST}x512x512x16/request, {clients} client(s)"
        for unit, values, target in (("inst/s", rates, 1.0), ("MB/s", speeds, None)):
            table.add(
                Row(
                    name, unit, values[0], values[1], errors[0], errors[1],
                    higher_is_better=True, target=target,
                )
            )  # fmt: skip


def distinct(rng: random.Random, population: int, count: int) -> list[int]:
    """``count`` different numbers below ``population`` (repeating only when too few)."""
    picks: list[int] = []
    while len(picks) < count:
        picks += rng.sample(range(population), min(population, count - len(picks)))
    return picks


def qido_paths(
    catalogue: Catalogue, filled: int, n: int, rng: random.Random
) -> Iterator[tuple[str, list[str], float]]:
    """(row name, request paths, target ratio) of each QIDO-RS row."""
    studies = catalogue.studies(filled)
    patients = catalogue.patient(studies - 1) + 1

    def day(offset: int) -> str:
        return (EPOCH + dt.timedelta(days=offset)).strftime("%Y%m%d")

    yield (
        "QIDO /studies?PatientID=X",
        [f"/studies?PatientID={catalogue.patient_id(p)}" for p in distinct(rng, patients, n)],
        10,
    )
    yield (
        "QIDO /studies?PatientName=X* (10 patients)",
        [
            f"/studies?PatientName={catalogue.name_group(10 * g)}*"
            for g in distinct(rng, max(1, patients // 10), n)
        ],
        5,
    )
    dates = []
    for start in distinct(rng, DAYS - 7, n):
        dates.append(f"/studies?StudyDate={day(start)}-{day(start + 6)}")
    yield "QIDO /studies?StudyDate=A-B (7 days)", dates, 5
    yield "QIDO /studies?limit=100", ["/studies?limit=100"] * n, 5
    picks = distinct(rng, studies, n)
    yield (
        "QIDO /studies/{study}/series",
        [f"/studies/{catalogue.study_uid(k)}/series" for k in picks],
        10,
    )
    picks = distinct(rng, studies, n)
    yield (
        "QIDO /studies/{st}/series/{se}/instances",
        [
            f"/studies/{catalogue.study_uid(k)}/series/{catalogue.series_uid(k, 0)}/instances"
            for k in picks
        ],
        10,
    )


def instance_path(catalogue: Catalogue, i: int) -> str:
    study, series, _ = catalogue.rows[i]
    return (
        f"/studies/{catalogue.study_uid(study)}/series/{catalogue.series_uid(study, series)}"
        f"/instances/{catalogue.sop_uid(i)}"
    )


def wado_paths(
    catalogue: Catalogue, filled: int, ct: Ct, slide: Slide | None, n: int, rng: random.Random
) -> Iterator[tuple[str, list[str], str, float | None]]:
    """(row name, request paths, Accept, target ratio) of each WADO-RS latency row."""
    yield (
        "WADO instance (64x64)",
        [instance_path(catalogue, i) for i in distinct(rng, filled, n)],
        ACCEPT_DICOM,
        None,
    )
    yield (
        "WADO frame (64x64)",
        [instance_path(catalogue, i) + "/frames/1" for i in distinct(rng, filled, n)],
        ACCEPT_FRAME,
        5,
    )
    studies = catalogue.studies(filled)
    yield (
        "WADO series metadata (10-20 x 64x64)",
        [
            f"/studies/{catalogue.study_uid(k)}/series/{catalogue.series_uid(k, 0)}/metadata"
            for k in distinct(rng, studies, n)
        ],
        ACCEPT_JSON,
        5,
    )
    ct_series = f"/studies/{ct.study}/series/{ct.series}"
    yield (
        "WADO instance (512x512x16)",
        [f"{ct_series}/instances/{ct.instance(i)}" for i in distinct(rng, ct.count, n)],
        ACCEPT_DICOM,
        None,
    )
    yield (
        "WADO frame (512x512x16)",
        [f"{ct_series}/instances/{ct.instance(i)}/frames/1" for i in distinct(rng, ct.count, n)],
        ACCEPT_FRAME,
        5,
    )
    yield (
        "WADO series metadata (100 x 512x512)",
        [f"{ct_series}/metadata"] * n,
        ACCEPT_JSON,
        5,
    )
    if slide is not None:
        base = f"/studies/{slide.study}/series/{slide.series}/instances/{slide.instance}"
        yield (
            f"WADO WSI tile (JPEG, random of {slide.frames})",
            [f"{base}/frames/{f + 1}" for f in distinct(rng, slide.frames, n)],
            ACCEPT_JPEG,
            5,
        )


def compare(name: str, paths: Sequence[str], timings: Sequence[Timing], warmup: int) -> None:
    """Say when the two servers did not give the same number of matches."""
    ours, theirs = timings
    if ours.error or theirs.error or ours.results == theirs.results:
        return
    for path, a, b in zip(paths[warmup:], ours.results, theirs.results, strict=False):
        if a != b:
            note(f"{name}: ours {a}, Orthanc {b} for {path}")
            return


def measure_rows(
    servers: Sequence[Server],
    rows: Iterator[tuple[str, list[str], str, float | None]],
    filled: int,
    warmup: int,
    table: Table,
    check_counts: bool,
) -> None:
    for name, paths, accept, target in rows:
        timings = latency([server.client for server in servers], paths, accept, warmup)
        if check_counts and accept == ACCEPT_JSON:
            compare(name, paths, timings, warmup)
        ours, theirs = timings
        detail = describe(theirs.results or ours.results, accept)
        for label, pick, row_target in (("median", 0, target), ("p95", 1, None)):
            o = ours.median if pick == 0 else ours.p95
            t = theirs.median if pick == 0 else theirs.p95
            table.add(
                Row(
                    f"{name} @{filled} {label}", "ms", o, t, ours.error, theirs.error,
                    target=row_target, size=filled, detail=detail if pick == 0 else "",
                )
            )  # fmt: skip


def describe(results: Sequence[int], accept: str) -> str:
    """The mean size of the answers: matches of a search, else kilobytes."""
    if not results:
        return ""
    mean = statistics.fmean(results)
    return f"{mean:.1f} matches" if accept == ACCEPT_JSON else f"{mean / 1000:.1f} kB"


def retrieve_series(
    servers: Sequence[Server], ct: Ct, repeats: int, filled: int, table: Table
) -> None:
    """MB/s of a whole 100-instance CT series (multipart, as stored), over the median time."""
    path = f"/studies/{ct.study}/series/{ct.series}"
    clients = [server.client for server in servers]
    timings = latency(clients, [path] * (repeats + 1), ACCEPT_DICOM, 1)

    def rate(timing: Timing) -> float | None:
        if timing.error or not timing.median:
            return None
        return statistics.median(timing.results) / 1e6 / (timing.median / 1000)

    ours, theirs = timings
    table.add(
        Row(
            f"WADO series retrieval (100x512x512x16) @{filled}", "MB/s",
            rate(ours), rate(theirs), ours.error, theirs.error,
            higher_is_better=True, size=filled, detail=describe(theirs.results, ACCEPT_DICOM),
        )
    )  # fmt: skip


# -- the run --------------------------------------------------------------------------------


def versions(orthanc: Orthanc) -> str:
    client = Client(orthanc.http)
    try:
        system = json.loads(client.get("/system", "application/json")[1])
        plugin = json.loads(client.get("/plugins/dicom-web", "application/json")[1])
        return f"Orthanc {system.get('Version')}, DICOMweb plugin {plugin.get('Version')}"
    except (RequestError, ValueError):
        return "Orthanc (version unknown)"
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5000,50000,200000", help="archive sizes (objects)")
    parser.add_argument("--queries", type=int, default=50, help="requests per latency row")
    parser.add_argument("--warmup", type=int, default=3, help="requests left out of each row")
    parser.add_argument("--stow", type=int, default=2000, help="objects per STOW-RS row")
    parser.add_argument("--skip-stow", action="store_true")
    parser.add_argument("--stow-only", action="store_true", help="only the STOW-RS rows")
    parser.add_argument("--skip-wsi", action="store_true")
    parser.add_argument("--slide", default="32768x24576", help="WSI base level, WIDTHxHEIGHT")
    parser.add_argument("--retrievals", type=int, default=5, help="series retrievals per size")
    parser.add_argument("--import-workers", type=int, default=2, help="vna import -j")
    parser.add_argument("--orthanc-clients", type=int, default=4, help="Orthanc loaders")
    parser.add_argument(
        "--work", type=Path, default=None, help="working folder, kept (default: in .bench/)"
    )
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    began = time.perf_counter()

    (ROOT / ".bench").mkdir(exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="dicomweb-bench-", dir=ROOT / ".bench"))
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "vna", ignore_errors=True)  # both archives start empty
    catalogue = Catalogue(sizes[-1])
    ct = Ct()
    table = Table(sizes[-1])
    port = free_port()
    ours_process = start_ours(work, port)
    try:
        with Orthanc(dicomweb=True) as orthanc:
            servers = (
                Server("ours", f"http://127.0.0.1:{port}/dicom-web",
                       import_into_ours(work, args.import_workers)),
                Server("Orthanc", f"{orthanc.http}/dicom-web",
                       post_into_orthanc(orthanc.http, args.orthanc_clients)),
            )  # fmt: skip
            print(
                f"DICOMweb benchmark: {os.cpu_count()} cores, Python "
                f"{sys.version.split()[0]}, {versions(orthanc)} (default settings, "
                f"TCP_NODELAY=1); {args.queries} requests per latency row",
                flush=True,
            )
            print(Table.header(), flush=True)
            if not args.skip_stow:
                stow(servers, args.stow, table)
            if args.stow_only:
                sizes, args.skip_wsi = [], True

            extra = work / "extra"
            shutil.rmtree(extra, ignore_errors=True)
            extra.mkdir()
            ct.write(extra)
            slide = None
            if not args.skip_wsi:
                width, height = (int(v) for v in args.slide.lower().split("x"))
                slide = make_slide(work / "wsi", width, height)
                for path in slide.files:
                    shutil.copy(path, extra / path.name)
            extra_files = sorted(extra.glob("*.dcm"))
            for server in servers:
                timed_load(server, extra_files, extra)
            shutil.rmtree(extra)

            filled = 0
            for size in sizes:
                batch = work / f"fill-{size}"
                shutil.rmtree(batch, ignore_errors=True)
                started = time.perf_counter()
                catalogue.write(batch, filled, size)
                made = time.perf_counter() - started
                files = sorted(batch.glob("*.dcm"))
                took = [timed_load(server, files, batch) for server in servers]
                shutil.rmtree(batch)
                count = size - filled
                note(
                    f"filled to {size} objects (+{count}, written in {made:.0f} s): "
                    f"vna import -j {args.import_workers} {took[0]:.0f} s "
                    f"({count / took[0]:.0f}/s), Orthanc POST /instances x"
                    f"{args.orthanc_clients} {took[1]:.0f} s ({count / took[1]:.0f}/s); "
                    f"load average {load_average()}"
                )
                filled = size
                rng = random.Random(size)
                n = args.queries + args.warmup
                qido = (
                    (name, paths, ACCEPT_JSON, target)
                    for name, paths, target in qido_paths(catalogue, filled, n, rng)
                )
                measure_rows(servers, qido, filled, args.warmup, table, True)
                wado = wado_paths(catalogue, filled, ct, slide, n, rng)
                measure_rows(servers, wado, filled, args.warmup, table, False)
                retrieve_series(servers, ct, args.retrievals, filled, table)
                note(f"measured at {size} objects; load average {load_average()}")
            for server in servers:
                server.client.close()
    finally:
        ours_process.terminate()
        try:
            ours_process.wait(30)
        except subprocess.TimeoutExpired:
            ours_process.kill()
            ours_process.wait()

    minutes = (time.perf_counter() - began) / 60
    print(
        f"\nsummary: {os.cpu_count()} cores, run of {minutes:.0f} min, load average at the end "
        f"{load_average()}; ratio above 1: this archive is faster"
    )
    print(Table.header())
    for row in table.rows:
        print(table.line(row))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
