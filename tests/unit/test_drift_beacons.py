"""time_drift against the SNTP stand-in and hand-made replies on real UDP sockets,
config_drift on real chef-backend.rb files, and the minion's ``env`` setting."""

import asyncio
import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

import minion.__main__ as minion_main
import minion.daemon
import saline.logs
from minion.beacons.base import Beacon, BeaconContext, Observation
from minion.beacons.config import BeaconsConfig
from minion.beacons.config_drift import ConfigDriftBeacon, parse_value
from minion.beacons.registry import BEACONS
from minion.beacons.runner import BeaconRunner
from minion.beacons.time_drift import TimeDriftBeacon, from_ntp, to_ntp
from minion.config import MinionConfig, apply_env, load_minion_config
from minion.services.supervisor import SupervisorProvider
from saline.errors import ConfigError
from saline.lab.ntp_standin import NtpStandin

REPO = Path(__file__).resolve().parents[2]
PACKET = struct.Struct("!BBbbII4sQQQQ")


@pytest.fixture
def ctx(tmp_path: Path) -> BeaconContext:
    return BeaconContext("be1", SupervisorProvider({}, tmp_path / "svc"))


def make(cls: type[Beacon], ctx: BeaconContext, **params: Any) -> Beacon:
    return cls(cls.Config.model_validate(params), ctx)


def test_both_beacons_are_registered() -> None:
    assert BEACONS["time_drift"] is TimeDriftBeacon
    assert BEACONS["config_drift"] is ConfigDriftBeacon


# -- time_drift -----------------------------------------------------------------------------


@pytest.fixture
def ntp(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A stand-in SNTP server on an ephemeral loopback port: (its skew file, its port)."""
    skew_file = tmp_path / "skew"
    standin = NtpStandin(skew_file)
    _, port = standin.start("127.0.0.1", 0)
    try:
        yield skew_file, port
    finally:
        standin.stop()


@pytest.mark.parametrize(
    ("skew", "state", "bad"),
    [("3.0", "drift", True), ("0.2", "ok", False), ("-3.0", "drift", True), (None, "ok", False)],
)
def test_time_drift_against_the_standin(
    ntp: tuple[Path, int], ctx: BeaconContext, skew: str | None, state: str, bad: bool
) -> None:
    skew_file, port = ntp
    if skew is not None:
        skew_file.write_text(skew + "\n")
    [obs] = make(TimeDriftBeacon, ctx, port=port).check()
    assert (obs.key, obs.state, obs.bad) == (f"127.0.0.1:{port}", state, bad)
    assert obs.data["offset"] == pytest.approx(float(skew or 0), abs=0.05)
    assert obs.data["offset"] == round(obs.data["offset"], 3)
    assert (obs.data["server"], obs.data["port"], obs.data["max_offset"]) == (
        "127.0.0.1",
        port,
        1.5,
    )
    assert 0 <= obs.data["delay"] < 1


def test_time_drift_reads_the_skew_at_each_check(ntp: tuple[Path, int], ctx: BeaconContext) -> None:
    skew_file, port = ntp
    beacon = make(TimeDriftBeacon, ctx, port=port, max_offset=0.5)
    skew_file.write_text("0.7")
    assert beacon.check()[0].state == "drift"
    skew_file.write_text("0.3")
    assert beacon.check()[0].state == "ok"
    skew_file.write_text("not a number")  # a broken file means no skew, not a dead server
    [obs] = beacon.check()
    assert (obs.state, obs.data["offset"]) == ("ok", pytest.approx(0, abs=0.05))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_time_drift_nothing_listening_is_unreachable(ctx: BeaconContext) -> None:
    [obs] = make(TimeDriftBeacon, ctx, port=free_port(), timeout=5).check()
    assert (obs.state, obs.bad) == ("unreachable", True)
    assert "refused" in obs.data["error"].lower()
    assert "offset" not in obs.data  # the master's comparison must skip this node


def test_time_drift_silent_server_times_out(ctx: BeaconContext) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        [obs] = make(TimeDriftBeacon, ctx, port=port, timeout=0.2).check()
    assert (obs.state, obs.data["error"]) == ("unreachable", "timed out")


def answered(ctx: BeaconContext, reply: Callable[[bytes], bytes]) -> Observation:
    """Check time_drift against a socket that answers the request with ``reply(request)``."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        ThreadPoolExecutor(1) as pool,
    ):
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        beacon = make(TimeDriftBeacon, ctx, port=server.getsockname()[1], timeout=5)
        future = pool.submit(beacon.check)
        request, peer = server.recvfrom(1024)
        server.sendto(reply(request), peer)
        [obs] = future.result(timeout=5)
    return obs


