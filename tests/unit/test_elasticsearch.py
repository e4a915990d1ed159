"""elasticsearch.* against the in-process stand-in, modern (7.14+) and legacy (< 7.14)."""

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import elasticsearch
import pytest

from minion.config import MinionConfig
from minion.modules import elasticsearch as es_module
from minion.modules.base import Context
from minion.services.supervisor import SupervisorProvider
from saline.errors import ExecutionError
from saline.lab.es_standin import EsStandin


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    config = MinionConfig(id="m1", cachedir=tmp_path / "cache", pki_dir=tmp_path / "pki")
    provider = SupervisorProvider(config.services, config.cachedir / "services")
    return Context(minion_id="m1", config=config, grains={"id": "m1"}, services=provider)


@contextmanager
def serve(standin: EsStandin) -> Iterator[tuple[EsStandin, str]]:
    host, port = standin.start()
    try:
        yield standin, f"http://{host}:{port}"
    finally:
        standin.stop()


@pytest.fixture
def modern() -> Iterator[tuple[EsStandin, str]]:
    with serve(EsStandin(modern=True)) as served:
        yield served


@pytest.fixture
def legacy() -> Iterator[tuple[EsStandin, str]]:
    with serve(EsStandin(modern=False)) as served:
        yield served


@pytest.fixture(params=["modern", "legacy"])
def cluster(request: pytest.FixtureRequest) -> Iterator[tuple[EsStandin, str]]:
    with serve(EsStandin(modern=request.param == "modern")) as served:
        yield served


def official(url: str) -> elasticsearch.Elasticsearch:
    return elasticsearch.Elasticsearch(hosts=[url], request_timeout=5, max_retries=0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the stand-in is faithful where the official client looks ---------------------------------


def test_official_client_accepts_the_modern_standin(modern: tuple[EsStandin, str]) -> None:
    _, url = modern
    with official(url) as client:
        response = client.cluster.health()
        assert response.meta.headers["x-elastic-product"] == "Elasticsearch"
        assert response.body["status"] == "green"
        assert client.info().body["version"]["number"] == "7.17.0"


def test_official_client_refuses_the_legacy_standin(legacy: tuple[EsStandin, str]) -> None:
    _, url = legacy
    with official(url) as client, pytest.raises(elasticsearch.UnsupportedProductError):
        client.cluster.health()


def test_an_8x_server_rejects_the_9x_compat_header_and_health_falls_back(ctx: Context) -> None:
    with serve(EsStandin(modern=True, version="8.15.0")) as (_, url):
        with official(url) as client, pytest.raises(elasticsearch.BadRequestError) as caught:
            client.cluster.health()
        assert "media_type_header_exception" in str(caught.value)
        result = es_module.health(ctx, url)
        assert (result["client"], result["server_version"]) == ("http-fallback", "8.15.0")


# -- health ------------------------------------------------------------------------------------


def test_health_works_against_both_and_names_its_path(ctx: Context) -> None:
    with serve(EsStandin(modern=True)) as (_, url):
        result = es_module.health(ctx, url)
        assert result["client"] == "elasticsearch-py"
        assert result["server_version"] == "7.17.0"
    with serve(EsStandin(modern=False)) as (_, url):
        result = es_module.health(ctx, url)
        assert result["client"] == "http-fallback"
        assert result["server_version"] == "6.8.23"
    assert result == {
        "status": "green",
        "number_of_nodes": 3,
        "unassigned_shards": 0,
        "active_primary_shards": 5,
        "cluster_name": "chef-backend",
        "timed_out": False,
        "server_version": "6.8.23",
        "client": "http-fallback",
    }


@pytest.mark.parametrize(
    ("status", "unassigned", "primaries"), [("yellow", 10, 5), ("red", 3, 4), ("green", 0, 5)]
)
def test_set_health_shows_in_health(
    ctx: Context, cluster: tuple[EsStandin, str], status: str, unassigned: int, primaries: int
) -> None:
    standin, url = cluster
    standin.set_health(status)
    result = es_module.health(ctx, url)
    assert (result["status"], result["unassigned_shards"]) == (status, unassigned)
    assert result["active_primary_shards"] == primaries


def test_wait_for_status_that_times_out_reports_timed_out(
    ctx: Context, cluster: tuple[EsStandin, str]
) -> None:
    standin, url = cluster
    standin.set_health("red")
    result = es_module.health(ctx, url, timeout=0.2, wait_for_status="yellow")
    assert result["timed_out"] is True
    assert result["status"] == "red"


def test_wait_for_status_answers_408_on_the_wire(legacy: tuple[EsStandin, str]) -> None:
    standin, url = legacy
    standin.set_health("yellow")
    with official(url) as client, pytest.raises(elasticsearch.ApiError) as caught:
        client.cluster.health(wait_for_status="green", timeout="100ms")
    assert caught.value.meta.status == 408
    assert caught.value.body["timed_out"] is True


def test_wait_for_status_returns_when_the_cluster_heals(
    ctx: Context, modern: tuple[EsStandin, str]
) -> None:
    standin, url = modern
    standin.set_health("yellow")
    # a reroute from another thread while health waits: whether it lands before or during
    # the wait, the answer must be green and not timed out (the wait may last up to 30 s)
    healer = threading.Timer(0.2, standin.reroute, kwargs={"retry_failed": True})
    healer.start()
    result = es_module.health(ctx, url, timeout=30, wait_for_status="green")
    healer.join()
    assert (result["status"], result["timed_out"]) == ("green", False)


# -- shards, explain, reroute ------------------------------------------------------------------


def test_shards_lists_unassigned_copies(ctx: Context, cluster: tuple[EsStandin, str]) -> None:
    standin, url = cluster
    standin.set_health("yellow")
    result = es_module.shards(ctx, url)
    assert len(result["shards"]) == 15
    assert len(result["unassigned"]) == 10
    assert {row["prirep"] for row in result["unassigned"]} == {"r"}
    assert all(row["node"] is None for row in result["unassigned"])


def test_allocation_explain(ctx: Context, cluster: tuple[EsStandin, str]) -> None:
    standin, url = cluster
    healthy = es_module.allocation_explain(ctx, url)
    assert healthy["unassigned_shard"] is False
    assert "unable to find any unassigned shards" in healthy["message"]
    standin.set_health("red")
    result = es_module.allocation_explain(ctx, url)
    assert result["unassigned_shard"] is True
    explanation = result["explanation"]
    assert (explanation["index"], explanation["shard"], explanation["primary"]) == ("chef", 0, True)
    deciders = explanation["node_allocation_decisions"][0]["deciders"]
    assert deciders[0]["decider"] == "max_retry"
    assert "retry_failed=true" in deciders[0]["explanation"]


def test_reroute_heals_yellow_only_once_the_node_is_back(
    ctx: Context, cluster: tuple[EsStandin, str]
) -> None:
    standin, url = cluster
    standin.fail_node()
    assert es_module.health(ctx, url)["status"] == "yellow"
    explained = es_module.allocation_explain(ctx, url)["explanation"]
    assert explained["node_allocation_decisions"][0]["deciders"][0]["decider"] == "same_shard"

    assert es_module.reroute_retry_failed(ctx, url)["acknowledged"] is True
    assert es_module.health(ctx, url)["status"] == "yellow"  # two nodes cannot hold three copies

    standin.recover_node()
    assert es_module.health(ctx, url)["unassigned_shards"] == 5  # nothing allocates by itself
    result = es_module.reroute_retry_failed(ctx, url)
    assert result["client"] == ("elasticsearch-py" if standin.modern else "http-fallback")
    after = es_module.health(ctx, url)
    assert (after["status"], after["unassigned_shards"], after["number_of_nodes"]) == (
        "green",
        0,
        3,
    )


def test_reroute_retry_failed_fixes_a_red_cluster(
    ctx: Context, modern: tuple[EsStandin, str]
) -> None:
    standin, url = modern
    standin.set_health("red")
    standin.reroute(retry_failed=False)
    assert es_module.health(ctx, url)["status"] == "red"  # failed shards need retry_failed
    es_module.reroute_retry_failed(ctx, url)
    assert es_module.health(ctx, url)["status"] == "green"


# -- errors and the lab ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(es_module.FUNCTIONS))
def test_unreachable_url_is_a_clear_error(ctx: Context, name: str) -> None:
    fn: Callable[..., dict[str, Any]] = es_module.FUNCTIONS[name]
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ExecutionError, match=rf"elasticsearch at {url} is unreachable"):
        fn(ctx, url, timeout=2)


