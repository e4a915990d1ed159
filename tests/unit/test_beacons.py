"""Beacons against real services, files, filesystems and processes; the runner's edges."""

import asyncio
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from minion.beacons.base import Beacon, BeaconConfig, BeaconContext, Observation
from minion.beacons.config import BeaconsConfig, BeaconSpec
from minion.beacons.diskusage import DiskUsageBeacon, used_percent
from minion.beacons.file import FileBeacon
from minion.beacons.load import LoadBeacon
from minion.beacons.process import ProcessBeacon
from minion.beacons.registry import BEACONS
from minion.beacons.runner import BeaconRunner
from minion.beacons.service import ServiceBeacon
from minion.config import ServiceSpec
from minion.modules.base import Context, Outcome
from minion.services.supervisor import SupervisorProvider
from saline.errors import ConfigError, ExecutionError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[SupervisorProvider]:
    prov = SupervisorProvider({"sleeper": ServiceSpec(argv=["sleep", "300"])}, tmp_path / "svc")
    yield prov
    prov.stop("sleeper")


@pytest.fixture
def ctx(provider: SupervisorProvider) -> BeaconContext:
    return BeaconContext("m1", provider)


def make(cls: type[Beacon], ctx: BeaconContext, **params: Any) -> Beacon:
    return cls(cls.Config.model_validate(params), ctx)


def by_key(observations: list[Observation]) -> dict[str, Observation]:
    return {obs.key: obs for obs in observations}


# -- the registry ---------------------------------------------------------------------------


def test_registry_names_match_and_configs_forbid_unknown_params() -> None:
    assert set(BEACONS) >= {"service", "file", "diskusage", "load", "process"}
    for name, cls in BEACONS.items():
        assert cls.name == name
        assert cls.__doc__ and sys.modules[cls.__module__].__doc__
        with pytest.raises(ValidationError, match="Extra inputs"):
            cls.Config.model_validate({"no_such_param": 1})


# -- the context's call ---------------------------------------------------------------------


def test_call_runs_a_registered_execution_function(ctx: BeaconContext) -> None:
    assert ctx.call("test.echo", text="hello") == "hello"
    assert ctx.call("test.ping") is True


def test_call_passes_the_function_its_context_and_unwraps_an_outcome(
    ctx: BeaconContext, provider: SupervisorProvider
) -> None:
    seen: list[Context] = []

    def probe(module_ctx: Context, answer: int) -> Outcome:
        seen.append(module_ctx)
        return Outcome({"answer": answer}, 2)

    own = replace(ctx, functions={"probe.run": probe})
    assert own.call("probe.run", answer=42) == {"answer": 42}
    [module_ctx] = seen
    assert (module_ctx.minion_id, module_ctx.services) == ("m1", provider)
    assert module_ctx.functions is own.functions
    assert module_ctx.channel is None  # no master line: a beacon is not a job


def test_call_passes_errors_on_unchanged_and_refuses_unknown_functions(
    ctx: BeaconContext,
) -> None:
    with pytest.raises(ExecutionError, match=r"^seconds must be >= 0, got -1$"):
        ctx.call("test.sleep", seconds=-1)
    with pytest.raises(ExecutionError, match=r"no execution function 'nope\.nope' on this minion"):
        ctx.call("nope.nope")
    with pytest.raises(ExecutionError, match=r"no execution function 'test\.ping'"):
        replace(ctx, functions={}).call("test.ping")


# -- service --------------------------------------------------------------------------------


def test_service_running_then_stopped(provider: SupervisorProvider, ctx: BeaconContext) -> None:
    beacon = make(ServiceBeacon, ctx, services=["sleeper"])
    [obs] = beacon.check()
    assert (obs.key, obs.state, obs.bad, obs.data) == (
        "sleeper",
        "stopped",
        True,
        {"name": "sleeper", "pid": None},
    )
    pid = provider.start("sleeper").pid
    assert pid is not None
    [obs] = beacon.check()
    assert (obs.state, obs.bad, obs.data["pid"]) == ("running", False, pid)
    provider.stop("sleeper")
    [obs] = beacon.check()
    assert (obs.state, obs.bad) == ("stopped", True)