def server_reply(
    request: bytes,
    *,
    first: int = 0x24,
    stratum: int = 2,
    refid: bytes = b"GPS\0",
    echo: bool = True,
) -> bytes:
    *_, transmit = PACKET.unpack(request)
    now = to_ntp(from_ntp(transmit))
    return PACKET.pack(first, stratum, 6, -20, 0, 0, refid, now, transmit if echo else 1, now, now)


def test_time_drift_a_genuine_reply_by_hand(ctx: BeaconContext) -> None:
    obs = answered(ctx, server_reply)
    assert obs.state == "ok"
    assert obs.data["offset"] == pytest.approx(0, abs=0.05)


def test_time_drift_request_is_an_sntp_v4_client_packet(ctx: BeaconContext) -> None:
    seen: list[bytes] = []

    def record(request: bytes) -> bytes:
        seen.append(request)
        return server_reply(request)

    answered(ctx, record)
    [request] = seen
    assert len(request) == 48
    assert request[0] == 0x23  # LI 0, version 4, mode 3 (client)
    *_, transmit = PACKET.unpack(request)
    assert transmit != 0


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (
            lambda r: server_reply(r, stratum=0, refid=b"RATE"),
            "kiss-of-death from the server (RATE)",
        ),
        (lambda r: server_reply(r, echo=False), "originate timestamp mismatch"),
        (lambda r: server_reply(r, first=0xE4), "not synchronised"),
        (lambda r: server_reply(r, first=0x23), "reply mode is 3"),
        (lambda r: b"\x24" * 20, "short reply (20 bytes)"),
    ],
)
def test_time_drift_unusable_replies_are_unreachable(
    ctx: BeaconContext, reply: Callable[[bytes], bytes], error: str
) -> None:
    obs = answered(ctx, reply)
    assert (obs.state, obs.bad) == ("unreachable", True)
    assert error in obs.data["error"]
    assert "offset" not in obs.data


def test_ntp_timestamps_round_trip() -> None:
    assert to_ntp(0.0) == 2_208_988_800 << 32
    assert from_ntp(to_ntp(1_700_000_000.25)) == pytest.approx(1_700_000_000.25, abs=1e-6)


def test_standin_ignores_what_is_not_a_client_request() -> None:
    standin = NtpStandin()
    assert standin.reply(b"\x23" * 10, 0.0) is None  # short
    assert standin.reply(bytes([0x24]) + bytes(47), 0.0) is None  # a server packet
    reply = standin.reply(bytes([0x1B]) + bytes(47), 0.0)  # an SNTP v3 client
    assert reply is not None and reply[0] == 0x1C  # answered in v3, mode 4


