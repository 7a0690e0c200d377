"""Where the archive keeps object bytes: a local directory or an S3 bucket.

``open_store`` turns the configured URL into a store:

* ``file:///absolute/path`` (percent-encoded like any URL);
* ``s3://BUCKET?endpoint=http://HOST:PORT&access_key=...&secret_key=...&region=...&prefix=...``
  where credentials in the query win over those passed as arguments (so a secret can come
  from the environment instead of the configuration file).

This package imports nothing of the archive's, so it can be tested and reused on its own.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from storage.base import (
    CHUNK_SIZE,
    KEY_PATTERN,
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    StoreError,
    StoreFull,
    check_key,
)
from storage.filesystem import FilesystemStore
from storage.s3 import S3Settings, S3Store

__all__ = [
    "CHUNK_SIZE",
    "KEY_PATTERN",
    "FilesystemStore",
    "InvalidKey",
    "ObjectNotFound",
    "ObjectStore",
    "S3Settings",
    "S3Store",
    "StoreError",
    "StoreFull",
    "check_key",
    "open_store",
    "s3_settings_from_url",
]

_S3_PARAMETERS = frozenset({"endpoint", "access_key", "secret_key", "region", "prefix"})


def open_store(url: str, *, access_key: str = "", secret_key: str = "") -> ObjectStore:
    """The store a URL names (see the module docstring).

    Raises:
        ValueError: unknown scheme, malformed URL or missing S3 settings. Messages never
            repeat the URL, which may hold a secret.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "file":
        return FilesystemStore(_filesystem_root(url))
    if scheme == "s3":
        settings = s3_settings_from_url(url, access_key=access_key, secret_key=secret_key)
        return S3Store(
            settings.endpoint,
            settings.bucket,
            settings.access_key,
            settings.secret_key,
            region=settings.region,
            prefix=settings.prefix,
        )
    shown = f"{scheme!r}" if scheme else "none"
    raise ValueError(f"unsupported object store URL scheme {shown}: use file:// or s3://")


def _filesystem_root(url: str) -> Path:
    """The directory of a ``file://`` URL; only local, absolute paths make sense."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file store URL must be local (file:///path), not on {parts.netloc!r}")
    if parts.query or parts.fragment:
        raise ValueError("file store URL takes no query or fragment")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ValueError("file store URL needs an absolute path: file:///absolute/path")
    return Path(path)


def s3_settings_from_url(url: str, *, access_key: str = "", secret_key: str = "") -> S3Settings:
    """Parse an ``s3://`` URL; query credentials win over the keyword arguments."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise ValueError("not an s3:// URL")
    if parts.username or parts.password:
        raise ValueError(
            "put S3 credentials in the query (access_key=, secret_key=), not user:pass@"
        )
    bucket = parts.netloc
    if not bucket:
        raise ValueError("S3 store URL needs a bucket: s3://BUCKET?endpoint=...")
    if parts.path not in ("", "/"):
        raise ValueError("S3 store URL takes the key prefix as ?prefix=..., not as a path")
    query: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _S3_PARAMETERS:
            raise ValueError(
                f"unknown S3 store URL parameter {name!r} "
                f"(known: {', '.join(sorted(_S3_PARAMETERS))})"
            )
        if name in query:
            raise ValueError(f"S3 store URL parameter {name!r} given twice")
        query[name] = value
    endpoint = query.get("endpoint", "")
    if not endpoint:
        raise ValueError(
            f"S3 store URL for bucket {bucket!r} needs endpoint=http(s)://HOST:PORT in its query"
        )
    key_id = query.get("access_key") or access_key
    secret = query.get("secret_key") or secret_key
    missing = [
        name for name, value in (("access_key", key_id), ("secret_key", secret)) if not value
    ]
    if missing:
        raise ValueError(
            f"S3 store for bucket {bucket!r} has no {' or '.join(missing)}: give them in the URL "
            "query or as the access_key/secret_key settings"
        )
    return S3Settings(
        endpoint=endpoint,
        bucket=bucket,
        access_key=key_id,
        secret_key=secret,
        region=query.get("region") or None,
        prefix=query.get("prefix", ""),
    )