def test_service_unknown_to_the_provider(ctx: BeaconContext) -> None:
    [obs] = make(ServiceBeacon, ctx, services=["ghost"]).check()
    assert (obs.state, obs.bad) == ("unknown", True)
    assert "unknown service 'ghost'" in obs.data["error"]


# -- file -----------------------------------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_file_baseline_change_and_mode(tmp_path: Path, ctx: BeaconContext) -> None:
    path = tmp_path / "chef-server.rb"
    path.write_bytes(b"one\n")
    path.chmod(0o644)
    beacon = make(FileBeacon, ctx, paths=[str(path)])

    [obs] = beacon.check()
    assert (obs.state, obs.bad, obs.transient) == ("present", False, False)
    assert obs.data == {"path": str(path), "sha256": sha(b"one\n"), "mode": "0644"}
    assert beacon.check()[0].state == "present"

    path.write_bytes(b"two\n")
    [obs] = beacon.check()
    assert (obs.state, obs.bad, obs.transient) == ("changed", True, True)
    assert obs.data["sha256"] == sha(b"two\n")
    assert obs.data["previous_sha256"] == sha(b"one\n")
    assert beacon.check()[0].state == "present"  # the change became the baseline

    path.chmod(0o600)
    [obs] = beacon.check()
    assert obs.state == "changed"
    assert (obs.data["mode"], obs.data["previous_mode"]) == ("0600", "0644")
    assert obs.data["sha256"] == obs.data["previous_sha256"] == sha(b"two\n")

    path.unlink()
    assert beacon.check()[0].state == "absent"
    path.write_bytes(b"three\n")
    [obs] = beacon.check()  # reappearing sets a new baseline: present, not changed
    assert (obs.state, obs.data["sha256"]) == ("present", sha(b"three\n"))


def frozen_stat(path: Path, age_ns: int) -> os.stat_result:
    """path's stat with mtime and ctime moved ``age_ns`` into the past."""
    st = path.stat()
    fields = list(st)
    old = time.time_ns() - age_ns
    # stat_result takes the 10 sequence fields, then (a)(m)(c)time as float, then as ns
    extra = (old / 1e9, old / 1e9, old / 1e9, old, old, old)
    return os.stat_result((*fields[:10], *extra))