def test_standin_runs_from_a_shell(tmp_path: Path, ctx: BeaconContext) -> None:
    skew_file = tmp_path / "skew"
    skew_file.write_text("3.0")
    argv = [sys.executable, "-m", "saline.lab.ntp_standin", "--port", "0"]
    proc = subprocess.Popen(
        [*argv, "--skew-file", str(skew_file)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the socket is bound
        assert line.startswith("ntp-standin listening on udp://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        [obs] = make(TimeDriftBeacon, ctx, port=port).check()
        assert (obs.state, obs.data["offset"]) == ("drift", pytest.approx(3.0, abs=0.05))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_time_drift_announced_through_the_runner(ntp: tuple[Path, int], ctx: BeaconContext) -> None:
    """With ``announce``, the first (good) offset reaches the master, then only changes."""
    skew_file, port = ntp
    skew_file.write_text("0.2")
    specs = TypeAdapter(BeaconsConfig).validate_python(
        {"time_drift": {"port": port, "announce": True}}
    )
    emitted: list[tuple[str, dict[str, Any]]] = []
    runner = BeaconRunner(specs, ctx, lambda tag, data: emitted.append((tag, data)), BEACONS)
    asyncio.run(runner.poll_once("time_drift", 0))
    asyncio.run(runner.poll_once("time_drift", 1))
    skew_file.write_text("3.0")
    asyncio.run(runner.poll_once("time_drift", 2))
    assert [(tag, data["previous"]) for tag, data in emitted] == [
        ("time_drift/ok", None),
        ("time_drift/drift", "ok"),
    ]
    assert emitted[0][1]["offset"] == pytest.approx(0.2, abs=0.05)


def test_time_drift_config() -> None:
    cfg = TimeDriftBeacon.Config.model_validate({})
    assert cfg.model_dump() == {"server": "127.0.0.1", "port": 123, "max_offset": 1.5, "timeout": 2}
    with pytest.raises(ValidationError, match="less than or equal to 65535"):
        TimeDriftBeacon.Config.model_validate({"port": 70000})
    with pytest.raises(ValidationError, match="greater than 0"):
        TimeDriftBeacon.Config.model_validate({"max_offset": 0})


# -- config_drift ---------------------------------------------------------------------------

CIDRS = "postgresql.md5_auth_cidr_addresses"
#: the line format of the reference's chef-backend.rb
REFERENCE = """\
publish_address '10.0.0.1'
postgresql.md5_auth_cidr_addresses = ["samehost", "samenet", "192.168.1.3/24"]
"""
REFERENCE_VALUE = ["samehost", "samenet", "192.168.1.3/24"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "chef-backend.rb"
    path.write_text(text)
    return str(path)


def test_config_drift_reference_file_without_expectations(
    tmp_path: Path, ctx: BeaconContext
) -> None:
    path = write(tmp_path, REFERENCE)
    [obs] = make(ConfigDriftBeacon, ctx, path=path).check()
    assert (obs.key, obs.state, obs.bad, obs.transient) == (path, "ok", False, False)
    assert obs.data == {
        "path": path,
        "settings": {CIDRS: REFERENCE_VALUE},
        # the canonical JSON: sorted keys, no whitespace
        "digest": sha(
            '{"postgresql.md5_auth_cidr_addresses":["samehost","samenet","192.168.1.3/24"]}'
        ),
    }


def test_config_drift_two_keys_and_expectations(tmp_path: Path, ctx: BeaconContext) -> None:
    path = write(tmp_path, REFERENCE)
    keys = ["publish_address", CIDRS]
    [ok] = make(
        ConfigDriftBeacon,
        ctx,
        path=path,
        keys=keys,
        expected={CIDRS: REFERENCE_VALUE, "publish_address": "10.0.0.1"},
    ).check()
    assert ok.state == "ok"
    assert ok.data["settings"] == {"publish_address": "10.0.0.1", CIDRS: REFERENCE_VALUE}
    assert ok.data["digest"] == sha(
        '{"postgresql.md5_auth_cidr_addresses":["samehost","samenet","192.168.1.3/24"],'
        '"publish_address":"10.0.0.1"}'
    )

    wanted = ["samehost", "samenet", "127.0.1.0/24"]
    [drifted] = make(ConfigDriftBeacon, ctx, path=path, keys=keys, expected={CIDRS: wanted}).check()
    assert (drifted.state, drifted.bad) == ("drifted", True)
    assert drifted.data["differences"] == [
        {"key": CIDRS, "expected": wanted, "actual": REFERENCE_VALUE}
    ]
    assert drifted.data["digest"] == ok.data["digest"]


def test_config_drift_unset_key_is_null(tmp_path: Path, ctx: BeaconContext) -> None:
    path = write(tmp_path, "publish_address '10.0.0.1'\n")
    [obs] = make(ConfigDriftBeacon, ctx, path=path).check()
    assert (obs.state, obs.data["settings"]) == ("ok", {CIDRS: None})
    [obs] = make(ConfigDriftBeacon, ctx, path=path, expected={CIDRS: ["samehost"]}).check()
    assert obs.state == "drifted"
    assert obs.data["differences"] == [{"key": CIDRS, "expected": ["samehost"], "actual": None}]


def test_config_drift_digest_ignores_formatting_only(tmp_path: Path, ctx: BeaconContext) -> None:
    def digest_of(name: str, text: str) -> str:
        (tmp_path / name).write_text(text)
        return make(ConfigDriftBeacon, ctx, path=str(tmp_path / name)).check()[0].data["digest"]

    reformatted = """\
# chef-backend.rb, rewritten by hand
# postgresql.md5_auth_cidr_addresses = ["commented", "out"]
=begin
postgresql.md5_auth_cidr_addresses = ["in", "a", "block", "comment"]
=end
postgresql.md5_auth_cidr_addresses = ["old"]
postgresql.md5_auth_cidr_addresses = [   # the last assignment wins, as in Ruby
  'samehost',
  "samenet",
  '192.168.1.3/24',
]
elasticsearch.heap_size = File.read('/etc/heap').to_i   # not watched: ignored
"""
    reference = digest_of("a.rb", REFERENCE)
    assert digest_of("b.rb", reformatted) == reference
    other = REFERENCE.replace("192.168.1.3/24", "192.168.1.4/24")
    assert digest_of("c.rb", other) != reference


def test_config_drift_missing_file(tmp_path: Path, ctx: BeaconContext) -> None:
    path = str(tmp_path / "absent.rb")
    [obs] = make(ConfigDriftBeacon, ctx, path=path).check()
    assert (obs.state, obs.bad) == ("missing", True)
    assert obs.data == {
        "path": path,
        "settings": {CIDRS: None},
        "digest": sha(f'{{"{CIDRS}":null}}'),
    }


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (f"{CIDRS} = node['cidrs']", "line 2: postgresql.md5_auth_cidr_addresses: expected"),
        (f'{CIDRS} = ["samehost", "#{{net}}"]', "string interpolation is not a literal"),
        (f'{CIDRS} = ["samehost"', "unterminated list"),
        (f'{CIDRS} = ["samehost" "samenet"]', "expected ',' or ']' in the list"),
        (f"{CIDRS} = ['samehost'].freeze", "not a literal at '.freeze'"),
    ],
)
def test_config_drift_unparsable_value(
    tmp_path: Path, ctx: BeaconContext, line: str, error: str
) -> None:
    path = write(tmp_path, f"publish_address '10.0.0.1'\n{line}\n")
    [obs] = make(ConfigDriftBeacon, ctx, path=path, keys=["publish_address", CIDRS]).check()
    assert (obs.state, obs.bad) == ("unparsable", True)
    assert error in obs.data["error"]
    assert obs.data["settings"] == {"publish_address": "10.0.0.1", CIDRS: None}
    assert len(obs.data["digest"]) == 64


def test_config_drift_unreadable_path(tmp_path: Path, ctx: BeaconContext) -> None:
    [obs] = make(ConfigDriftBeacon, ctx, path=str(tmp_path)).check()
    assert obs.state == "unparsable"
    assert obs.data["error"].startswith("cannot read:")


def test_config_drift_changed_within_a_state(tmp_path: Path, ctx: BeaconContext) -> None:
    path = write(tmp_path, REFERENCE)
    beacon = make(ConfigDriftBeacon, ctx, path=path, expected={CIDRS: REFERENCE_VALUE})
    [first] = beacon.check()
    assert first.state == "ok"

    # leaving ok is a change of state, reported as such
    write(tmp_path, REFERENCE.replace("samenet", "10.1.0.0/16"))
    [drifted] = beacon.check()
    assert (drifted.state, drifted.transient) == ("drifted", False)

    # other values, still drifted: a one-off "changed" carries the new digest to the master
    write(tmp_path, REFERENCE.replace("samenet", "10.2.0.0/16"))
    [changed] = beacon.check()
    assert (changed.state, changed.bad, changed.transient) == ("changed", True, True)
    assert changed.data["previous_digest"] == drifted.data["digest"]
    assert changed.data["previous_settings"] == drifted.data["settings"]
    assert changed.data["settings"][CIDRS][1] == "10.2.0.0/16"
    assert changed.data["differences"][0]["actual"][1] == "10.2.0.0/16"
    assert beacon.check()[0].state == "drifted"

    # without expectations the state stays ok, and a change is reported the same way
    loose = make(ConfigDriftBeacon, ctx, path=path)
    loose.check()
    write(tmp_path, REFERENCE)
    [changed] = loose.check()
    assert (changed.state, changed.data["digest"]) == ("changed", first.data["digest"])
    assert loose.check()[0].state == "ok"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("'10.0.0.1'", "10.0.0.1"),
        ('"10.0.0.1"  # trailing comment', "10.0.0.1"),
        ("42", 42),
        ("-1.5", -1.5),
        ("true", True),
        ("false", False),
        ("[]", []),
        ("['a', \"b\",]", ["a", "b"]),
        (r"'it\'s a \d'", "it's a \\d"),
        (r'"tab\there \"q\""', 'tab\there "q"'),
    ],
)
def test_parse_value_literals(text: str, value: Any) -> None:
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text", ["", "nil", "1 2", "[[1]]", r'"\u00e9"', "'open", "%w(a b)"])
def test_parse_value_refuses_what_is_not_a_literal(text: str) -> None:
    with pytest.raises(ValueError):
        parse_value(text)


