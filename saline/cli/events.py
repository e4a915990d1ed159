"""``saline events``: stream the master's bus live; ``--since`` replays stored events first."""

import json
import sys
from datetime import datetime

import click

from saline.cli.common import client


@click.command()
@click.option("--tag", default="*", help="only tags matching this glob (e.g. 'saline/minion/*')")
@click.option("--out", type=click.Choice(["human", "json"]), default="human")
@click.option("--since", type=int, default=None, help="replay stored events after this seq")
@click.option("--count", type=int, default=None, help="stop after this many events")
@click.option("--no-follow", is_flag=True, help="print stored events (--since) and exit")
@click.pass_context
def events(
    ctx: click.Context, tag: str, out: str, since: int | None, count: int | None, no_follow: bool
) -> None:
    """Print events as they are published (Ctrl-C stops). JSON: one object per line."""
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
                    stamp = datetime.fromtimestamp(event["ts"]).strftime("%H:%M:%S.%f")[:-3]
                    who = event["minion"] or "master"
                    click.echo(f"{stamp} {event['tag']} ({who}) {json.dumps(event['data'])}")
                sys.stdout.flush()  # live: a pipe must see each event as it happens
        except KeyboardInterrupt:
            pass
