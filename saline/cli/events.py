"""``saline events``: stream the master's bus live; ``--since`` replays stored events first."""

import json
import sys

import click

from saline.cli.common import client
from saline.cli.render import colour_options, event_line


@click.command()
@click.option("--tag", default="*", help="only tags matching this glob (e.g. 'saline/minion/*')")
@click.option("--out", type=click.Choice(["human", "json"]), default="human")
@click.option("--since", type=int, default=None, help="replay stored events after this seq")
@click.option("--count", type=int, default=None, help="stop after this many events")
@click.option("--no-follow", is_flag=True, help="print stored events (--since) and exit")
@colour_options
@click.pass_context
def events(
    ctx: click.Context, tag: str, out: str, since: int | None, count: int | None, no_follow: bool
) -> None:
    """Print events as they are published (Ctrl-C stops). JSON: one object per line.

    A human line starts with the event's seq, the number --since takes:
    `#1234 12:00:01.250 chef/backend/be1/pg/out_of_sync be1 {"state": "catchup"}`
    """
    seen = 0
    if no_follow and since is None:
        since = 0
    with client(ctx, timeout=None) as master:
        master.send("events", tag=tag, since=since, follow=not no_follow)
        master.receive()  # "subscribed": from here on nothing is missed
        try:
            while count is None or seen < count:
                event = master.receive()
                if event["type"] == "done":
                    break
                event.pop("type", None)
                seen += 1
                if out == "json":
                    click.echo(json.dumps(event, sort_keys=True, default=repr))
                else:
                    click.echo(event_line(event))
                sys.stdout.flush()  # live: a pipe must see each event as it happens
        except KeyboardInterrupt:
            pass