def test_config_drift_config() -> None:
    cfg = ConfigDriftBeacon.Config.model_validate({"path": "/etc/chef-backend/chef-backend.rb"})
    assert (cfg.keys, cfg.expected) == ([CIDRS], None)
    exact = ConfigDriftBeacon.Config.model_validate(
        {"path": "/x", "keys": ["a", "b", "c"], "expected": {"a": True, "b": 1, "c": ["x"]}}
    )
    assert exact.expected == {"a": True, "b": 1, "c": ["x"]}
    assert type(exact.expected["a"]) is bool
    with pytest.raises(ValidationError, match="path\n  Field required"):
        ConfigDriftBeacon.Config.model_validate({})
    with pytest.raises(ValidationError, match="not an absolute path"):
        ConfigDriftBeacon.Config.model_validate({"path": "chef-backend.rb"})
    with pytest.raises(ValidationError, match="expected names keys that are not in keys: b"):
        ConfigDriftBeacon.Config.model_validate({"path": "/x", "keys": ["a"], "expected": {"b": 1}})
    with pytest.raises(ValidationError, match="String should match pattern"):
        ConfigDriftBeacon.Config.model_validate({"path": "/x", "keys": ["postgresql['x']"]})


def test_config_drift_runs_from_a_shell(tmp_path: Path) -> None:
    path = write(tmp_path, REFERENCE)
    argv = [sys.executable, "-m", "minion.beacons", "config_drift", json.dumps({"path": path})]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["data"]["settings"] == {CIDRS: REFERENCE_VALUE}


