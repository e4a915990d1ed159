"""``saline lab demo``: break the Chef HA lab one fault at a time and watch saline heal it.

For each scenario the demo injects a real fault, then follows the master's event bus:
detected (the node's beacon reports the bad state), remediation started (a rule fired),
healed (the beacon reports the good state again, or the rule's reaction finished). It prints
a live timeline and, at the end, one row per fault; a fault not healed within its deadline
makes the exit code non-zero.

Each scenario is recorded for ``saline reactor simulate``: the reactor's view before the
fault (``NN-FAULT-NODE.view.json``) and every event stored from then until it healed
(``NN-FAULT-NODE.events.jsonl``), in ``DIR/recordings/``.
"""

import fnmatch
import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saline.client import MasterClient
from saline.errors import ClientError
from saline.lab.chefha import faults

#: read-only checks the runbooks poll with: not "what was run" to heal
_CHECKS = frozenset(
    {
        "postgres.replication",
        "elasticsearch.health",
        "elasticsearch.allocation_explain",
        "chef_backend.status",
        "chef_server.migration_level",
        "etcd.health",
    }
)


@dataclass(frozen=True)
class Scenario:
    fault: str
    node: str
    #: tag glob (``{node}`` is the node) of the event that shows the fault was detected
    bad_glob: str
    #: tag glob of the event that shows it healed
    good_glob: str
    deadline: float = 90.0
    #: kill the leading master as soon as the first remediation job is sent (several masters)
    kill_leader: bool = False

    @property
    def bad(self) -> str:
        return self.bad_glob.format(node=self.node)

    @property
    def good(self) -> str:
        return self.good_glob.format(node=self.node)


_PG = "saline/beacon/{node}/pg_replication/"
SCENARIOS = (
    Scenario("pg-pause-replay", "be2", _PG + "out_of_sync", _PG + "in_sync"),
    Scenario("pg-wal-gone", "be3", _PG + "[do]*", _PG + "in_sync", deadline=150.0),
    Scenario("pg-stop", "be2", _PG + "down", _PG + "in_sync"),
    # the follower believes it streams: only the leader's view sees it
    Scenario("pg-stall-sender", "be3", _PG + "out_of_sync", _PG + "in_sync"),
    Scenario("etcd-kill", "be3", "saline/beacon/{node}/etcd_member/[dn]*",
             "saline/beacon/{node}/etcd_member/healthy"),
    Scenario("es-red", "be1", "saline/beacon/{node}/elasticsearch_health/red",
             "saline/beacon/{node}/elasticsearch_health/green"),
    Scenario("migration-drift", "fe2", "saline/beacon/{node}/migration_level/changed",
             "saline/reactor/chef-migration-level-drift/finished"),
    Scenario("md5-auth", "be3", "saline/beacon/{node}/config_drift/drifted",
             "saline/beacon/{node}/config_drift/ok"),
    Scenario("secrets-mode", "be2", "saline/beacon/{node}/chef_secrets/changed",
             "saline/reactor/chef-backend-secrets-mode/finished"),
    Scenario("fe-service-down", "fe1", "saline/beacon/{node}/chef_server_status/down",
             "saline/beacon/{node}/chef_server_status/ok"),
)  # fmt: skip

#: with several masters: the leader dies mid-heal, the next leader finishes the runbook
#: (on be3: be2's own pg-stop a moment before would hold it in the rule's cooldown)
LEADER_KILLED = Scenario(
    "pg-stop", "be3", _PG + "down", "saline/reactor/chef-pg-follower-down/finished",
    kill_leader=True,
)  # fmt: skip


@dataclass
class Outcome:
    scenario: Scenario
    what: str = ""
    injected: float = 0.0
    detected: float | None = None
    started: float | None = None
    healed: float | None = None
    rule: str | None = None
    ran: list[str] = field(default_factory=list)
    #: when the leading master was killed (``kill_leader``)
    killed: float | None = None

    def row(self) -> dict[str, Any]:
        def rel(t: float | None) -> str:
            return "-" if t is None else f"+{t - self.injected:.1f}s"

        killed = f", leader killed {rel(self.killed)}" if self.scenario.kill_leader else ""
        return {
            "fault": f"{self.scenario.fault} {self.scenario.node}{killed}",
            "injected": time.strftime("%H:%M:%S", time.localtime(self.injected)),
            "detected": rel(self.detected),
            "remediation": rel(self.started),
            "healed": rel(self.healed),
            "rule": self.rule or "-",
            "ran": ", ".join(dict.fromkeys(self.ran)) or "-",
        }


