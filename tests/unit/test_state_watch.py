"""``watch`` the way SaltStack runs it, counted by side effects on the real node.

``mod_watch`` follows a state only when a watched state changed *and* the state's own
call changed nothing: a ``cmd.run`` runs its command once, a stopped ``service.running``
is started once (not started and then restarted), a running one is restarted once.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minion.config import MinionConfig, ServiceSpec
from minion.modules.base import Context
from minion.services.supervisor import SupervisorProvider
from states.engine import compile_states, run
from states.modules import REGISTRY
from states.modules.base import StateContext
from tests.support import poll
from tests.unit.test_state_engine import Files
from tests.unit.test_state_service import minion_call


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Context, Path]]:
    starts = tmp_path / "starts"
    # every start of the service appends a line: the start count is the line count
    argv = ["sh", "-c", f"echo start >> {starts}; exec sleep 300"]
    config = MinionConfig(
        id="be1",
        cachedir=tmp_path / "cache",
        pki_dir=tmp_path / "pki",
        services={"app": ServiceSpec(argv=argv, stop_timeout=2)},
    )
    provider = SupervisorProvider(config.services, tmp_path / "services")
    yield Context(minion_id="be1", config=config, grains={}, services=provider), tmp_path
    provider.stop("app")


def _apply(mctx: Context, text: str, test: bool = False) -> dict[str, Any]:
    call = minion_call(mctx)
    files = Files({"main.yaml": text})
    chunks = compile_states(
        ["main"], files=files, minion_id="be1", grains={}, pillar={}, call=call, registry=REGISTRY
    )
    ctx = StateContext(minion_id="be1", grains={}, pillar={}, test=test, call=call, files=files)
    return {r.key: r for r in run(chunks, ctx, REGISTRY)}


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_command_watching_a_changed_file_runs_once(node: tuple[Context, Path]) -> None:
    mctx, tmp = node
    conf, ran = tmp / "app.conf", tmp / "ran"
    text = f"""
{conf}:
  file.managed:
    - contents: "v=1"
echo run >> {ran}:
  cmd.run:
    - shell: true
    - watch:
      - file: {conf}
echo wait >> {ran}:
  cmd.wait:
    - shell: true
    - watch:
      - file: {conf}
"""
    results = _apply(mctx, text)
    assert all(r.result for r in results.values()), results
    assert ran.read_text().splitlines() == ["run", "wait"]  # each command once
    _apply(mctx, text)  # the file is unchanged: cmd.run runs (it always does), wait does not
    assert ran.read_text().splitlines() == ["run", "wait", "run"]


def test_a_stopped_service_watching_a_changed_file_is_started_once(
    node: tuple[Context, Path],
) -> None:
    mctx, tmp = node
    conf, starts = tmp / "app.conf", tmp / "starts"

    def state(contents: str) -> str:
        return f"""
{conf}:
  file.managed:
    - contents: "{contents}"
app:
  service.running:
    - watch:
      - file: {conf}
"""

    results = _apply(mctx, state("v=1"))
    assert results["service.running:app"].result is True, results
    poll(lambda: _lines(starts) == 1, timeout=5)
    assert _lines(starts) == 1  # started, not started and then restarted
    # running, and the file changes: restarted exactly once
    results = _apply(mctx, state("v=2"))
    assert results["service.running:app"].changes, results
    poll(lambda: _lines(starts) == 2, timeout=5)
    assert _lines(starts) == 2
    _apply(mctx, state("v=2"))  # nothing changed: left alone
    assert _lines(starts) == 2


def test_test_mode_says_once_what_a_watching_service_would_do(
    node: tuple[Context, Path],
) -> None:
    mctx, tmp = node
    conf, starts = tmp / "app.conf", tmp / "starts"
    text = f"""
{conf}:
  file.managed:
    - contents: "v=1"
app:
  service.running:
    - watch:
      - file: {conf}
"""
    results = _apply(mctx, text, test=True)
    service = results["service.running:app"]
    assert service.result is None and service.comment == "would start service app"
    assert not conf.exists() and _lines(starts) == 0, "test mode changes nothing"
