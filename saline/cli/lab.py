"""``saline lab up | status | down | fault | demo``: saline on loopback, for trying it.

``up -n N`` starts a master and N minions; ``up --masters 3 -n N`` three masters sharing a
real PostgreSQL store and a leader elected in a real etcd cluster (``lab fault master-kill
m1`` and friends act on them); ``up --chef-ha`` starts the Chef HA lab (three backends with
real PostgreSQL and etcd, two frontends) with the formula's beacons and rules.
"""

import json
import sys
from pathlib import Path

import click

from saline.cli.common import dump
from saline.lab.lab import DEFAULT_LAB_DIR, Lab, is_masters_lab

_DIR = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="lab directory (default: $TMPDIR/saline-lab)",
)


def _dir(directory: Path | None) -> Path:
    return (directory or DEFAULT_LAB_DIR).absolute()


def _is_chef(directory: Path) -> bool:
    return (directory / "chefha.json").exists()


@click.group()
def lab() -> None:
    """A local lab: keys pre-accepted, half the minions role=backend, half role=frontend."""


def _is_masters(directory: Path) -> bool:
    return is_masters_lab(directory)


@lab.command()
@click.option("-n", "--minions", "count", type=click.IntRange(1, 1000), default=5)
@click.option(
    "--masters",
    type=click.IntRange(1, 9),
    default=1,
    help="several masters sharing a PostgreSQL store, leader elected in etcd (both started)",
)
@click.option("--chef-ha", is_flag=True, help="the Chef HA cluster: be1..be3, fe1, fe2")
@click.option("--timeout", type=float, default=60.0, help="seconds to wait for all minions")
@_DIR
def up(count: int, masters: int, chef_ha: bool, timeout: float, directory: Path | None) -> None:
    """Start a master (or --masters M) and N minions, or the Chef HA lab; wait until all
    are online."""
    path = _dir(directory)
    if masters > 1 and not chef_ha:
        from saline.lab.masters import MastersLab

        timings = MastersLab(path).up(count, masters, timeout=timeout)
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        click.echo(f"lab up in {path}: {masters} masters, {count} minions online: {phases}")
        click.echo(f"try:  saline lab status --dir {path}")
        click.echo(f"      saline -c {path / 'master.yaml'} run '*' test.ping")
        return
    if chef_ha:
        from saline.lab.chefha.cluster import ChefLab

        timings = ChefLab(path, masters=masters).up(timeout=timeout)
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        several = f" ({masters} masters)" if masters > 1 else ""
        click.echo(f"Chef HA lab up in {path}{several}: {phases}")
        click.echo(f"try:  saline lab status --dir {path}")
        click.echo(f"      saline -c {path / 'master.yaml'} run '*' test.ping")
        return
    the_lab = Lab(path)
    seconds = the_lab.up(count, timeout=timeout)
    click.echo(f"lab up in {the_lab.directory}: {count} minions online in {seconds:.2f}s")
    click.echo(f"try:  saline -c {the_lab.master_config} run '*' test.ping")


@lab.command()
@click.option("--out", type=click.Choice(["human", "json", "yaml"]), default="human")
@_DIR
def status(out: str, directory: Path | None) -> None:
    """What the lab started, whether it runs, and which minions the master sees online."""
    path = _dir(directory)
    if _is_chef(path):
        from saline.lab.chefha.cluster import ChefLab

        report = ChefLab(path).status()
    elif _is_masters(path):
        from saline.lab.masters import MastersLab

        report = MastersLab(path).status()
    else:
        report = Lab(path).status()
    if out != "human":
        click.echo(dump(report, out))
        return
    master = report["master"]
    state = "running" if master["running"] else "stopped"
    click.echo(f"lab {report['dir']} (port {report['port']}): master pid {master['pid']} {state}")
    if report.get("metrics"):
        click.echo(f"  metrics  {report['metrics']}")
    for info in report.get("masters", []):
        notes = [
            "leader" if info["leader"] else "",
            "paused" if info.get("paused") else "",
            "etcd cut" if info["etcd_proxy"]["cut"] else "",
        ]
        state = "running" if info["running"] else "stopped"
        extra = " ".join(n for n in notes if n)
        click.echo(
            f"  {info['name']:8} port {info['port']:<6} pid {info['pid']} {state} {extra}".rstrip()
        )
        click.echo(f"           {info['config']}")
    if "store" in report:
        store = report["store"]
        state = f"pid {store['pid']}" if store["running"] else "stopped"
        click.echo(f"  store    PostgreSQL 127.0.0.1:{store['port']} {state} ({store['dsn_file']})")
        members = " ".join(
            f"{n}={'up' if m['running'] else 'down'}" for n, m in report["leader_etcd"].items()
        )
        click.echo(f"  leader etcd  {members}")
    for minion_id, info in report["minions"].items():
        flags = "online" if info["online"] else ("running" if info["running"] else "stopped")
        click.echo(f"  {minion_id:8} {info['role']:9} pid {info['pid']} {flags}")
        node = report.get("nodes", {}).get(minion_id)
        for name, svc in (node or {}).get("services", {}).items():
            where = f"{node['address']}:{svc['port']}"
            pid = f"pid {svc['pid']}" if svc["running"] else "down"
            click.echo(f"      {name:14} {where:16} {pid:10} {svc['data_dir']}")


