"""``saline master`` and ``saline minion``: run a daemon in the foreground."""

import click

from saline.cli.common import obj
from saline.logs import setup_logging


@click.command()
@click.pass_context
def master(ctx: click.Context) -> None:
    """Run the master in the foreground (config: -c, $SALINE_CONFIG, /etc/saline/master.yaml)."""
    from master.config import load_master_config
    from master.daemon import run_master

    config, path = load_master_config(obj(ctx).get("config_path"))
    setup_logging(obj(ctx).get("log_level") or config.log_level, config.log_file, "saline-master")
    run_master(config, path, log_level_fixed=bool(obj(ctx).get("log_level")))


@click.command()
@click.pass_context
def minion(ctx: click.Context) -> None:
    """Run a minion in the foreground (config: -c, $SALINE_CONFIG, /etc/saline/minion.yaml)."""
    from minion.config import load_minion_config
    from minion.daemon import run_minion

    config, path = load_minion_config(obj(ctx).get("config_path"))
    setup_logging(obj(ctx).get("log_level") or config.log_level, config.log_file, "saline-minion")
    run_minion(config, path, log_level_fixed=bool(obj(ctx).get("log_level")))
