"""DIMSE benchmark: this archive against Orthanc (SQLite + filesystem), in the same run.

C-STORE instances/s and MB/s (dcmtk storescu, one association and four in parallel; 64x64
and 512x512x16-bit objects), C-FIND latency (median and p95; PatientID exact, PatientName
wildcard, StudyDate range, all studies cancelled after 100) at each archive size, C-MOVE and
C-GET instances/s (dcmtk movescu/getscu, receiving without storing), and how long an
association proposing 120 storage classes waits for its A-ASSOCIATE-AC. C-FIND uses a
raw-socket client (bench/rawdimse.py) so the client is not what is measured. Both servers
run with TCP_NODELAY. Every row prints ours / Orthanc's.

    python bench/dimse.py --sizes 5000,50000,200000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# The objects are generated with numpy: its OpenBLAS threads would then spin on the cores
# the servers are measured on (the client is not what is measured). Not passed on to them.
_SINGLE_BLAS = "OPENBLAS_NUM_THREADS" not in os.environ
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from pydicom.dataset import Dataset  # noqa: E402
from pynetdicom import AllStoragePresentationContexts  # noqa: E402
from rawdimse import RawScu, association_latency  # noqa: E402

from tests.support.factory import make_dataset, write  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}
if _SINGLE_BLAS:
    del ENV["OPENBLAS_NUM_THREADS"]
#: Associations timed for the association row.
ASSOCIATIONS = 50
#: Each C-MOVE / C-GET row is the median of this many runs of the dcmtk tool.
RETRIEVE_REPEATS = 7
rows: list[tuple[str, float, float, str]] = []


def run(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=timeout)


def wait_echo(port: int, aet: str) -> None:
    for _ in range(600):
        if run("echoscu", "-aec", aet, "127.0.0.1", str(port)).returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers C-ECHO on {port}")


def start_ours(work: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**ENV, "VNA_DATA_DIR": str(work / "vna"), "VNA_DIMSE_PORT": str(port)}
    env["VNA_MAX_QUERY_RESULTS"] = "0"
    env["VNA_DIMSE_DESTINATIONS"] = f"SINK@127.0.0.1:{port + 2}"
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "vna", "serve", "--no-http"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "vna.log").open("w"),
    )
    wait_echo(port, "VNA")
    return process


def start_orthanc(work: Path, port: int, http_port: int, sink: int) -> subprocess.Popen[bytes]:
    folder = work / "orthanc"
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "bench",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "DicomPort": port,
        "HttpPort": http_port,
        "DicomAet": "ORTHANC",
        "Plugins": [],
        "RemoteAccessAllowed": False,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowMove": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": {"SINK": ["SINK", "127.0.0.1", sink]},
        "LimitFindResults": 0,
        "LimitFindInstances": 0,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen(
        ["/usr/sbin/Orthanc", str(folder / "orthanc.json")],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "orthanc.log").open("w"),
    )
    wait_echo(port, "ORTHANC")
    return process


def make_files(folder: Path, count: int, size: int, prefix: str, offset: int = 0) -> list[Path]:
    """``count`` objects, 10 per study, one study per patient, dates spread over 2020."""
    files = []
    for i in range(offset, offset + count):
        patient = i // 10
        day = 1 + patient % 365
        ds = make_dataset(
            patient_id=f"{prefix}{patient:06d}",
            patient_name=f"NAME{patient:06d}^{prefix}",
            study_uid=f"1.2.826.0.1.3680043.10.1234.9.{prefix_number(prefix)}.{patient}",
            series_uid=f"1.2.826.0.1.3680043.10.1234.8.{prefix_number(prefix)}.{patient}",
            sop_uid=f"1.2.826.0.1.3680043.10.1234.7.{prefix_number(prefix)}.{i}",
            study_date=time.strftime("%Y%m%d", time.strptime(f"2020 {day}", "%Y %j")),
            instance_number=i % 10 + 1,
            rows=size,
            columns=size,
        )
        files.append(write(ds, folder / f"{i:07d}.dcm"))
    return files


def prefix_number(prefix: str) -> int:
    """A number for a prefix, in the objects' UIDs: distinct prefixes give distinct UIDs
    (a sum of the characters did not: "S64R2" and "S64P4" made the same objects)."""
    return int.from_bytes(prefix.encode("ascii"), "big")


def store(port: int, aet: str, files: list[Path], parallel: int, nodelay: bool = True) -> float:
    """Seconds to C-STORE the files over ``parallel`` associations (with ``nodelay=False``
    the client keeps Nagle's algorithm on, as dcmtk does by default and many modalities do)."""
    chunks = [files[i::parallel] for i in range(parallel)]
    arguments = [_storescu_arguments(chunk, i) for i, chunk in enumerate(chunks)]
    # The files were just written: without this, the kernel writes them back during the
    # first server's run and its flushes wait for that, which favours the second server.
    os.sync()
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aec", aet, "127.0.0.1", str(port), *args],
            env=ENV if nodelay else {k: v for k, v in ENV.items() if k != "TCP_NODELAY"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for args in arguments
    ]
    for proc in procs:
        proc.wait()
    return time.perf_counter() - start


def _storescu_arguments(chunk: list[Path], number: int) -> list[str]:
    """File arguments for storescu; a long list becomes a folder of hard links (+sd), since
    a command line cannot name tens of thousands of files."""
    if len(chunk) <= 1000:
        return [str(p) for p in chunk]
    folder = chunk[0].parent / f".storescu-{number}"
    folder.mkdir(exist_ok=True)
    for path in chunk:
        link = folder / path.name
        if not link.exists():
            os.link(path, link)
    return ["+sd", str(folder)]


def store_row(
    work: Path,
    label: str,
    count: int,
    size: int,
    parallel: int,
    rounds: int,
    ours_port: int,
    theirs_port: int,
) -> None:
    """One C-STORE row: ``rounds`` rounds, each storing new objects into both servers, in
    turn (who goes first alternates), reported as the medians of the rounds. On a shared
    virtual machine one round moves by ±20%; alternating rounds keep both servers under
    the same conditions, and the per-round ratios show the spread."""
    ours_rates: list[float] = []
    theirs_rates: list[float] = []
    megabytes = 0.0
    for number in range(rounds):
        # new objects for every round: a second round of the same files would measure how
        # duplicates are answered, not how objects are stored
        prefix = f"S{size}" if parallel == 1 else f"S{size}P{parallel}"
        if number:
            prefix += f"R{number}"
        files = make_files(work / f"store-{label}-{parallel}-{number}", count, size, prefix)
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        turns = [(ours_port, "VNA", ours_rates), (theirs_port, "ORTHANC", theirs_rates)]
        for port, aet, rates in turns if number % 2 == 0 else turns[::-1]:
            rates.append(count / store(port, aet, files, parallel))
    name = f"C-STORE {label}, {parallel} association(s)"
    if rounds > 1:
        name += f" (median of {rounds})"
    ours, theirs = statistics.median(ours_rates), statistics.median(theirs_rates)
    row(name + " inst/s", ours, theirs, "inst/s")
    row(name + " MB/s", ours * megabytes / count, theirs * megabytes / count, "MB/s")
    if rounds > 1:
        ratios = " ".join(f"{a / b:.2f}" for a, b in zip(ours_rates, theirs_rates, strict=True))
        print(f"   ratio per round: {ratios}", flush=True)


def row(name: str, ours: float, theirs: float, unit: str) -> None:
    rows.append((name, ours, theirs, unit))
    ratio = ours / theirs if theirs else float("nan")
    print(f"{name:<58} {ours:>10.2f} {theirs:>10.2f} {unit:<8} {ratio:>7.2f}", flush=True)


def latency(
    port: int, aet: str, make: Callable[[int], Dataset], n: int, cancel: int | None = None
) -> tuple[float, float, float]:
    """(median ms, p95 ms, median ms to the first response) over n queries."""
    client = RawScu("127.0.0.1", port, aet)
    times, firsts = [], []
    for i in range(n):
        _pending, first, total, _status = client.find(make(i), cancel_after=cancel)
        times.append(total * 1000)
        firsts.append(first * 1000)
    client.close()
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], statistics.median(firsts)


