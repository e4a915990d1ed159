"""``saline master`` and ``saline minion``: run a daemon in the foreground."""

import click

from saline.cli.common import obj
from saline.logs import LOG_FORMATS, set_process_title, setup_logging

#: ``--log-format``: text lines, or one JSON object per line for log shippers
log_format_option = click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="log lines as text, or one JSON object per line (ts, level, logger, message)",
)


@click.command()
@log_format_option
@click.pass_context
def master(ctx: click.Context, log_format: str) -> None:
    """Run the master in the foreground (config: -c, $SALINE_CONFIG, /etc/saline/master.yaml)."""
    from master.config import load_master_config
    from master.daemon import run_master

    config, path = load_master_config(obj(ctx).get("config_path"))
    level = obj(ctx).get("log_level") or config.log_level
    setup_logging(level, config.log_file, "saline-master", log_format)
    set_process_title("saline-master", "-c", str(path))
    run_master(config, path, log_level_fixed=bool(obj(ctx).get("log_level")))


@click.command()
@log_format_option
@click.pass_context
def minion(ctx: click.Context, log_format: str) -> None:
    """Run a minion in the foreground (config: -c, $SALINE_CONFIG, /etc/saline/minion.yaml)."""
    from minion.config import load_minion_config
    from minion.daemon import run_minion
    from minion.grains import minion_id

    config, path = load_minion_config(obj(ctx).get("config_path"))
    level = obj(ctx).get("log_level") or config.log_level
    setup_logging(level, config.log_file, "saline-minion", log_format)
    set_process_title("saline-minion", minion_id(config), "-c", str(path))
    run_minion(config, path, log_level_fixed=bool(obj(ctx).get("log_level")))
