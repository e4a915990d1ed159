"""``saline fire TAG [--data JSON]``: put an event on the master's bus (stored, then published)."""

import json

import click

from saline.cli.common import client


@click.command()
@click.argument("tag")
@click.option("--data", "data_json", default="{}", help="event data as a JSON object")
@click.pass_context
def fire(ctx: click.Context, tag: str, data_json: str) -> None:
    """Fire TAG with --data; reactor rules matching it run as for any other event."""
    try:
        data = json.loads(data_json)
    except ValueError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--data") from e
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--data")
    with client(ctx) as master:
        result = master.request("fire", tag=tag, data=data)
    click.echo(f"fired {result['tag']} (seq {result['seq']})")