def queries(patients: int) -> dict[str, tuple[Callable[[int], Dataset], int | None]]:
    rng = random.Random(7)

    def study(**keys: str) -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = ""
        ds.PatientName = ""
        ds.StudyDate = ""
        for key, value in keys.items():
            setattr(ds, key, value)
        return ds

    def by_id(_i: int) -> Dataset:
        return study(PatientID=f"F{rng.randrange(patients):06d}")

    def by_name(_i: int) -> Dataset:
        return study(PatientName=f"NAME{rng.randrange(patients) // 10:05d}*")

    def by_date(_i: int) -> Dataset:
        day = rng.randrange(1, 359)
        start = time.strftime("%Y%m%d", time.strptime(f"2020 {day}", "%Y %j"))
        end = time.strftime("%Y%m%d", time.strptime(f"2020 {day + 6}", "%Y %j"))
        return study(StudyDate=f"{start}-{end}")

    return {
        "PatientID exact": (by_id, None),
        "PatientName wildcard": (by_name, None),
        "StudyDate range (7 days)": (by_date, None),
        "all studies, cancelled after 100": (lambda _i: study(), 100),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", default="5000,50000,200000", help="archive sizes for C-FIND ('' for none)"
    )
    parser.add_argument("--small", type=int, default=2000, help="64x64 objects per C-STORE row")
    parser.add_argument("--ct", type=int, default=400, help="512x512 objects per C-STORE row")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per C-STORE row (median)"
    )
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--skip-store", action="store_true", help="no C-STORE rows")
    args = parser.parse_args()
    (ROOT / ".bench").mkdir(exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="dimse-bench-", dir=ROOT / ".bench"))
    work.mkdir(parents=True, exist_ok=True)
    ours_port, theirs_port = 21112, 24242
    ours = start_ours(work, ours_port)
    theirs = start_orthanc(work, theirs_port, 28042, theirs_port + 2)
    print(f"{'row':<58} {'ours':>10} {'Orthanc':>10} {'unit':<8} {'ratio':>7}")
    try:
        store_rows = (
            () if args.skip_store else (("64x64", args.small, 64), ("512x512x16", args.ct, 512))
        )
        for label, count, size in store_rows:
            for parallel in (1, 4):
                store_row(work, label, count, size, parallel, args.rounds, ours_port, theirs_port)
            if size == 64:
                files = make_files(work / f"store-{label}-nagle", count, size, f"S{size}N")
                ours_s = store(ours_port, "VNA", files, 1, nodelay=False)
                theirs_s = store(theirs_port, "ORTHANC", files, 1, nodelay=False)
                name = f"C-STORE {label}, 1 association, client without TCP_NODELAY"
                row(name + " inst/s", count / ours_s, count / theirs_s, "inst/s")
        filled = 0
        for target in (int(s) for s in args.sizes.split(",") if s):
            batch = work / f"fill-{target}"
            files = make_files(batch, target - filled, 64, "F", offset=filled)
            started = time.perf_counter()
            run(sys.executable, "-m", "vna", "import", str(batch), "-j", "2",
                "--data-dir", str(work / "vna"))  # fmt: skip
            ours_fill = time.perf_counter() - started
            theirs_fill = store(theirs_port, "ORTHANC", files, 4)
            shutil.rmtree(batch)
            filled = target
            print(f"-- archive filled to {target} instances (import {ours_fill:.0f} s, "
                  f"Orthanc C-STORE {theirs_fill:.0f} s)", flush=True)  # fmt: skip
            for name, (make, cancel) in queries(target).items():
                o = latency(ours_port, "VNA", make, args.queries, cancel)
                t = latency(theirs_port, "ORTHANC", make, args.queries, cancel)
                row(f"C-FIND {name} @{target} median", o[0], t[0], "ms")
                row(f"C-FIND {name} @{target} p95", o[1], t[1], "ms")
                if cancel:
                    row(f"C-FIND all studies @{target} first response", o[2], t[2], "ms")
        # what storescu and getscu propose: one context per storage class
        classes = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts[:120]]
        ours_ms = association_latency("127.0.0.1", ours_port, "VNA", classes, ASSOCIATIONS)
        theirs_ms = association_latency("127.0.0.1", theirs_port, "ORTHANC", classes, ASSOCIATIONS)
        row(f"A-ASSOCIATE-AC for 120 storage contexts (median of {ASSOCIATIONS})",
            ours_ms, theirs_ms, "ms")  # fmt: skip
        study = f"1.2.826.0.1.3680043.10.1234.9.{prefix_number('S64')}.0"
        sink = subprocess.Popen(
            ["storescp", "--ignore", "-aet", "SINK", str(ours_port + 2)], env=ENV
        )
        sink_orthanc = subprocess.Popen(
            ["storescp", "--ignore", "-aet", "SINK", str(theirs_port + 2)], env=ENV
        )
        try:
            wait_echo(ours_port + 2, "SINK")
            wait_echo(theirs_port + 2, "SINK")
            for verb, tool in (("C-MOVE", "movescu"), ("C-GET", "getscu")):
                timings = []
                for port, aet in ((ours_port, "VNA"), (theirs_port, "ORTHANC")):
                    extra = ["-aem", "SINK"] if tool == "movescu" else ["--ignore"]
                    rates = []
                    for _ in range(RETRIEVE_REPEATS):
                        started = time.perf_counter()
                        run(tool, "-S", *extra, "-aec", aet, "-k", "QueryRetrieveLevel=STUDY",
                            "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(port))  # fmt: skip
                        rates.append(10 / (time.perf_counter() - started))
                    timings.append(statistics.median(rates))
                row(f"{verb} of a 10-instance study (median of {RETRIEVE_REPEATS})",
                    timings[0], timings[1], "inst/s")  # fmt: skip
        finally:
            sink.terminate()
            sink_orthanc.terminate()
    finally:
        ours.terminate()
        theirs.terminate()
        ours.wait(30)
        theirs.wait(60)


if __name__ == "__main__":
    main()
