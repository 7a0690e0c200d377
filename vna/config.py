"""Settings: one frozen object built from a TOML file and ``VNA_*`` environment variables.

The TOML file is the path in ``VNA_CONFIG`` or ``./vna.toml`` when present; its keys are the
field names below (``dimse_port = 11112``). Each field is also read from ``VNA_<NAME>``
(``VNA_DIMSE_PORT``), and the environment wins. Nothing here is module-level state: callers
build a Settings once and pass it down.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import quote

from vna.errors import ConfigError

DUPLICATE_POLICIES = ("reject", "keep-both-versions", "overwrite")
STUDY_CONFLICT_POLICIES = ("flag", "reject")
BURNED_IN_POLICIES = ("reject", "clean")


def _doc(text: str, default: Any = MISSING, factory: Any = MISSING) -> Any:
    """A dataclass field carrying its README documentation."""
    if factory is not MISSING:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True)
class Settings:
    """Every setting of the archive. The README's settings table is generated from and tested
    against these fields, so a new field needs a docstring line (``doc``) here."""

    data_dir: Path = _doc("Folder holding the embedded index and object store.", Path("vna-data"))
    index_url: str = _doc(
        "SQLAlchemy URL of the index: `sqlite:///PATH` or `postgresql+psycopg://USER@HOST/DB`. "
        "Empty means `sqlite:///DATA_DIR/index.sqlite3`.",
        "",
    )
    store_url: str = _doc(
        "Object store: `file:///PATH` or "
        "`s3://BUCKET?endpoint=http://HOST:PORT&access_key=…&secret_key=…&region=…`. "
        "Empty means `file://DATA_DIR/objects`.",
        "",
    )
    s3_access_key: str = _doc("S3 access key when not given in `store_url`.", "")
    s3_secret_key: str = _doc("S3 secret key when not given in `store_url`.", "")
    ae_title: str = _doc("The archive's own AE title.", "VNA")
    bind_address: str = _doc(
        "Address the DIMSE and HTTP listeners bind to; `0.0.0.0` serves the network.", "127.0.0.1"
    )
    dimse_port: int = _doc("DIMSE (DICOM network) port.", 11112)
    http_port: int = _doc("HTTP port; DICOMweb is served under `/dicom-web`.", 8042)
    duplicate_policy: str = _doc(
        "What a second object with a known SOP Instance UID and different bytes does: "
        "`reject`, `keep-both-versions` (the new one becomes current, the old one is kept) or "
        "`overwrite` (the old one is deleted and the deletion audited).",
        "keep-both-versions",
    )
    study_conflict_policy: str = _doc(
        "A Study Instance UID arriving under another patient than the one it is indexed under: "
        "`flag` (store, warn and record a conflict) or `reject`.",
        "flag",
    )
    spool_dir: Path | None = _doc(
        "Where incoming objects are spooled before they are stored (C-STORE into a filesystem "
        "store skips it: see README); default DATA_DIR/spool.",
        None,
    )
    spool_direct_io: bool = _doc(
        "Write received objects past their first 64 KiB with direct I/O (bypassing the page "
        "cache) where the spool's file system allows it; `false` writes through the cache.",
        True,
    )
    import_workers: int = _doc("Parallel readers used by `vna import`.", 4)
    max_query_results: int = _doc(
        "Largest number of matches one C-FIND or QIDO-RS query returns (0 = unlimited).", 10000
    )
    log_level: str = _doc("Logging level: DEBUG, INFO, WARNING, ERROR.", "INFO")
    # -- de-identification ------------------------------------------------------------------
    deid_keystore_url: str = _doc(
        "SQLAlchemy URL of the pseudonymisation key store (kept apart from the index). "
        "Empty means `sqlite:///DATA_DIR/keys/keystore.sqlite3`.",
        "",
    )
    deid_key_file: Path | None = _doc(
        "File holding the key that encrypts the key store; used when the variable named by "
        "`deid_key_env` is unset. Default DATA_DIR/keys/deid.key, created on first use.",
        None,
    )
    deid_key_env: str = _doc(
        "Name of the environment variable holding the key store's key (wins over the file).",
        "VNA_DEID_KEY",
    )
    deid_pseudonym_pattern: str = _doc(
        "Pattern of pseudonyms: `{project}`, `{seq}` (e.g. `{seq:06d}`) and `{hash}`.",
        "{project}-{seq:06d}",
    )
    deid_max_date_shift_days: int = _doc(
        "Largest per-patient date shift (days back) of the modified-dates option.", 1825
    )
    deid_burned_in_policy: str = _doc(
        "Objects with burned-in annotation (or of a kind known to carry it): `reject`, or "
        "`clean` the regions configured in `[deid_pixel_regions]` (rejected when none fits).",
        "reject",
    )
    deid_default_project: str = _doc(
        "Project of `vna deid` when `--project` is not given (keys UIDs and pseudonyms).",
        "default",
    )
    deid_reidentify_admins: str = _doc(
        "Comma-separated user names allowed to run `vna reidentify`; empty allows nobody.", ""
    )
    # -- DIMSE ----------------------------------------------------------------------------
    dimse_allowed_aes: str = _doc(
        "Calling AE titles allowed to associate: empty accepts any (open); otherwise a "
        "comma-separated list of `AET` or `AET@HOST` (then only from that address). Others "
        "are rejected with A-ASSOCIATE-RJ reason 3 (calling AE title not recognised).",
        "",
    )
    dimse_check_called_ae: bool = _doc(
        "Reject an association whose called AE title is not `ae_title` (A-ASSOCIATE-RJ reason 7).",
        False,
    )
    dimse_max_pdu: int = _doc(
        "Largest PDU the DIMSE listener receives, in bytes (0 = no limit).", 1048576
    )
    dimse_max_associations: int = _doc(
        "Simultaneous incoming associations; one more is rejected (A-ASSOCIATE-RJ transient, "
        "local limit exceeded).",
        64,
    )
    dimse_timeout: int = _doc(
        "Seconds a silent DIMSE peer is waited for before its association is aborted.", 60
    )
    dimse_processes: int = _doc(
        "DIMSE listener processes (each new association goes to the one with the fewest open; "
        "`dimse_max_associations` applies to each): 0 means two per CPU core, at most 8.",
        0,
    )
    dimse_destinations: str = _doc(
        "C-MOVE destinations and storage commitment peers known from the settings: "
        "comma-separated `AET@HOST:PORT`; `vna ae add` keeps more in the index.",
        "",
    )
    # -- DICOMweb -------------------------------------------------------------------------
    dicomweb_cors_origins: str = _doc(
        "Origins whose browsers may call DICOMweb (CORS): `*` for any, a comma-separated list "
        "of origins (`https://viewer.example.org`), or empty to send no CORS headers.",
        "*",
    )
    dicomweb_workers: int = _doc(
        "Threads the DICOMweb server runs index and store work on (the event loop never "
        "blocks on them).",
        8,
    )
    dicomweb_processes: int = _doc(
        "DICOMweb server processes (each new connection goes to the one with the fewest "
        "open): 0 means two per CPU core, at most 8.",
        0,
    )
    dicomweb_base_url: str = _doc(
        "Public URL of the DICOMweb service (`https://pacs.example.org/dicom-web`) used in "
        "RetrieveURL and BulkDataURI values behind a proxy; empty derives it from each request.",
        "",
    )
    dicomweb_max_upload: int = _doc(
        "Largest STOW-RS request body in bytes (0 = no limit); a larger one gets 413.", 0
    )
    extra: Mapping[str, Any] = _doc(
        "Further tables of the TOML file, kept for the front ends (`[dimse]`, `[dicomweb]`…).",
        factory=dict,
    )

    # -- derived values -------------------------------------------------------------------
    @property
    def effective_index_url(self) -> str:
        """The index URL, defaulting to SQLite inside the data folder."""
        if self.index_url:
            return self.index_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    @property
    def effective_store_url(self) -> str:
        """The store URL, defaulting to a folder inside the data folder."""
        if self.store_url:
            return self.store_url
        return "file://" + quote(str((self.data_dir / "objects").resolve()))

    @property
    def effective_keystore_url(self) -> str:
        """The key store URL, defaulting to SQLite in its own folder of the data folder."""
        if self.deid_keystore_url:
            return self.deid_keystore_url
        return f"sqlite:///{(self.data_dir / 'keys' / 'keystore.sqlite3').resolve()}"

    @property
    def effective_deid_key_file(self) -> Path:
        """The key file (explicit, or the default one in the data folder)."""
        return self.deid_key_file or self.data_dir / "keys" / "deid.key"

    @property
    def effective_http_processes(self) -> int:
        """Number of DICOMweb server processes (``dicomweb_processes``, 0 = two per core, <= 8)."""
        return _processes(self.dicomweb_processes)

    @property
    def effective_dimse_processes(self) -> int:
        """Number of DIMSE listener processes (``dimse_processes``, 0 = two per core, <= 8)."""
        return _processes(self.dimse_processes)

    @property
    def effective_spool_dir(self) -> Path:
        """Folder for spooled uploads (on the data disk, so a move into the store is cheap)."""
        return self.spool_dir if self.spool_dir is not None else self.data_dir / "spool"

    @property
    def calling_ae_rules(self) -> dict[str, frozenset[str]]:
        """Allowed calling AE titles -> host addresses they must come from (empty = any);
        an empty map means every calling AE title is accepted."""
        rules: dict[str, set[str]] = {}
        for entry in _list(self.dimse_allowed_aes):
            aet, _, host = entry.partition("@")
            hosts = rules.setdefault(check_ae_title(aet), set())
            if host.strip():
                hosts.add(host.strip())
        return {aet: frozenset(hosts) for aet, hosts in rules.items()}

    @property
    def dimse_destination_map(self) -> dict[str, tuple[str, int]]:
        """C-MOVE destinations from ``dimse_destinations``: AE title -> (host, port)."""
        out: dict[str, tuple[str, int]] = {}
        for entry in _list(self.dimse_destinations):
            aet, at, address = entry.partition("@")
            host, colon, port = address.rpartition(":")
            if not (at and colon and host and port.isdigit() and 0 < int(port) < 65536):
                raise ConfigError(f"dimse_destinations: {entry!r} is not AET@HOST:PORT")
            out[check_ae_title(aet)] = (host.strip("[]"), int(port))
        return out

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated like the original)."""
        new = replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        """Raise ConfigError for values no part of the archive could work with."""
        if self.duplicate_policy not in DUPLICATE_POLICIES:
            raise ConfigError(
                f"duplicate_policy must be one of {', '.join(DUPLICATE_POLICIES)}, "
                f"not {self.duplicate_policy!r}"
            )
        if self.study_conflict_policy not in STUDY_CONFLICT_POLICIES:
            raise ConfigError(
                f"study_conflict_policy must be one of {', '.join(STUDY_CONFLICT_POLICIES)}, "
                f"not {self.study_conflict_policy!r}"
            )
        if not 1 <= len(self.ae_title.strip()) <= 16:
            raise ConfigError(f"ae_title must be 1 to 16 characters, not {self.ae_title!r}")
        for name in ("dimse_port", "http_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{name} must be a TCP port (0-65535), not {port}")
        if self.import_workers < 1:
            raise ConfigError("import_workers must be at least 1")
        if self.deid_burned_in_policy not in BURNED_IN_POLICIES:
            raise ConfigError(
                f"deid_burned_in_policy must be one of {', '.join(BURNED_IN_POLICIES)}, "
                f"not {self.deid_burned_in_policy!r}"
            )
        if self.deid_max_date_shift_days < 1:
            raise ConfigError("deid_max_date_shift_days must be at least 1")
        if self.max_query_results < 0:
            raise ConfigError("max_query_results must be 0 (unlimited) or more")
        if self.dimse_max_pdu != 0 and not 4096 <= self.dimse_max_pdu <= 0xFFFFFFFF:
            raise ConfigError("dimse_max_pdu must be 0 (no limit) or 4096 bytes or more")
        if self.dimse_max_associations < 1:
            raise ConfigError("dimse_max_associations must be at least 1")
        if self.dimse_timeout < 1:
            raise ConfigError("dimse_timeout must be at least 1 second")
        self.calling_ae_rules  # noqa: B018  (raises ConfigError when malformed)
        self.dimse_destination_map  # noqa: B018


