"""What network data may hold: JSON-shaped, bounded in depth and size, problems named."""

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from master.trust import TrustedGrains
from saline.masking import MASK, redact_arguments
from saline.values import shape_problem, value_problem

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_json)
def test_json_shaped_values_pass(value: Any) -> None:
    assert shape_problem(value, max_depth=100) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"a": [1, {"b": b"\xff"}]}, "a[1].b: bytes is not a JSON value"),
        ({"t": msgpack.Timestamp(1, 0)}, "t: Timestamp is not a JSON value"),
        ({"x": msgpack.ExtType(1, b"")}, "x: ExtType is not a JSON value"),
        ({"n": float("nan")}, "n: nan is not a JSON number"),
        ({1: "x"}, "top: key of type int, not text"),
        ({"s": {1, 2}}, "s: set is not a JSON value"),
    ],
)
def test_problems_name_where_they_are(value: Any, problem: str) -> None:
    assert shape_problem(value) == problem


def test_depth_is_bounded_without_recursion() -> None:
    deep: Any = None
    for _ in range(100_000):
        deep = [deep]
    assert shape_problem(deep, max_depth=32) == "[0]" * 32 + ": nested deeper than 32 levels"
    shallow: Any = None
    for _ in range(31):
        shallow = [shallow]
    assert shape_problem(shallow, max_depth=32) is None


def test_bytes_may_be_allowed_for_returns() -> None:
    assert shape_problem({"data": b"\xff"}, allow_bytes=True) is None
    assert shape_problem({"data": msgpack.ExtType(1, b"")}, allow_bytes=True) is not None


def test_size_is_the_packed_size() -> None:
    value = {"k": "x" * 1000}
    size = len(msgpack.packb(value))
    assert value_problem(value, max_bytes=size) is None
    assert value_problem(value, max_bytes=size - 1) == f"{size} bytes exceed the cap of {size - 1}"


def test_trusted_grains_contradicted_only_where_both_speak() -> None:
    trusted = {"role": "frontend", "dc": "a"}
    assert TrustedGrains.contradiction(trusted, {"role": "frontend", "os": "x"}) is None
    assert TrustedGrains.contradiction(trusted, {}) is None
    assert (
        TrustedGrains.contradiction(trusted, {"role": "backend", "dc": "b"})
        == "dc claimed 'b', trusted 'a', role claimed 'backend', trusted 'frontend'"
    )


def test_job_arguments_named_like_secrets_are_redacted_at_any_depth() -> None:
    args, kwargs = redact_arguments(
        ["plain", {"db": {"password": "p", "user": "u"}}, "marked"],
        {
            "password": "a",
            "admin_password": "b",
            "api_token": "c",
            "key": "d",
            "text": "e",
            "opts": [{"secret": "f", "mode": "0600"}],
            "marked_kw": "g",
        },
        marked=["2", "marked_kw"],
    )
    assert args == ["plain", {"db": {"password": MASK, "user": "u"}}, MASK]
    assert kwargs == {
        "password": MASK,
        "admin_password": MASK,
        "api_token": MASK,
        "key": MASK,
        "text": "e",
        "opts": [{"secret": MASK, "mode": "0600"}],
        "marked_kw": MASK,
    }