@lab.command()
@_DIR
def down(directory: Path | None) -> None:
    """Stop exactly the processes `lab up` started (checked by pid and command line)."""
    path = _dir(directory)
    if _is_chef(path):
        from saline.lab.chefha.cluster import ChefLab

        stopped = ChefLab(path).down()
        click.echo(f"stopped {len(stopped)} minion/master process(es) and the lab's services")
        return
    if _is_masters(path):
        from saline.lab.masters import MastersLab

        stopped = MastersLab(path).down()
        click.echo(f"stopped {len(stopped)} process(es) and the store's PostgreSQL")
        return
    stopped = Lab(path).down()
    click.echo(f"stopped {len(stopped)} process(es): {', '.join(stopped) or '-'}")


@lab.command()
@click.argument("kind")
@click.argument("node", required=False)
@_DIR
def fault(kind: str, node: str | None, directory: Path | None) -> None:
    """Inject fault KIND on NODE of the Chef HA lab, or on master NODE (m1..) of a lab of
    several masters (`saline lab fault list --dir DIR`: the kinds)."""
    from saline.lab.chefha import faults

    path = _dir(directory)
    chef, several = _is_chef(path), _is_masters(path)
    if several:
        from saline.lab.masters import FAULTS, MastersLab

        if kind == "list":
            click.echo("\n".join([*FAULTS, *(faults.FAULTS if chef else [])]))
            return
        if kind in FAULTS or not chef:
            if node is None:
                raise click.UsageError("which master? (e.g. saline lab fault master-kill m1)")
            click.echo(MastersLab(path).fault(kind, node))
            return
    if kind == "list":
        click.echo("\n".join(faults.FAULTS))
        return
    if node is None:
        raise click.UsageError("which NODE? (e.g. saline lab fault pg-stop be2)")
    click.echo(faults.inject(path, kind, node))


@lab.command()
@click.option("--out", type=click.Choice(["human", "json"]), default="human")
@click.option("--keep", is_flag=True, help="leave the lab running afterwards")
@click.option(
    "--masters",
    type=click.IntRange(1, 9),
    default=1,
    help="run the cluster's master as M masters; adds a fault whose heal loses its leader",
)
@_DIR
def demo(out: str, keep: bool, masters: int, directory: Path | None) -> None:
    """Bring up the Chef HA lab, inject the headline faults one by one, watch them heal."""
    from saline.lab.chefha import demo as scenarios
    from saline.lab.chefha.cluster import ChefLab
    from saline.lab.masters import LeaderKiller

    path = _dir(directory)
    chef = ChefLab(path, masters=masters)
    if not (_is_chef(path) and any(chef.lab.load().running().values())):
        timings = chef.up()
        click.echo(f"Chef HA lab up in {timings['total']:.1f}s ({path})", err=out == "json")
    say = (lambda line: click.echo(line, err=True)) if out == "json" else click.echo
    outcomes = []
    several = chef.several()
    try:
        playlist = list(scenarios.SCENARIOS)
        sock = chef.lab.client().path
        killer = None
        if several is not None:  # follow a standby: it outlives the leader the demo kills
            playlist.append(scenarios.LEADER_KILLED)
            killer = LeaderKiller(several)
            sock = several.client(killer.standby()).path
        feed = scenarios.EventFeed(sock)
        recorder = scenarios.Recorder(sock, path / "recordings")
        for scenario in playlist:
            say(f"{scenario.fault} on {scenario.node}")
            kill = killer.kill if killer is not None else None
            outcomes.append(scenarios.run_scenario(path, feed, scenario, say, kill, recorder))
            if killer is not None:
                killer.restart()
    finally:
        if not keep:
            chef.down()
    if out == "json":
        click.echo(json.dumps([o.row() for o in outcomes], indent=2))
    else:
        click.echo("")
        click.echo(scenarios.table(outcomes))
    if any(o.healed is None for o in outcomes):
        sys.exit(1)
