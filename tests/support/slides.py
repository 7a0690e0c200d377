"""Synthetic whole-slide images for tests and benchmarks (Aperio SVS written with tifffile).

The label and macro pages carry planted text in their pixel bytes (stored uncompressed) and
the descriptions carry a planted barcode, scanner serial and file name, so a test can search a
conversion's output for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile

APERIO = "Aperio Image Library v12.0.15"


def _tile(seed: int, size: int) -> np.ndarray:
    """A tile that compresses like tissue: smooth colour plus some noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack(
        [
            128 + 60 * np.sin((x + seed * 7) / 23.0),
            110 + 50 * np.cos((y + seed * 3) / 17.0),
            150 + 40 * np.sin((x + y) / 31.0),
        ],
        axis=-1,
    )
    noise = rng.integers(-12, 12, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _planted_image(text: bytes, width: int, height: int) -> np.ndarray:
    """An RGB image whose raw bytes spell ``text`` again and again (uncompressed pages keep
    it readable in the file)."""
    count = width * height * 3
    raw = (text * (count // len(text) + 1))[:count]
    return np.frombuffer(raw, np.uint8).reshape(height, width, 3).copy()


def write_svs(
    path: Path,
    *,
    width: int = 2048,
    height: int = 1536,
    tile: int = 256,
    levels: int = 2,
    label_text: bytes = b"PLANTED-LABEL-DOE-JANE ",
    macro_text: bytes = b"PLANTED-MACRO-S22-4711 ",
    barcode: str = "PLANTED-BARCODE-S22-4711",
    serial: str = "PLANTED-SCANNER-SN-987",
    distinct_tiles: int = 16,
) -> Path:
    """Write an SVS: tiled JPEG levels (each a quarter of the one before), a thumbnail, a
    label and a macro page. Tiles are encoded once (``distinct_tiles`` of them) and reused,
    so a 50,000 × 50,000 slide is written in seconds."""
    import imagecodecs

    encoded = [imagecodecs.jpeg8_encode(_tile(i, tile), level=80) for i in range(distinct_tiles)]
    info = (
        f"|AppMag = 20|MPP = 0.4990|ScanScope ID = {serial}|Filename = {barcode}"
        f"|Barcode = {barcode}|User = PLANTED-USER|Date = 01/02/21|Time = 10:11:12"
    )

    def tiles(w: int, h: int) -> Iterator[bytes]:
        n = ((h + tile - 1) // tile) * ((w + tile - 1) // tile)
        for i in range(n):
            yield encoded[i % distinct_tiles]

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        common = {
            "photometric": "ycbcr",
            "compression": "jpeg",
            "subsampling": (2, 2),
            "metadata": None,
        }
        w, h = width, height
        desc = f"{APERIO}\r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile}) JPEG/RGB Q=80"
        tif.write(
            tiles(w, h),
            shape=(h, w, 3),
            dtype="uint8",
            tile=(tile, tile),
            description=desc + info,
            **common,
        )
        thumb = _tile(99, 64)[: max(1, 64 * height // width)]
        tif.write(
            thumb,
            description=f"{APERIO}\r\n{width}x{height} -> 64x{thumb.shape[0]}" + info,
            photometric="rgb",
            metadata=None,
        )
        for level in range(1, levels):
            w, h = max(1, width >> (2 * level)), max(1, height >> (2 * level))
            tif.write(
                tiles(w, h),
                shape=(h, w, 3),
                dtype="uint8",
                tile=(tile, tile),
                description=f"{APERIO}\r\n{width}x{height} -> {w}x{h}" + info,
                **common,
            )
        # label (subfile type 1) and macro (9), uncompressed so their bytes stay readable
        for name, text, kind, w in (("label", label_text, 1, 96), ("macro", macro_text, 9, 192)):
            tif.write(
                _planted_image(text, w, 64),
                subfiletype=kind,
                photometric="rgb",
                metadata=None,
                description=f"{APERIO}\r\n{name} {w}x64\r\n{info}",
            )
    return path
