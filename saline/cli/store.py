"""``saline store migrate``: create or migrate the master's store before the masters start."""

import click

from saline.cli.common import obj


@click.group()
def store() -> None:
    """The master's store (SQLite, or PostgreSQL shared by several masters)."""


@store.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create saline's tables, or migrate them to this version (refused when newer).

    Masters migrate on start too; run this first to upgrade a shared store once, on one
    host, before the masters are restarted.
    """
    from master.config import load_master_config
    from master.store.open import describe, open_store

    config, _ = load_master_config(obj(ctx).get("config_path"))
    opened = open_store(config)  # opening migrates (one master at a time)
    try:
        version = opened.schema_version()
    finally:
        opened.close()
    click.echo(f"{describe(config)}: schema version {version}")
