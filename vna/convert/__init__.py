"""Non-DICOM media → DICOM, tied to the user's context, with the device's metadata removed.

``classify`` tells the kind of a file from its content (magic bytes, then the readers
themselves), never from its name; ``convert_file`` dispatches to photo, video, audio, pdf
or wsi and returns the Part 10 files it wrote. Every door (``vna import``, ``vna convert``,
STOW-RS) goes through ``convert_file``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from vna.convert.common import Job, Options, ProgressFn
from vna.convert.context import Context, Manifest, load_manifest
from vna.errors import ConversionError, UnsupportedMedia
from vna.ingest import file_sha256

PHOTO, VIDEO, AUDIO, PDF, WSI = "photo", "video", "audio", "pdf", "wsi"
KINDS = (PHOTO, VIDEO, AUDIO, PDF, WSI)
#: What a file's extension claims (used only to explain a mismatch, never to decide).
EXTENSIONS = {
    **dict.fromkeys((".jpg", ".jpeg", ".jpe", ".png", ".heic", ".heif"), PHOTO),
    **dict.fromkeys((".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"), VIDEO),
    **dict.fromkeys((".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg"), AUDIO),
    ".pdf": PDF,
    **dict.fromkeys(
        (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".czi", ".svslide"), WSI
    ),
}
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def classify(path: Path) -> tuple[str | None, list[str]]:
    """The kind of ``path`` by content (None: not media, hand it to DICOM ingest) and
    warnings about a misleading extension.

    Raises:
        UnsupportedMedia: a media extension on content no converter reads.
        ConversionError: a video file without a video stream.
    """
    with path.open("rb") as fp:
        head = fp.read(4096)
    claimed = EXTENSIONS.get(path.suffix.lower())
    kind = _kind_of(path, head)
    if kind == AUDIO and claimed == VIDEO and path.suffix.lower() != ".m4a":
        raise ConversionError("the video file has no video stream (only sound)")
    if kind is None:
        if claimed is not None:
            raise UnsupportedMedia(
                f"the content is not a {claimed} file as its extension "
                f"{path.suffix!r} says, nor any kind the converters read"
            )
        return None, []
    if claimed is not None and claimed != kind:
        return kind, [f"the extension {path.suffix!r} says {claimed}, the content is {kind}"]
    return kind, []


def _kind_of(path: Path, head: bytes) -> str | None:
    if head[128:132] == b"DICM":
        return None
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")):
        return PHOTO
    if head[:4] in TIFF_MAGIC:
        return WSI if is_slide(path) else PHOTO
    if b"%PDF-" in head[:1024]:
        return PDF
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return PHOTO
    if (
        head[4:8] == b"ftyp"
        or head[:4] in (b"RIFF", b"\x1a\x45\xdf\xa3", b"OggS", b"fLaC")
        or head[:3] == b"ID3"
        or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xF0 == 0xF0)
    ):
        return _probe_streams(path)
    if EXTENSIONS.get(path.suffix.lower()) == WSI and is_slide(path):
        return WSI  # MIRAX, VMS and other formats only OpenSlide knows, by their extension
    return None


def _probe_streams(path: Path) -> str | None:
    """VIDEO when the container has a video stream, AUDIO when it has sound only."""
    import av

    try:
        with av.open(str(path)) as container:
            if container.streams.video:
                return VIDEO
            if container.streams.audio:
                return AUDIO
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return None
    return None


def is_slide(path: Path) -> bool:
    """A whole-slide image OpenTile (without re-encoding) or OpenSlide reads."""
    try:
        from opentile import OpenTile

        if OpenTile.detect_format(path) is not None:
            return True
    except Exception:  # an unreadable TIFF is not a slide OpenTile knows
        pass
    try:
        import openslide

        vendor = openslide.OpenSlide.detect_format(str(path))
    except Exception:
        return False
    return vendor is not None and vendor != "dicom"


def without_slide_companions(files: list[Path]) -> list[Path]:
    """The files minus the data files of MIRAX slides in the list (the folder named after a
    ``.mrxs`` file beside it belongs to that slide, which OpenSlide reads as one)."""
    folders = [f.with_suffix("").resolve() for f in files if f.suffix.lower() == ".mrxs"]
    if not folders:
        return files
    return [f for f in files if not any(f.resolve().is_relative_to(d) for d in folders)]


def source_digest(path: Path, kind: str) -> str:
    """What identifies a source: its SHA-256, or for a slide (gigabytes) its size with the
    hash of its first and last MiB."""
    if kind != WSI:
        return file_sha256(path)[0]
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fp:
        digest.update(fp.read(1 << 20))
        fp.seek(max(0, size - (1 << 20)))
        digest.update(fp.read(1 << 20))
    return digest.hexdigest()


def convert_file(
    path: Path,
    context: Context,
    out_dir: Path,
    options: Options | None = None,
    *,
    kind: str | None = None,
    instance_number: int = 1,
    progress: ProgressFn | None = None,
    warnings: list[str] | None = None,
) -> list[Path]:
    """Convert one file into DICOM objects written to ``out_dir``; return their paths.

    Raises:
        MissingContext: no patient ID in ``context``.
        UnsupportedMedia: not a kind the converters read (DICOM included: archive it as is).
        ConversionError: the file is corrupt, encrypted, or its context is malformed.
    """
    options = options or Options()
    notes = warnings if warnings is not None else []
    if kind is None:
        kind, found = classify(path)
        notes.extend(found)
    if kind is None:
        raise UnsupportedMedia("not a photo, video, sound recording, PDF or slide")
    job = Job(
        path=path,
        context=context.checked(),
        out_dir=out_dir,
        options=options,
        digest=source_digest(path, kind),
        instance_number=instance_number,
        warnings=notes,
        progress=progress,
    )
    if kind == PHOTO:
        from vna.convert.photo import convert_photo

        return convert_photo(job)
    if kind == VIDEO:
        from vna.convert.video import convert_video

        return convert_video(job)
    if kind == AUDIO:
        from vna.convert.audio import convert_audio

        return convert_audio(job)
    if kind == PDF:
        from vna.convert.pdf import convert_pdf

        return convert_pdf(job)
    if kind == WSI:
        from vna.convert.wsi import convert_slide

        return convert_slide(job)
    raise UnsupportedMedia(f"unknown kind {kind!r}")


__all__ = [
    "KINDS",
    "Context",
    "ConversionError",
    "Manifest",
    "Options",
    "classify",
    "convert_file",
    "load_manifest",
    "without_slide_companions",
]
