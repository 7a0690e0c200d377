"""`vna ae add|list|remove`: the DICOM peers C-MOVE may send to (kept in the index, so a
running server sees a change at once)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from vna.cli.base import DataDir, app, console, fail, open_archive
from vna.errors import BadRequest, NotFound
from vna.remote_aes import add_remote_ae, list_remote_aes, remove_remote_ae

ae_app = typer.Typer(
    help="Known DICOM peers (C-MOVE destinations, storage commitment requesters).",
    no_args_is_help=True,
)
app.add_typer(ae_app, name="ae")


@ae_app.command("add")
def add_command(
    ae_title: str = typer.Argument(..., help="The peer's AE title."),
    host: str = typer.Argument(..., help="Host name or address."),
    port: int = typer.Argument(..., help="TCP port."),
    description: str = typer.Option("", "--description", "-d", help="A note for admins."),
    data_dir: Path | None = DataDir,
) -> None:
    """Add a peer, or change the address of a known one."""
    with open_archive(data_dir) as archive:
        try:
            peer, created = add_remote_ae(archive, ae_title, host, port, description)
        except BadRequest as exc:
            fail(str(exc), 2)
    verb = "added" if created else "updated"
    console.print(f"{verb} {peer.ae_title} at {peer.host}:{peer.port}", highlight=False)


@ae_app.command("list")
def list_command(
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    data_dir: Path | None = DataDir,
) -> None:
    """List the known peers (from the index and from the settings)."""
    with open_archive(data_dir) as archive:
        peers = list_remote_aes(archive)
    if as_json:
        print(json.dumps([peer.__dict__ for peer in peers], indent=2))
        return
    if not peers:
        console.print("no remote AE known; add one with `vna ae add AET HOST PORT`")
        return
    table = Table("AE title", "host", "port", "from", "description")
    for peer in peers:
        table.add_row(peer.ae_title, peer.host, str(peer.port), peer.origin, peer.description)
    console.print(table)


@ae_app.command("remove")
def remove_command(
    ae_title: str = typer.Argument(..., help="The peer's AE title."),
    data_dir: Path | None = DataDir,
) -> None:
    """Remove a peer from the index."""
    with open_archive(data_dir) as archive:
        try:
            remove_remote_ae(archive, ae_title)
        except (BadRequest, NotFound) as exc:
            fail(str(exc))
    console.print(f"removed {ae_title.strip()}", highlight=False)