def test_unknown_path_is_an_es_shaped_error(modern: tuple[EsStandin, str]) -> None:
    _, url = modern
    with official(url) as client, pytest.raises(elasticsearch.BadRequestError) as caught:
        client.perform_request("GET", "/_nope", headers={"accept": "application/json"})
    assert caught.value.body["error"]["type"] == "illegal_argument_exception"


def test_state_file_changes_health_from_another_process(ctx: Context, tmp_path: Path) -> None:
    state = tmp_path / "es-state.json"
    state.write_text(json.dumps({"health": "yellow", "down": ["es-3"]}))
    with serve(EsStandin(modern=False, state_file=state)) as (_, url):
        before = es_module.health(ctx, url)
        assert (before["status"], before["number_of_nodes"]) == ("yellow", 2)
        state.write_text(json.dumps({"health": "red"}) + " " * 8)  # size differs: a change
        after = es_module.health(ctx, url)
        assert (after["status"], after["number_of_nodes"]) == ("red", 3)


def test_loading_the_module_does_not_load_the_client() -> None:
    probe = "import sys, minion.modules.elasticsearch; print('elasticsearch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert (loaded.returncode, loaded.stdout.strip()) == (0, "False"), loaded.stderr


def test_http_client_choice_reads_both_kinds_of_server_without_the_official_client(
    ctx: Context, cluster: tuple[EsStandin, str]
) -> None:
    standin, url = cluster
    standin.set_health("yellow")
    result = es_module.health(ctx, url, client="http")
    assert (result["status"], result["client"]) == ("yellow", "http")


def test_unknown_client_choice_is_refused(ctx: Context, modern: tuple[EsStandin, str]) -> None:
    with pytest.raises(ExecutionError, match="client must be one of auto, http"):
        es_module.health(ctx, modern[1], client="grpc")
