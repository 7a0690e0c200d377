"""Accept header parsing (RFC 9110 12.5.1) and the media-type choice of PS3.18 8.7.

A media range keeps its parameters (``type``, ``transfer-syntax``), which DICOMweb uses to
ask for a multipart payload type and a transfer syntax. Ranges are ordered by quality,
ties kept in the order the client wrote them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vna.errors import BadRequest


@dataclass(frozen=True)
class MediaRange:
    """One media range of an Accept header, lower-cased type and parameter names."""

    type: str
    params: dict[str, str] = field(default_factory=dict)
    quality: float = 1.0

    @property
    def main(self) -> str:
        return self.type.split("/", 1)[0]

    def matches(self, media_type: str) -> bool:
        """Whether this range admits ``media_type`` (``*/*`` and ``image/*`` included)."""
        if self.type in ("*/*", "*"):
            return True
        if self.type.endswith("/*"):
            return media_type.split("/", 1)[0] == self.main
        return self.type == media_type.lower()


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def parse_media_type(text: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=b; c="d"`` → (type, params) with quotes removed.

    Raises:
        BadRequest: not a media type.
    """
    pieces = _split(text, ";")
    media_type = pieces[0].strip().lower()
    if "/" not in media_type and media_type != "*":
        raise BadRequest(f"not a media type: {text.strip()!r}")
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        if not piece.strip():
            continue
        name, eq, value = piece.partition("=")
        if not eq:
            raise BadRequest(f"malformed media type parameter {piece.strip()!r} in {text!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params[name.strip().lower()] = value
    return media_type, params


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, best first; ``*/*`` when absent or empty.

    Raises:
        BadRequest: a malformed range or quality value.
    """
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges: list[tuple[float, int, MediaRange]] = []
    for index, item in enumerate(_split(header, ",")):
        if not item.strip():
            continue
        media_type, params = parse_media_type(item)
        quality = 1.0
        if "q" in params:
            try:
                quality = float(params.pop("q"))
            except ValueError as exc:
                raise BadRequest(f"bad quality value in Accept: {item.strip()!r}") from exc
            if not 0.0 <= quality <= 1.0:
                raise BadRequest(f"quality value out of range in Accept: {item.strip()!r}")
        if quality > 0:
            ranges.append((-quality, index, MediaRange(media_type, params, quality)))
    return [r for _q, _i, r in sorted(ranges, key=lambda t: (t[0], t[1]))]


def accepted(request_accept: list[MediaRange], offered: list[str]) -> str | None:
    """The first of ``offered`` the client accepts, by the client's order of preference."""
    for media_range in request_accept:
        for media_type in offered:
            if media_range.matches(media_type):
                return media_type
    return None