# -- the minion's env setting ---------------------------------------------------------------

SHIM = "SALINE_CHEF_BACKEND_CTL"


def minion_config(tmp_path: Path, env: dict[str, str]) -> Path:
    path = tmp_path / "minion.yaml"
    path.write_text(json.dumps({"id": "be1", "env": env}))  # JSON is YAML
    return path


def test_env_is_applied_over_the_inherited_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SHIM, "/usr/bin/chef-backend-ctl")  # restored after the test
    config, _ = load_minion_config(str(minion_config(tmp_path, {SHIM: "/lab/be1/ctl"})))
    assert config.env == {SHIM: "/lab/be1/ctl"}
    apply_env(config)
    assert os.environ[SHIM] == "/lab/be1/ctl"
    assert MinionConfig().env == {}


def test_main_applies_env_before_the_minion_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SHIM, "inherited")
    seen: list[str | None] = []
    monkeypatch.setattr(
        minion.daemon, "run_minion", lambda config, *_, **__: seen.append(os.getenv(SHIM))
    )
    monkeypatch.setattr(saline.logs, "setup_logging", lambda *args: None)
    monkeypatch.setattr(saline.logs, "set_process_title", lambda *args: None)
    path = minion_config(tmp_path, {SHIM: "/lab/be1/ctl"})
    assert minion_main.main(["-c", str(path)]) == 0
    assert seen == ["/lab/be1/ctl"]


@pytest.mark.parametrize("name", ["1BAD", "A-B", "A=B", ""])
def test_env_rejects_names_that_are_not_posix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = minion_config(tmp_path, {"OK": "1", name: "x"})
    message = f"^{re.escape(str(path))}:1: env: Value error, invalid environment variable name "
    message += re.escape(repr(name))
    with pytest.raises(ConfigError, match=message):
        load_minion_config(str(path))
    assert minion_main.main(["-c", str(path)]) == 1
    assert f"invalid environment variable name '{name}'" in capsys.readouterr().err
