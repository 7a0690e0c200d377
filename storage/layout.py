"""How keys become file paths and object names, shared by the back ends.

``<key[0:2]>/<key[2:4]>/<key>`` keeps directories (and S3 listings) small. Both back ends use
the same layout so a bucket can be synced to a directory and served from there unchanged.
"""

from __future__ import annotations

from storage.base import KEY_PATTERN, InvalidKey, check_key

__all__ = ["is_valid_key", "shard_parts", "sharded_name", "valid_key"]

# Short keys are padded so that no path component is empty; the file name is always the
# whole key, so which shard a padded key lands in does not matter.
_SHARD_PAD = "_"


def is_valid_key(key: str) -> bool:
    """Whether ``key`` follows KEY_PATTERN over its whole length.

    ``KEY_PATTERN.match`` alone accepts a trailing newline (``$`` matches before one), and a
    newline must never reach a file name or an object name.
    """
    return KEY_PATTERN.fullmatch(key) is not None


def valid_key(key: str) -> str:
    """Return the key unchanged, or raise InvalidKey (stricter than ``check_key``)."""
    check_key(key)
    if not is_valid_key(key):
        raise InvalidKey(f"invalid object key {key!r}")
    return key


def shard_parts(key: str) -> tuple[str, str]:
    """The two shard directory names for a (valid) key; short keys are padded with ``_``."""
    padded = key + _SHARD_PAD * 4
    return padded[0:2], padded[2:4]


def sharded_name(key: str) -> str:
    """``<key[0:2]>/<key[2:4]>/<key>`` for a valid key (InvalidKey otherwise)."""
    first, second = shard_parts(valid_key(key))
    return f"{first}/{second}/{key}"
