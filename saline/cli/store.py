"""``saline store migrate | stats``: the master's store, migrated before the masters start,
and measured (rows and bytes per table)."""

from typing import Any

import click

from saline.cli.common import OUT_CHOICE, dump, obj


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


def human_bytes(size: int | None) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 GiB``; ``-`` when unknown."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@store.command()
@click.option("--out", type=OUT_CHOICE, default="human")
@click.pass_context
def stats(ctx: click.Context, out: str) -> None:
    """Rows and bytes (indexes included) per table of the master's store, and its total.

    Counting reads every row: a few seconds on a store of millions of events. SQLite
    without the dbstat table shows the total only.
    """
    from master.config import load_master_config
    from master.store.open import open_store

    config, _ = load_master_config(obj(ctx).get("config_path"))
    if config.store == "sqlite" and not config.store_path.exists():
        raise click.ClickException(f"no store at {config.store_path} (the master never ran)")
    opened = open_store(config)
    try:
        measured, version = opened.stats(), opened.schema_version()
    finally:
        opened.close()
    if out != "human":
        doc: dict[str, Any] = {
            "store": measured.backend,
            "schema_version": version,
            "total_bytes": measured.total_bytes,
            "tables": {t.name: {"rows": t.rows, "bytes": t.bytes} for t in measured.tables},
        }
        click.echo(dump(doc, out))
        return
    click.echo(f"{measured.backend}: schema version {version}, {human_bytes(measured.total_bytes)}")
    click.echo(f"{'TABLE':<14} {'ROWS':>12} {'SIZE':>10}")
    for table in measured.tables:
        click.echo(f"{table.name:<14} {table.rows:>12,} {human_bytes(table.bytes):>10}")
