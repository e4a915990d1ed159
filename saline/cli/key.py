"""``saline key``: the master's key ring. Works on the files, with or without a running master."""

from pathlib import Path

import click

from saline.cli.common import dump, master_config
from saline.keys import (
    KeyRing,
    KeyState,
    check_id,
    fingerprint,
    generate_keypair,
    read_keypair,
    write_keypair,
)


def _ring(ctx: click.Context) -> KeyRing:
    return KeyRing(master_config(ctx).pki_dir)


@click.group()
def key() -> None:
    """Manage minion keys: unknown keys land in pending and can do nothing until accepted."""


@key.command("list")
@click.option("--out", type=click.Choice(["human", "json", "yaml"]), default="human")
@click.pass_context
def list_keys(ctx: click.Context, out: str) -> None:
    """List accepted, pending and rejected keys."""
    ring = _ring(ctx)
    table = {state.value: ring.ids(state) for state in KeyState}
    if out != "human":
        click.echo(dump(table, out))
        return
    for state in KeyState:
        click.echo(f"{state.value.capitalize()} keys:")
        for minion_id in table[state.value]:
            click.echo(f"  {minion_id}")


def _grain_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    grains: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r}: expected NAME=VALUE", param_hint="--grain")
        grains[name] = value
    return grains


@key.command()
@click.argument("minion_id", required=False)
@click.option("--all", "accept_all", is_flag=True, help="accept every pending key")
@click.option(
    "--grain",
    "grain_pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="a grain the master trusts for this minion (pillar uses only trusted grains)",
)
@click.pass_context
def accept(
    ctx: click.Context, minion_id: str | None, accept_all: bool, grain_pairs: tuple[str, ...]
) -> None:
    """Accept the key of MINION_ID (or every pending key with --all)."""
    ring = _ring(ctx)
    grains = _grain_pairs(grain_pairs)
    if accept_all:
        if grains:
            raise click.UsageError("--grain is for one MINION_ID, not --all")
        accepted = ring.accept_all()
        click.echo(f"accepted {len(accepted)} key(s): {', '.join(accepted) or '-'}")
        return
    if minion_id is None:
        raise click.UsageError("give a MINION_ID or --all")
    ring.accept(minion_id)
    if grains:
        ring.set_trusted_grains(minion_id, grains)
    trusted = "".join(f" {k}={v}" for k, v in sorted(ring.trusted_grains(minion_id).items()))
    click.echo(f"accepted {minion_id}" + (f" (trusted grains:{trusted})" if trusted else ""))


@key.command()
@click.argument("minion_id")
@click.pass_context
def reject(ctx: click.Context, minion_id: str) -> None:
    """Reject the key of MINION_ID: its handshakes are refused from now on."""
    _ring(ctx).reject(minion_id)
    click.echo(f"rejected {minion_id}")


@key.command()
@click.argument("minion_id")
@click.pass_context
def delete(ctx: click.Context, minion_id: str) -> None:
    """Forget the key of MINION_ID (it may submit a new one, which lands in pending)."""
    _ring(ctx).delete(minion_id)
    click.echo(f"deleted {minion_id}")


@key.command()
@click.argument("minion_id", required=False)
@click.pass_context
def finger(ctx: click.Context, minion_id: str | None) -> None:
    """Print fingerprints: the master's own (no MINION_ID, for master_finger) or a minion's."""
    config = master_config(ctx)
    if minion_id is None:
        pair = read_keypair(config.pki_dir, "master")
        click.echo(f"master: {fingerprint(pair.public)}")
        return
    ring = KeyRing(config.pki_dir)
    entries = [e for e in ring.entries() if e.id == minion_id]
    if not entries:
        raise click.ClickException(f"no key for minion {minion_id!r}")
    for entry in entries:
        click.echo(f"{entry.id} ({entry.state.value}): {fingerprint(entry.public)}")


@key.command()
@click.option("--id", "minion_id", required=True, help="minion id the keypair is for")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where to write minion.pub/minion.key (default: ./ID)",
)
@click.option("--no-accept", is_flag=True, help="only write the files; do not pre-accept")
@click.pass_context
def gen(ctx: click.Context, minion_id: str, directory: Path | None, no_accept: bool) -> None:
    """Generate a keypair for a minion and pre-accept it (copy the dir to the minion's pki_dir)."""
    check_id(minion_id)
    target = directory or Path(minion_id)
    pair = generate_keypair()
    write_keypair(target, "minion", pair)
    if not no_accept:
        _ring(ctx).add(minion_id, pair.public, KeyState.ACCEPTED)
    click.echo(f"wrote {target}/minion.pub and minion.key (0600): {fingerprint(pair.public)}")
