"""The Typer application and the helpers every command module shares."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from vna.archive import Archive
from vna.config import Settings, load_settings
from vna.errors import ConfigError, VnaError

app = typer.Typer(
    name="vna",
    help="Vendor-neutral archive: serve, import, find, export, verify and administer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error naming what went wrong and exit."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def settings_from_cli(data_dir: Path | None = None) -> Settings:
    """Settings from file + environment, with a --data-dir override when given."""
    try:
        overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir is not None else {}
        settings = load_settings(**overrides)
    except ConfigError as exc:
        fail(str(exc), 2)
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    quiet_libraries()
    return settings


def quiet_libraries() -> None:
    """Keep library chatter (migrations, pydicom's reading validation) out of the CLI output;
    what matters about an object is recorded in its warnings."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("pikepdf").setLevel(logging.WARNING)
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\..*")


@contextmanager
def open_archive(data_dir: Path | None = None) -> Iterator[Archive]:
    """The archive of the current settings, closed afterwards; errors become CLI messages."""
    settings = settings_from_cli(data_dir)
    try:
        archive = Archive.open(settings)
    except VnaError as exc:
        fail(f"cannot open the archive: {exc}", 2)
    try:
        yield archive
    finally:
        archive.close()


DataDir = typer.Option(
    None, "--data-dir", help="Data folder (overrides VNA_DATA_DIR for this command)."
)