#: Server processes per CPU core when the setting is 0, and their most.
PROCESSES_PER_CORE = 2
MAX_DEFAULT_PROCESSES = 8


def _processes(configured: int) -> int:
    """A process count: as configured, or two per CPU core (at most 8) for 0.

    Two per core, because the threads of one Python process share one interpreter lock:
    two associations (or uploads) served by one process wait for each other's Python work
    even while a core is free, and handing that scheduling to the kernel instead made four
    parallel small C-STOREs about 10% faster on a 2-core machine.
    """
    if configured > 0:
        return configured
    cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_PROCESSES, PROCESSES_PER_CORE * cores))


def _list(text: str) -> list[str]:
    """Items of a comma-separated setting, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def check_ae_title(text: str) -> str:
    """An AE title without its insignificant spaces (PS3.5 6.2, VR AE).

    Raises:
        ConfigError: empty, longer than 16 characters, or holding a backslash or a control
            character.
    """
    title = text.strip()
    if not 1 <= len(title) <= 16 or "\\" in title or not title.isprintable():
        raise ConfigError(f"{text!r} is not an AE title (1 to 16 characters, no backslash)")
    if not title.isascii():
        raise ConfigError(f"{text!r} is not an AE title (ASCII characters only)")
    return title


def setting_docs() -> dict[str, tuple[str, str]]:
    """Map of environment variable name to (default as text, documentation)."""
    out: dict[str, tuple[str, str]] = {}
    for f in fields(Settings):
        if f.name == "extra":
            continue
        default = f.default if f.default is not MISSING else ""
        out[env_name(f.name)] = ("" if default is None else str(default), f.metadata["doc"])
    return out


def env_name(field_name: str) -> str:
    """``dimse_port`` -> ``VNA_DIMSE_PORT``."""
    return "VNA_" + field_name.upper()


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    """Turn a TOML value or an environment string into the field's type."""
    text = str(kind)
    try:
        if kind is int or text == "int":
            if isinstance(raw, bool):
                raise ValueError("a boolean is not a number")
            return int(raw)
        if kind is bool or text == "bool":
            if isinstance(raw, bool):
                return raw
            value = str(raw).strip().lower()
            if value in ("1", "true", "yes", "on"):
                return True
            if value in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if "Path" in text:
            if raw is None or raw == "":
                return None if "None" in text else Path(".")
            return Path(str(raw)).expanduser()
        if "Mapping" in text or "dict" in text:
            if isinstance(raw, Mapping):
                return dict(raw)
            return dict(json.loads(raw))
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: {exc}") from exc


def load_settings(
    environ: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    **overrides: Any,
) -> Settings:
    """Build Settings from the TOML file, then the environment, then explicit overrides.

    Raises:
        ConfigError: unreadable TOML, unknown keys, or values of the wrong type.
    """
    env = os.environ if environ is None else environ
    path = config_path
    if path is None and env.get("VNA_CONFIG"):
        path = Path(env["VNA_CONFIG"])
        if not path.is_file():
            raise ConfigError(f"VNA_CONFIG names {path}, which is not a readable file")
    if path is None and Path("vna.toml").is_file():
        path = Path("vna.toml")
    hints = get_type_hints(Settings)
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
        for key, raw in data.items():
            if key in known and key != "extra":
                values[key] = _coerce(key, hints[key], raw)
            elif isinstance(raw, dict):
                extra[key] = raw
            else:
                raise ConfigError(f"{path}: unknown setting {key!r}")
    for f in fields(Settings):
        if f.name == "extra":
            continue
        name = env_name(f.name)
        if name in env:
            values[f.name] = _coerce(name, hints[f.name], env[name])
    values.update(overrides)
    if extra:
        values["extra"] = {**extra, **dict(values.get("extra", {}))}
    settings = Settings(**values)
    settings.validate()
    return settings
