"""Ingest benchmark: `vna import` throughput on both back ends, and peak memory for one big
object, with Orthanc's own upload (REST `POST /instances`) of the same files in the same run.

    .venv/bin/python bench/ingest.py [--small 5000] [--ct 200] [--big-mb 1024] [--no-orthanc]

Prints instances/s and MB/s for (a) small 64×64 objects and (b) CT-sized 512×512×16-bit
objects, on SQLite + filesystem and on PostgreSQL + S3 (SeaweedFS), and the peak RSS of
`vna import` of one multi-frame object of about 1 GB. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.orthanc import Orthanc  # noqa: E402
from tests.support.factory import make_dataset, uid, write  # noqa: E402

CACHE = ROOT / ".bench"


def generate(folder: Path, count: int, size: int) -> Path:
    """``count`` objects of ``size``×``size`` 16-bit pixels in studies of 100 instances."""
    marker = folder.with_name(folder.name + ".complete")
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    patient = ""
    study = series = ""
    for i in range(count):
        if i % 100 == 0:
            study, patient = uid(), f"BENCH{i // 100:05d}"
        if i % 50 == 0:
            series = uid()
        ds = make_dataset(
            rows=size,
            columns=size,
            study_uid=study,
            series_uid=series,
            instance_number=i % 100 + 1,
            patient_id=patient,
            seed=i % 7,
        )
        write(ds, folder / f"{i:06d}.dcm")
    marker.touch()
    return folder


def generate_big(path: Path, megabytes: int) -> Path:
    """One multi-frame object of about ``megabytes`` MB, written without holding it in
    memory (header by pydicom, pixel data appended in chunks)."""
    if path.exists():
        return path
    frame = 512 * 512 * 2
    frames = max(1, megabytes * 1024 * 1024 // frame)
    ds = make_dataset(rows=512, columns=512, frames=1)
    ds.NumberOfFrames = frames
    del ds.PixelData
    tmp = path.with_suffix(".part")
    write(ds, tmp)
    chunk = os.urandom(frame)
    with tmp.open("ab") as fp:
        fp.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frame * frames))
        for _ in range(frames):
            fp.write(chunk)
    tmp.replace(path)
    return path


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.dcm"))


def vna_import(folder: Path, env: dict[str, str], workers: int) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "vna", "import", str(folder), "-j", str(workers), "--json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"vna import failed: {result.stderr[-2000:]}")
    return elapsed


def peak_rss_of(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall time and peak RSS (bytes) of a child process, measured by the kernel."""
    code = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        f"r = subprocess.run({cmd!r}, capture_output=True)\n"
        "dt = time.perf_counter() - t\n"
        "assert r.returncode == 0, r.stderr[-2000:]\n"
        "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    elapsed, kib = out.stdout.split()
    return float(elapsed), int(kib) * 1024


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VNA_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONWARNINGS"] = "ignore"
    return env


class PostgresS3:
    """A throwaway PostgreSQL database and a SeaweedFS S3 gateway for one run."""

    def __enter__(self) -> PostgresS3:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        from tests.support.seaweed import S3Server, SeaweedGateway, find_weed

        self.db = f"vna_bench_{uuid.uuid4().hex[:8]}"
        self.admin = create_engine(
            "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
        )
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.db}"'))
        self.gateway = SeaweedGateway(find_weed())
        self.gateway.start()
        self.s3 = S3Server(self.gateway.endpoint, self.gateway.access_key, self.gateway.secret_key)
        return self

    def env(self, data_dir: Path, bucket: str) -> dict[str, str]:
        env = base_env()
        env["VNA_DATA_DIR"] = str(data_dir)
        env["VNA_INDEX_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db}"
        env["VNA_STORE_URL"] = self.s3.url(bucket)
        return env

    def reset(self) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db}", poolclass=NullPool
        )
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import text

        self.gateway.stop()
        with self.admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"),
                {"d": self.db},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db}"'))


def orthanc_upload(folder: Path, clients: int) -> float:
    """Orthanc's own bulk upload path: POST every file to /instances."""
    files = sorted(folder.glob("*.dcm"))
    with Orthanc() as orthanc:

        def post(path: Path) -> None:
            request = urllib.request.Request(
                f"{orthanc.http}/instances",
                data=path.read_bytes(),
                method="POST",
                headers={"Content-Type": "application/dicom"},
            )
            with urllib.request.urlopen(request) as response:
                response.read()

        start = time.perf_counter()
        with cf.ThreadPoolExecutor(clients) as pool:
            list(pool.map(post, files))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--ct", type=int, default=200)
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-orthanc", action="store_true")
    args = parser.parse_args()

    sets = {
        f"{args.small} small 64x64": generate(CACHE / f"small-{args.small}", args.small, 64),
        f"{args.ct} CT 512x512x16": generate(CACHE / f"ct-{args.ct}", args.ct, 512),
    }
    rows: list[tuple[str, str, int, int, float, float | None]] = []
    with PostgresS3() as pg_s3:
        for name, folder in sets.items():
            count = len(list(folder.glob("*.dcm")))
            size = folder_bytes(folder)
            orthanc_time = None if args.no_orthanc else orthanc_upload(folder, args.workers)
            with tempfile.TemporaryDirectory(prefix="vna-bench-") as tmp:
                env = base_env()
                env["VNA_DATA_DIR"] = tmp
                elapsed = vna_import(folder, env, args.workers)
                rows.append((name, "sqlite+fs", count, size, elapsed, orthanc_time))
            with tempfile.TemporaryDirectory(prefix="vna-bench-") as tmp:
                pg_s3.reset()
                env = pg_s3.env(Path(tmp), f"bench-{uuid.uuid4().hex[:8]}")
                elapsed = vna_import(folder, env, args.workers)
                rows.append((name, "postgres+s3", count, size, elapsed, orthanc_time))

    print(
        f"\ningest benchmark ({os.cpu_count()} cores), `vna import -j {args.workers}`; "
        f"Orthanc 1.10: REST POST /instances with {args.workers} clients, default SQLite+files"
    )
    print(
        f"{'data set':<22} {'back end':<12} {'inst/s':>8} {'MB/s':>8} "
        f"{'Orthanc inst/s':>15} {'ratio':>6}"
    )
    for name, backend, count, size, elapsed, orthanc_time in rows:
        rate = count / elapsed
        mbs = size / elapsed / 1e6
        if orthanc_time:
            o_rate = count / orthanc_time
            print(
                f"{name:<22} {backend:<12} {rate:8.1f} {mbs:8.1f} {o_rate:15.1f} "
                f"{rate / o_rate:6.2f}"
            )
        else:
            print(f"{name:<22} {backend:<12} {rate:8.1f} {mbs:8.1f}")

    big = generate_big(CACHE / f"big-{args.big_mb}mb.dcm", args.big_mb)
    with tempfile.TemporaryDirectory(prefix="vna-bench-") as tmp:
        env = base_env()
        env["VNA_DATA_DIR"] = tmp
        elapsed, rss = peak_rss_of(
            [sys.executable, "-m", "vna", "import", str(big), "-j", "1"], env
        )
    size_mb = big.stat().st_size / 1e6
    print(
        f"\none {size_mb:.0f} MB multi-frame object: vna import {elapsed:.1f} s "
        f"({size_mb / elapsed:.0f} MB/s), peak RSS {rss / 1e6:.0f} MB (target < 300 MB)"
    )


if __name__ == "__main__":
    main()
