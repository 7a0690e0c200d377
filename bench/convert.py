"""Conversion benchmark: photos/s, video MB/s, and a 50,000 × 50,000 slide's time and peak RSS.

    .venv/bin/python bench/convert.py [--photos 40] [--video-seconds 20] [--slide 50000]

(a) camera JPEGs (12 MP, EXIF/GPS/XMP) passed through, and PNGs (2 MP) stored losslessly;
(b) a 1080p30 H.264 clip remuxed (MB/s of source) and a 720p VP9 clip transcoded (frames/s);
(c) a synthetic Aperio SVS of ``--slide`` pixels square converted with wsidicomizer, in a
child process whose peak resident memory (VmHWM) is reported. Inputs are generated once
under .bench/convert. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.media import image_array, planted_jpeg, planted_png, planted_video  # noqa: E402
from tests.support.slides import write_svs  # noqa: E402
from vna.convert import Context, convert_file  # noqa: E402

CACHE = ROOT / ".bench" / "convert"
CONTEXT = Context(
    patient_id="BENCH",
    patient_name="Bench^Mark",
    accession="B1",
    study_date="20240101",
    study_time="120000",
    body_part="skin",
    laterality="L",
)


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def photos(count: int) -> None:
    folder = CACHE / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    big = image_array(4000, 3000, seed=3)
    jpegs = [folder / f"{i}.jpg" for i in range(count)]
    for i, path in enumerate(jpegs):
        if not path.exists():
            planted_jpeg(path, array=big)
            path.write_bytes(path.read_bytes() + str(i).encode())  # distinct sources
    pngs = [folder / f"{i}.png" for i in range(count)]
    medium = image_array(1600, 1200, seed=4)
    for path in pngs:
        if not path.exists():
            planted_png(path, array=medium)
    for label, files in (("JPEG 12 MP passthrough", jpegs), ("PNG 2 MP lossless", pngs)):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            for path in files:
                convert_file(path, CONTEXT, Path(out))
            elapsed = time.perf_counter() - start
        size = sum(p.stat().st_size for p in files) / 1e6
        print(
            f"photos  {label:<26} {len(files) / elapsed:7.1f} photos/s  "
            f"{size / elapsed:7.1f} MB/s  ({len(files)} files, {size:.0f} MB)"
        )


def video(seconds: int) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    clip = CACHE / f"clip-1080p-{seconds}s.mp4"
    if not clip.exists():
        planted_video(
            clip,
            width=1920,
            height=1080,
            frames=30 * seconds,
            rate=30,
            options={"preset": "ultrafast", "crf": "4"},
        )
    size = clip.stat().st_size / 1e6
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        convert_file(clip, CONTEXT, Path(out))
        elapsed = time.perf_counter() - start
    print(
        f"video   H.264 1080p30 remux            {size / elapsed:7.1f} MB/s  "
        f"({size:.0f} MB, {30 * seconds} frames, {elapsed:.2f} s)"
    )
    vp9 = CACHE / "clip-720p-vp9.webm"
    frames = 60
    if not vp9.exists():
        planted_video(
            vp9,
            codec="libvpx-vp9",
            width=1280,
            height=720,
            frames=frames,
            rate=30,
            audio=False,
            options={"deadline": "realtime", "cpu-used": "8"},
        )
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        convert_file(vp9, CONTEXT, Path(out))
        elapsed = time.perf_counter() - start
    print(f"video   VP9 720p → H.264 transcode     {frames / elapsed:7.1f} frames/s")


def _convert_slide(path: str, out: str, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    start = time.perf_counter()
    files = convert_file(Path(path), CONTEXT, Path(out))
    queue.put((time.perf_counter() - start, peak_rss_mb(), len(files)))


def slide(size: int) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"slide-{size}.svs"
    if not path.exists():
        start = time.perf_counter()
        write_svs(path, width=size, height=size, levels=3)
        print(
            f"slide   wrote {path.name} ({path.stat().st_size / 1e6:.0f} MB) "
            f"in {time.perf_counter() - start:.1f} s"
        )
    out = CACHE / "slide-out"
    shutil.rmtree(out, ignore_errors=True)
    context = mp.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_convert_slide, args=(str(path), str(out), queue))
    child.start()
    elapsed, rss, count = queue.get()
    child.join()
    written = sum(p.stat().st_size for p in out.glob("*.dcm")) / 1e6
    print(
        f"slide   {size}×{size} SVS → {count} WSI instances: {elapsed:.1f} s, "
        f"{written / elapsed:.0f} MB/s, peak RSS {rss:.0f} MB "
        f"(source {path.stat().st_size / 1e6:.0f} MB)"
    )
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--video-seconds", type=int, default=60)
    parser.add_argument("--slide", type=int, default=50000)
    args = parser.parse_args()
    photos(args.photos)
    video(args.video_seconds)
    slide(args.slide)


if __name__ == "__main__":
    main()