def test_file_rewrite_within_one_timestamp_tick_is_seen(
    tmp_path: Path, ctx: BeaconContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A same-size rewrite whose mtime/ctime did not move (coarse clock) is still hashed."""
    path = tmp_path / "f"
    path.write_bytes(b"aaaa")
    beacon = make(FileBeacon, ctx, paths=[str(path)])
    recent = frozen_stat(path, 0)
    with monkeypatch.context() as m:
        m.setattr(os, "stat", lambda *args, **kwargs: recent)
        beacon.check()
        path.write_bytes(b"bbbb")
        [obs] = beacon.check()
    assert obs.state == "changed"
    assert obs.data["sha256"] == sha(b"bbbb")


def test_file_hash_is_reused_for_an_old_untouched_file(
    tmp_path: Path, ctx: BeaconContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"aaaa")
    beacon = make(FileBeacon, ctx, paths=[str(path)])
    old = frozen_stat(path, 3600 * 10**9)
    with monkeypatch.context() as m:
        m.setattr(os, "stat", lambda *args, **kwargs: old)
        beacon.check()
        path.write_bytes(b"bbbb")  # invisible to stat here: the hash is not recomputed
        [obs] = beacon.check()
    assert (obs.state, obs.data["sha256"]) == ("present", sha(b"aaaa"))


def test_file_absent_at_first_and_unreadable(tmp_path: Path, ctx: BeaconContext) -> None:
    missing = tmp_path / "nope"
    beacon = make(FileBeacon, ctx, paths=[str(missing), str(tmp_path)])
    obs = by_key(beacon.check())
    assert (obs[str(missing)].state, obs[str(missing)].bad) == ("absent", True)
    assert obs[str(tmp_path)].state == "present"  # a directory: mode only
    assert obs[str(tmp_path)].data["sha256"] is None
    with pytest.raises(ValidationError, match="not an absolute path"):
        FileBeacon.Config.model_validate({"paths": ["relative/file"]})


def test_file_that_cannot_be_examined_is_an_error_state(tmp_path: Path, ctx: BeaconContext) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    [obs] = make(FileBeacon, ctx, paths=[str(loop)]).check()
    assert (obs.state, obs.bad) == ("error", True)
    assert "symbolic links" in obs.data["error"]


# -- diskusage ------------------------------------------------------------------------------


def test_diskusage_thresholds(tmp_path: Path, ctx: BeaconContext) -> None:
    usage = shutil.disk_usage(tmp_path)
    expected = 100 * usage.used / (usage.used + usage.free)
    [over] = make(DiskUsageBeacon, ctx, paths={str(tmp_path): 0}).check()
    assert (over.state, over.bad, over.data["threshold"]) == ("over", True, 0)
    assert over.data["percent"] == pytest.approx(expected, abs=0.5)
    assert 0 < used_percent(str(tmp_path)) < 100
    [ok] = make(DiskUsageBeacon, ctx, paths={str(tmp_path): 100}).check()
    assert (ok.state, ok.bad) == ("ok", False)


def test_diskusage_missing_path_and_bad_threshold(tmp_path: Path, ctx: BeaconContext) -> None:
    [obs] = make(DiskUsageBeacon, ctx, paths={str(tmp_path / "gone"): 90}).check()
    assert (obs.state, obs.bad) == ("error", True)
    with pytest.raises(ValidationError, match="less than or equal to 100"):
        DiskUsageBeacon.Config.model_validate({"paths": {"/": 101}})


# -- load -----------------------------------------------------------------------------------


def test_load_ok_against_the_real_average(ctx: BeaconContext) -> None:
    [obs] = make(LoadBeacon, ctx, max_1m=1e6, max_15m=1e6).check()
    assert (obs.key, obs.state, obs.bad, obs.data["exceeded"]) == ("load", "ok", False, [])
    assert obs.data["load_15m"] == pytest.approx(os.getloadavg()[2], abs=0.5)
    assert obs.data["max_5m"] is None


def test_load_high(monkeypatch: pytest.MonkeyPatch, ctx: BeaconContext) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 3.0, 1.0))
    [obs] = make(LoadBeacon, ctx, max_1m=8, max_5m=4, max_15m=0.5).check()
    assert (obs.state, obs.bad, obs.data["exceeded"]) == ("high", True, ["1m", "15m"])
    with pytest.raises(ValidationError, match="at least one"):
        LoadBeacon.Config.model_validate({})


# -- process --------------------------------------------------------------------------------


def spawn_named(tmp_path: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    exe = tmp_path / name
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    return subprocess.Popen([str(exe), *args])


def test_process_present_then_absent(tmp_path: Path, ctx: BeaconContext) -> None:
    name = f"sb{uuid.uuid4().hex[:10]}"
    proc = spawn_named(tmp_path, name, "4242")
    try:
        beacon = make(ProcessBeacon, ctx, names=[name])
        [obs] = beacon.check()
        assert (obs.state, obs.bad, obs.data) == (
            "present",
            False,
            {"name": name, "pids": [proc.pid]},
        )
        [obs] = make(ProcessBeacon, ctx, names=[name], cmdline_contains="4242").check()
        assert obs.state == "present"
        [obs] = make(ProcessBeacon, ctx, names=[name], cmdline_contains="4343").check()
        assert obs.state == "absent"
    finally:
        proc.kill()
        proc.wait()
    [obs] = beacon.check()
    assert (obs.state, obs.bad, obs.data["pids"]) == ("absent", True, [])


def test_process_long_name_matches_truncated_comm(tmp_path: Path, ctx: BeaconContext) -> None:
    name = f"long{uuid.uuid4().hex[:16]}"  # 20 characters; comm keeps 15
    proc = spawn_named(tmp_path, name, "300")
    try:
        [obs] = make(ProcessBeacon, ctx, names=[name]).check()
        assert obs.data["pids"] == [proc.pid]
    finally:
        proc.kill()
        proc.wait()


# -- running a beacon module on its own -------------------------------------------------------


def test_beacon_module_runs_from_a_shell(tmp_path: Path) -> None:
    def shell(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "minion.beacons", *args]
        return subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60)

    out = shell("diskusage", json.dumps({"paths": {str(tmp_path): 100}}))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["state"] == "ok"
    bad = shell("diskusage", '{"paths": []}')
    assert bad.returncode == 2
    assert "invalid parameters" in bad.stderr
    unknown = shell("nope")
    assert unknown.returncode == 2
    assert "diskusage,elasticsearch_health,etcd_health,file,load" in unknown.stderr


# -- the runner -----------------------------------------------------------------------------


class Step(BaseModel):
    key: str = "k"
    state: str
    bad: bool = False
    transient: bool = False


class ScriptedConfig(BeaconConfig):
    #: observations of each check, in order; the last repeats; "raise" makes a check fail
    steps: list[list[Step] | str]
    #: seconds each check blocks its thread
    delay: float = 0.0


class Scripted(Beacon):
    name = "scripted"
    Config = ScriptedConfig
    config: ScriptedConfig

    def __init__(self, config: BeaconConfig, ctx: BeaconContext) -> None:
        super().__init__(config, ctx)
        self.calls = 0
        self.started = threading.Event()

    def check(self) -> list[Observation]:
        self.started.set()
        time.sleep(self.config.delay)
        step = self.config.steps[min(self.calls, len(self.config.steps) - 1)]
        self.calls += 1
        if isinstance(step, str):
            raise RuntimeError(step)
        return [
            Observation(s.key, s.state, s.bad, {"n": self.calls}, transient=s.transient)
            for s in step
        ]


REGISTRY: dict[str, type[Beacon]] = {**BEACONS, "scripted": Scripted}
Emitted = list[tuple[str, dict[str, Any]]]


def runner_for(ctx: BeaconContext, emitted: Emitted, **specs: dict[str, Any]) -> BeaconRunner:
    parsed = TypeAdapter(BeaconsConfig).validate_python(specs)
    return BeaconRunner(parsed, ctx, lambda tag, data: emitted.append((tag, data)), REGISTRY)


def steps(*states: str, bad: tuple[str, ...] = ("down",)) -> list[Any]:
    return [[{"state": s, "bad": s in bad}] for s in states]


def poll(runner: BeaconRunner, name: str, now: float = 0.0) -> str:
    return asyncio.run(runner.poll_once(name, now))


def test_first_good_observation_is_silent_then_changes_are_emitted(ctx: BeaconContext) -> None:
    emitted: Emitted = []
    runner = runner_for(
        ctx, emitted, w={"beacon": "scripted", "steps": steps("up", "up", "down", "up")}
    )
    assert poll(runner, "w") == "no change in 1 observation(s)"
    assert poll(runner, "w") == "no change in 1 observation(s)"
    assert emitted == []
    assert poll(runner, "w") == "emitted down (k)"
    assert poll(runner, "w") == "emitted up (k)"
    assert emitted == [
        (
            "w/down",
            {"n": 3, "key": "k", "state": "down", "bad": True, "beacon": "w", "previous": "up"},
        ),
        (
            "w/up",
            {"n": 4, "key": "k", "state": "up", "bad": False, "beacon": "w", "previous": "down"},
        ),
    ]


def test_first_bad_observation_is_emitted_once(ctx: BeaconContext) -> None:
    emitted: Emitted = []
    runner = runner_for(ctx, emitted, scripted={"steps": steps("down")})
    for _ in range(3):
        poll(runner, "scripted")
    assert [(tag, data["previous"]) for tag, data in emitted] == [("scripted/down", None)]


def test_announce_emits_the_first_observation_whatever_its_state(ctx: BeaconContext) -> None:
    script = [
        [{"key": "a", "state": "up"}, {"key": "b", "state": "down", "bad": True}],
        [{"key": "a", "state": "up"}, {"key": "b", "state": "down", "bad": True}],
        [{"key": "a", "state": "down", "bad": True}, {"key": "b", "state": "up"}],
    ]
    emitted: Emitted = []
    runner = runner_for(ctx, emitted, scripted={"steps": script, "announce": True})
    assert poll(runner, "scripted") == "emitted up (a), down (b)"
    assert poll(runner, "scripted") == "no change in 2 observation(s)"
    assert poll(runner, "scripted") == "emitted down (a), up (b)"
    assert [(tag, data["key"], data["previous"]) for tag, data in emitted] == [
        ("scripted/up", "a", None),
        ("scripted/down", "b", None),
        ("scripted/down", "a", "up"),
        ("scripted/up", "b", "down"),
    ]


def test_announce_is_an_edge_setting_not_a_beacon_parameter(ctx: BeaconContext) -> None:
    spec = BeaconSpec.model_validate({"beacon": "load", "max_1m": 2, "announce": True})
    assert (spec.announce, spec.params) == (True, {"max_1m": 2})
    assert BeaconSpec.model_validate({}).announce is False
    runner = BeaconRunner({"load": spec}, ctx, lambda tag, data: None, REGISTRY)
    assert runner.beacons["load"].announce is True


def test_reassert_while_bad_persists(ctx: BeaconContext) -> None:
    emitted: Emitted = []
    runner = runner_for(ctx, emitted, scripted={"steps": steps("down"), "reassert": 10})
    for now in (0, 5, 9.9, 10, 15, 20.5, 25):
        poll(runner, "scripted", now)
    assert [data["n"] for _, data in emitted] == [1, 4, 6]  # at 0, 10 and 20.5
    assert all(data["previous"] in (None, "down") for _, data in emitted)


def test_good_states_are_never_reasserted(ctx: BeaconContext) -> None:
    emitted: Emitted = []
    runner = runner_for(ctx, emitted, scripted={"steps": steps("down", "up"), "reassert": 1})
    for now in range(6):
        poll(runner, "scripted", now)
    assert [tag for tag, _ in emitted] == ["scripted/down", "scripted/up"]


def test_transient_observations_are_emitted_each_time_and_not_remembered(
    ctx: BeaconContext,
) -> None:
    changed = [{"state": "changed", "bad": True, "transient": True}]
    script = [[{"state": "present"}], changed, changed, [{"state": "present"}]]
    emitted: Emitted = []
    runner = runner_for(ctx, emitted, f={"beacon": "scripted", "steps": script})
    for _ in range(4):
        poll(runner, "f")
    assert [(tag, data["previous"]) for tag, data in emitted] == [
        ("f/changed", "present"),
        ("f/changed", "present"),
    ]


def test_keys_are_tracked_separately(ctx: BeaconContext) -> None:
    script = [
        [{"key": "a", "state": "up"}, {"key": "b", "state": "up"}],
        [{"key": "a", "state": "up"}, {"key": "b", "state": "down", "bad": True}],
    ]
    emitted: Emitted = []
    runner = runner_for(ctx, emitted, scripted={"steps": script})
    poll(runner, "scripted")
    assert poll(runner, "scripted") == "emitted down (b)"
    assert [data["key"] for _, data in emitted] == ["b"]


def test_a_raising_check_is_logged_once_per_distinct_error(
    ctx: BeaconContext, caplog: pytest.LogCaptureFixture
) -> None:
    emitted: Emitted = []
    script: list[Any] = ["boom", "boom", "bang", [{"state": "down", "bad": True}]]
    runner = runner_for(ctx, emitted, scripted={"steps": script})
    with caplog.at_level(logging.INFO, logger="minion.beacons.runner"):
        assert poll(runner, "scripted") == "check failed: RuntimeError: boom"
        poll(runner, "scripted")
        poll(runner, "scripted")
        assert poll(runner, "scripted") == "emitted down (k)"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "beacon scripted check failed: RuntimeError: boom",
        "beacon scripted check failed: RuntimeError: bang",
    ]
    assert "beacon scripted works again" in caplog.messages
    assert [tag for tag, _ in emitted] == ["scripted/down"]


def test_a_failing_emit_is_retried_next_cycle(ctx: BeaconContext) -> None:
    calls: list[str] = []

    def emit(tag: str, data: dict[str, Any]) -> None:
        calls.append(tag)
        if len(calls) == 1:
            raise OSError("spool full")

    specs = {"scripted": BeaconSpec.model_validate({"steps": steps("down")})}
    runner = BeaconRunner(specs, ctx, emit, REGISTRY)
    assert poll(runner, "scripted") == "check failed: OSError: spool full"
    assert poll(runner, "scripted") == "emitted down (k)"
    assert poll(runner, "scripted") == "no change in 1 observation(s)"
    assert calls == ["scripted/down", "scripted/down"]


def test_run_keeps_going_through_failures_and_slow_checks_do_not_block(
    ctx: BeaconContext,
) -> None:
    emitted: Emitted = []
    flaky: list[Any] = ["boom", *steps("down", "up", "down", "up")]
    runner = runner_for(
        ctx,
        emitted,
        flaky={"beacon": "scripted", "steps": flaky, "interval": 0.01},
        slow={"beacon": "scripted", "steps": steps("down"), "delay": 1.0, "interval": 0.01},
        off={"beacon": "scripted", "steps": steps("down"), "enabled": False},
    )
    assert set(runner.beacons) == {"flaky", "slow"}
    slow = runner.beacons["slow"].beacon
    assert isinstance(slow, Scripted)

    async def scenario() -> float:
        task = asyncio.create_task(runner.run())
        deadline = time.monotonic() + 5
        while not slow.started.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        before = time.monotonic()
        await asyncio.sleep(0.01)  # the loop stays responsive while "slow" blocks a thread
        lag = time.monotonic() - before
        while len(emitted) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return lag

    lag = asyncio.run(scenario())
    assert lag < 0.5
    flaky_tags = [tag for tag, _ in emitted if tag.startswith("flaky/")]
    assert flaky_tags[:4] == ["flaky/down", "flaky/up", "flaky/down", "flaky/up"]


def test_two_instances_of_one_beacon_type(ctx: BeaconContext, provider: SupervisorProvider) -> None:
    emitted: Emitted = []
    runner = runner_for(
        ctx,
        emitted,
        service={"services": ["sleeper"]},
        etcd_watch={"beacon": "service", "services": ["sleeper"]},
    )
    assert isinstance(runner.beacons["etcd_watch"].beacon, ServiceBeacon)
    poll(runner, "service")
    poll(runner, "etcd_watch")
    assert [tag for tag, _ in emitted] == ["service/stopped", "etcd_watch/stopped"]
    assert emitted[1][1]["beacon"] == "etcd_watch"


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (
            {"etcd_watch": {"beacon": "service", "services": "etcd"}},
            r"^beacons\.etcd_watch\.services: Input should be a valid list",
        ),
        (
            {"service": {"servics": ["etcd"]}},
            r"^beacons\.service\.services: Field required \(and 1 more\)",
        ),
        (
            {"disk": {"beacon": "diskusage", "paths": {"/": 120}}},
            r"^beacons\.disk\.paths\./: Input should be less than or equal to 100",
        ),
        ({"load": {"enabled": False}}, r"^beacons\.load: Value error, set at least one"),
        (
            {"svc": {"services": ["x"]}},
            r"^beacons\.svc: unknown beacon type 'svc' "
            r"\(known: chef_backend_status, chef_server_status, config_drift, diskusage, .*, "
            r"scripted, service, time_drift\)",
        ),
        ({"bad/name": {"beacon": "load", "max_1m": 1}}, r"^beacons\.bad/name: invalid beacon name"),
    ],
)
def test_config_errors_name_the_beacon_and_field(
    ctx: BeaconContext, specs: dict[str, dict[str, Any]], message: str
) -> None:
    parsed = {name: BeaconSpec.model_validate(spec) for name, spec in specs.items()}
    with pytest.raises(ConfigError, match=message):
        BeaconRunner(parsed, ctx, lambda tag, data: None, REGISTRY)


def test_beacons_config_rejects_names_that_are_not_one_tag_segment() -> None:
    adapter = TypeAdapter(BeaconsConfig)
    with pytest.raises(ValidationError, match="String should match pattern"):
        adapter.validate_python({"a/b": {}})
    spec = adapter.validate_python({"w": {"beacon": "load", "max_1m": 2, "interval": 3}})["w"]
    assert (spec.beacon, spec.interval, spec.reassert, spec.enabled, spec.announce) == (
        "load",
        3,
        None,
        True,
        False,
    )
    assert spec.params == {"max_1m": 2}
    with pytest.raises(ValidationError, match="greater than 0"):
        BeaconSpec.model_validate({"interval": 0})


def test_refresh_re_emits_any_state_on_its_period(ctx: BeaconContext) -> None:
    emitted: Emitted = []
    runner = runner_for(
        ctx, emitted, scripted={"steps": steps("up", "up", "up", "down", "down"), "refresh": 10}
    )
    for now in (0, 5, 10, 12, 14):
        poll(runner, "scripted", now)
    # up at 0 is silent (first, good); at 5 it was never emitted: refresh sends it; 10 is
    # within 10 s of that; down at 12 is a change; 14 is within the period again
    assert [(tag, data["n"]) for tag, data in emitted] == [
        ("scripted/up", 2),
        ("scripted/down", 4),
    ]
