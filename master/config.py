"""MasterConfig: every setting of ``saline master``, validated by pydantic."""

import re
import socket
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from master.notify_config import NOTIFY_ON, NotifyOn, NotifyTargets
from master.returners.config import ReturnerConfigs
from saline.api import DEFAULT_MASTER_CONFIG, DEFAULT_SOCK_DIR, SOCKET_NAME
from saline.config import load_yaml_model, resolve_config_path
from saline.durations import Duration
from saline.listen import LISTEN_PATTERN
from saline.targeting import TargetType
from saline.wire import DEFAULT_MAX_FRAME


class ScheduleEntry(BaseModel):
    """One enforcement run: states (or the highstate) on a target, every N seconds."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    target: str = "*"
    tgt_type: TargetType = TargetType.GLOB
    #: state names; empty means the highstate (top.yaml)
    states: list[str] = Field(default_factory=list)
    #: test mode: report drift, change nothing
    test: bool = False
    every: float = Field(gt=0)
    #: each minion waits a random 0..splay seconds before running
    splay: float = Field(default=0.0, ge=0)
    #: seconds a run may take on a minion (splay is added)
    timeout: float = Field(default=300.0, gt=0)


class MasterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: address the minion socket binds to
    interface: str = "0.0.0.0"  # noqa: S104 - minions connect from other hosts
    #: TCP port of the minion socket (ROUTER, CurveZMQ)
    port: int = Field(default=4606, ge=1, le=65535)
    #: key ring: master keypair and minion keys (dirs 0700, secret keys 0600)
    pki_dir: Path = Path("/etc/saline/pki/master")
    #: job store (SQLite, WAL) and other state
    data_dir: Path = Path("/var/lib/saline/master")
    #: where jobs, returns, events and the reactor's trail live: ``sqlite`` (the embedded
    #: default, in data_dir), a ``postgresql://`` URL (shared by several masters), or the
    #: absolute path of a file holding one (readable by the master's user only)
    store: str = Field(default="sqlite", pattern=r"^(sqlite|postgres(ql)?://.+|/.+)$")
    #: this master's name among several (status, the leader key); default ``HOST:PORT``
    master_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:\[\]-]{1,128}$")
    #: etcd members (``http://HOST:2379``) holding the leader's lease when several masters
    #: share a PostgreSQL store; empty: this master is the only one and always leads
    etcd_endpoints: list[str] = Field(default_factory=list)
    #: seconds of the leader's lease: a dead leader is replaced within about this long
    leader_ttl: int = Field(default=3, ge=2, le=60)
    #: directory of the local client socket (0700 unless client_acl opens it)
    sock_dir: Path = Path(DEFAULT_SOCK_DIR)
    log_file: Path | None = None
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    #: ``HOST:PORT`` (``[V6]:PORT``) the Prometheus metrics endpoint listens on; None: off
    metrics_listen: str | None = Field(default=None, pattern=LISTEN_PATTERN)
    #: accept every new minion key without an operator (labs only; logged loudly)
    auto_accept: bool = False
    #: frames larger than this are refused and counted
    max_frame_bytes: int = Field(default=DEFAULT_MAX_FRAME, ge=1024)
    #: a minion silent for this long is reported lost
    presence_timeout: float = Field(default=15.0, gt=0)
    #: default seconds to wait for returns when the client gives no --timeout
    job_timeout: float = Field(default=10.0, gt=0)
    #: local users other than the master's own, mapped to the function globs they may run
    client_acl: dict[str, list[str]] = Field(default_factory=dict)
    #: the state tree served as saline://, searched in order
    file_roots: list[Path] = Field(default_factory=lambda: [Path("/srv/saline/states")])
    #: pillar trees (each with its own top.yaml)
    pillar_roots: list[Path] = Field(default_factory=lambda: [Path("/srv/saline/pillar")])
    #: grains the master trusts per minion id (pillar targeting and templates use only
    #: these; what a minion claims in its hello never unlocks a secret)
    minion_grains: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: named compound targets over ids and trusted grains, used as ``N@name`` in pillar top
    nodegroups: dict[str, str] = Field(default_factory=dict)
    #: continuous enforcement runs
    schedule: list[ScheduleEntry] = Field(default_factory=list)
    #: tag globs a minion may fire events under; {id} is its authenticated id
    minion_event_tags: list[str] = Field(
        default_factory=lambda: [
            "saline/beacon/{id}/*",
            "chef/backend/{id}/*",
            "chef/frontend/{id}/*",
            "minion/{id}/*",
        ]
    )
    #: the operator's reactor rule directories (saline's own, reactors/rules/, load first)
    reactor_dirs: list[Path] = Field(default_factory=lambda: [Path("/etc/saline/reactors")])
    #: orchestration runbook libraries (``saline orchestrate NAME``)
    runbook_roots: list[Path] = Field(default_factory=lambda: [Path("/srv/saline/runbooks")])
    #: a reaction chain deeper than this is cut and escalated
    reactor_max_depth: int = Field(default=3, ge=1)
    #: events per second a minion may send (sustained), and its burst allowance
    minion_event_rate: float = Field(default=50.0, gt=0)
    minion_event_burst: float = Field(default=500.0, ge=1)
    #: jobs one minion runs at once (more wait on the master, their timeout not started)
    max_concurrent_jobs: int = Field(default=8, ge=1)
    #: jobs one client user may have running at once (the reactor and schedule are exempt)
    max_jobs_per_user: int = Field(default=32, ge=1)
    #: keys waiting for an operator; beyond this, new keys are refused and counted
    max_pending_keys: int = Field(default=1000, ge=1)
    #: CURVE handshakes of keys the master does not know, per second in total and per
    #: source address, with their bursts (known keys are never limited)
    new_key_rate: float = Field(default=50.0, gt=0)
    new_key_burst: float = Field(default=200.0, ge=1)
    new_key_rate_per_address: float = Field(default=5.0, gt=0)
    new_key_burst_per_address: float = Field(default=50.0, ge=1)
    #: cap on one event's data, packed (bigger events are refused as ``bad_event``)
    max_event_bytes: int = Field(default=64 * 1024, ge=256)
    #: how long the store keeps jobs (with their returns), events and reactor decisions
    #: (``7d``, ``90d``, seconds; 0: for ever); what is still needed is never pruned
    keep_jobs: Duration = 7 * 86400.0
    keep_events: Duration = 7 * 86400.0
    keep_reactions: Duration = 90 * 86400.0
    #: where escalations and failed reactions are sent (webhook, slack, pagerduty, email)
    notify: NotifyTargets = Field(default_factory=list)
    #: which of the reactor's audit events notify every target
    notify_on: NotifyOn = Field(default_factory=lambda: [*NOTIFY_ON])
    #: where job returns, events and reaction decisions are also kept (Elasticsearch,
    #: PostgreSQL, plugins), each through an on-disk queue: see master/returners/
    returners: ReturnerConfigs = Field(default_factory=list)

    @model_validator(mode="after")
    def _leadership_needs_a_shared_store(self) -> "MasterConfig":
        for endpoint in self.etcd_endpoints:
            if not re.fullmatch(r"https?://[^\s/]+", endpoint.rstrip("/")):
                raise ValueError(f"etcd_endpoints: {endpoint!r} is not http(s)://HOST:PORT")
        if self.etcd_endpoints and self.store == "sqlite":
            raise ValueError(
                "etcd_endpoints: several masters must share one store; set store to a"
                " postgresql:// URL or the path of a file holding one"
            )
        return self

    @model_validator(mode="after")
    def _returner_names_unique(self) -> "MasterConfig":
        names = [r.name for r in self.returners]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"returners: name {twice[0]!r} is used twice (each has its queue)")
        return self

    @property
    def name(self) -> str:
        """This master's name: ``master_name``, else ``HOST:PORT`` of its minion socket."""
        return self.master_name or f"{socket.gethostname()}:{self.port}"

    @property
    def client_socket(self) -> Path:
        return self.sock_dir / SOCKET_NAME

    @property
    def store_path(self) -> Path:
        return self.data_dir / "jobs.sqlite"


def load_master_config(path: str | None = None) -> tuple[MasterConfig, Path]:
    """Load the master config from -c, $SALINE_CONFIG or the default path."""
    resolved = resolve_config_path(path, DEFAULT_MASTER_CONFIG)
    return load_yaml_model(resolved, MasterConfig, foreign=_MINION_ONLY), resolved


#: settings only a minion config has: such a file given to the master is named for what it is
_MINION_ONLY = (
    "a minion config",
    frozenset({"master", "master_port", "master_pub", "master_finger", "beacons", "cachedir"}),
)