class EventFeed:
    """The bus, read by a thread into a queue, so waiting has a deadline."""

    def __init__(self, sock: Path) -> None:
        self.client = MasterClient(sock, timeout=None)
        self.client.send("events", tag="*", follow=True)
        self.client.receive()  # subscribed: nothing after this is missed
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                self.queue.put(self.client.receive())
        except (ClientError, OSError):
            return

    def next(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.queue.get(timeout=max(timeout, 0.01))
        except queue.Empty:
            return None

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


class Recorder:
    """Records scenarios for ``saline reactor simulate`` through a master's client socket."""

    def __init__(self, sock: Path, directory: Path) -> None:
        self.sock, self.directory = sock, directory
        self.count = 0

    def before(self, scenario: Scenario) -> tuple[Path, int]:
        """Write the reactor's view; answers the recording's stem and the last seq."""
        self.count += 1
        stem = self.directory / f"{self.count:02d}-{scenario.fault}-{scenario.node}"
        self.directory.mkdir(parents=True, exist_ok=True)
        with MasterClient(self.sock) as master:
            view = master.request("reactor_view")
        view.pop("type", None)
        stem.with_suffix(".view.json").write_text(json.dumps(view, sort_keys=True) + "\n")
        return stem, int(view["seq"])

    def after(self, stem: Path, since: int) -> Path:
        """Write the events stored after ``since`` (as ``saline events --out json`` does)."""
        path = stem.with_suffix(".events.jsonl")
        with MasterClient(self.sock, timeout=60) as master, path.open("w") as out:
            master.send("events", tag="*", since=since, follow=False)
            master.receive()  # subscribed
            while (event := master.receive())["type"] != "done":
                event.pop("type", None)
                out.write(json.dumps(event, sort_keys=True, default=repr) + "\n")
        return path


def run_scenario(
    lab_dir: Path,
    feed: EventFeed,
    scenario: Scenario,
    say: Callable[[str], None],
    kill_leader: Callable[[], str] | None = None,
    recorder: Recorder | None = None,
) -> Outcome:
    """Inject the scenario's fault and follow the events until it healed or its deadline;
    ``kill_leader`` (several masters) is called once the first remediation job is sent;
    ``recorder`` records the scenario for a simulation."""
    recording = recorder.before(scenario) if recorder is not None else None
    try:
        return _follow(lab_dir, feed, scenario, say, kill_leader)
    finally:
        if recorder is not None and recording is not None:
            recorder.after(*recording)


def _follow(
    lab_dir: Path,
    feed: EventFeed,
    scenario: Scenario,
    say: Callable[[str], None],
    kill_leader: Callable[[], str] | None,
) -> Outcome:
    outcome = Outcome(scenario)
    feed.drain()
    outcome.injected = time.time()
    outcome.what = faults.inject(lab_dir, scenario.fault, scenario.node)
    say(f"  inject   {scenario.fault} on {scenario.node}: {outcome.what}")
    deadline = time.monotonic() + scenario.deadline
    while outcome.healed is None and time.monotonic() < deadline:
        event = feed.next(deadline - time.monotonic())
        if event is None or event.get("type") != "event":
            continue
        tag, at = event["tag"], float(event["ts"])
        offset = f"+{at - outcome.injected:5.1f}s"
        if outcome.detected is None and fnmatch.fnmatchcase(tag, scenario.bad):
            outcome.detected = at
            say(f"  {offset} detected  {tag}")
        elif tag.startswith("saline/reactor/") and tag.endswith("/fired"):
            outcome.rule = outcome.rule or tag.split("/")[2]
            outcome.started = outcome.started or at
            say(f"  {offset} fired     {tag.split('/')[2]}")
        elif tag.startswith("saline/reactor/") and tag.endswith(("/failed", "/escalated")):
            why = event["data"].get("reason")
            say(f"  {offset} {tag.split('/')[-1]:9} {tag.split('/')[2]}: {why}")
        elif tag.startswith("saline/job/") and tag.endswith("/new"):
            data = event["data"]
            user, fun = str(data.get("user", "")), str(data.get("fun"))
            if user.startswith("reactor:") and fun not in _CHECKS:
                outcome.ran.append(fun)
                say(f"  {offset} ran       {fun} on {', '.join(data.get('minions', []))}")
                if scenario.kill_leader and kill_leader is not None and outcome.killed is None:
                    outcome.killed = time.time()
                    say(f"  +{outcome.killed - outcome.injected:5.1f}s {kill_leader()}")
        elif outcome.detected is not None and fnmatch.fnmatchcase(tag, scenario.good):
            outcome.healed = at
            say(f"  {offset} healed    {tag}")
    if outcome.healed is None:
        say(f"  NOT HEALED within {scenario.deadline:g}s")
    return outcome


def table(outcomes: list[Outcome]) -> str:
    rows = [o.row() for o in outcomes]
    headers = list(rows[0]) if rows else []
    widths = {h: max(len(h), *(len(r[h]) for r in rows)) for h in headers}
    lines = ["  ".join(h.ljust(widths[h]) for h in headers).rstrip()]
    lines += ["  ".join(r[h].ljust(widths[h]) for h in headers).rstrip() for r in rows]
    return "\n".join(lines)
