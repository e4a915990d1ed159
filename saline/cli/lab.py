"""``saline lab up | status | down``: a master and minions on loopback, for trying saline."""

from pathlib import Path

import click

from saline.cli.common import dump
from saline.lab.lab import DEFAULT_LAB_DIR, Lab

_DIR = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="lab directory (default: $TMPDIR/saline-lab)",
)


def _lab(directory: Path | None) -> Lab:
    return Lab((directory or DEFAULT_LAB_DIR).absolute())


@click.group()
def lab() -> None:
    """A local lab: keys pre-accepted, half the minions role=backend, half role=frontend."""


@lab.command()
@click.option("-n", "--minions", "count", type=click.IntRange(1, 1000), default=5)
@click.option("--timeout", type=float, default=60.0, help="seconds to wait for all minions")
@_DIR
def up(count: int, timeout: float, directory: Path | None) -> None:
    """Start a master and N minions in the background and wait until all are online."""
    the_lab = _lab(directory)
    seconds = the_lab.up(count, timeout=timeout)
    click.echo(f"lab up in {the_lab.directory}: {count} minions online in {seconds:.2f}s")
    click.echo(f"try:  saline -c {the_lab.master_config} run '*' test.ping")


@lab.command()
@click.option("--out", type=click.Choice(["human", "json", "yaml"]), default="human")
@_DIR
def status(out: str, directory: Path | None) -> None:
    """What the lab started, whether it runs, and which minions the master sees online."""
    report = _lab(directory).status()
    if out != "human":
        click.echo(dump(report, out))
        return
    master = report["master"]
    state = "running" if master["running"] else "stopped"
    click.echo(f"lab {report['dir']} (port {report['port']}): master pid {master['pid']} {state}")
    for minion_id, info in report["minions"].items():
        flags = "online" if info["online"] else ("running" if info["running"] else "stopped")
        click.echo(f"  {minion_id:8} {info['role']:9} pid {info['pid']} {flags}")


@lab.command()
@_DIR
def down(directory: Path | None) -> None:
    """Stop exactly the processes `lab up` started (checked by pid and command line)."""
    stopped = _lab(directory).down()
    click.echo(f"stopped {len(stopped)} process(es): {', '.join(stopped) or '-'}")
