"""Sandboxed expressions and templates: event data is values, never template source."""

from __future__ import annotations

from typing import Any

import pytest

from reactors.expressions import (
    ExpressionError,
    check_condition,
    check_template,
    evaluate_condition,
    render_text,
    render_value,
    single_expression,
)
from reactors.model import Event
from reactors.view import StaticView, ViewProxy

VIEW = StaticView(
    inventory={"be1": {"role": "backend"}, "be2": {"role": "backend"}, "fe1": {"role": "frontend"}},
    online_ids={"be1", "fe1"},
    observations={"be1": {"pg": {"lag": 0}}, "be2": {"pg": {"lag": 900}}},
)


def context(**data: Any) -> dict[str, Any]:
    event = Event(id="e1", tag="chef/backend/be1/x", minion="be1", data=data)
    return {"event": event.context(), "view": ViewProxy(VIEW)}


def test_single_expression_keeps_native_types() -> None:
    ctx = context(nodes=["be1", "be2"], n=3, nested={"a": [1, 2]})
    assert render_value("{{ event.data.nodes }}", ctx) == ["be1", "be2"]
    assert render_value("{{ event.data.n + 1 }}", ctx) == 4
    assert render_value("{{event.data.nested}}", ctx) == {"a": [1, 2]}
    assert render_value("n={{ event.data.n }}", ctx) == "n=3"
    assert render_value({"k": ["{{ event.minion }}", 5, None]}, ctx) == {"k": ["be1", 5, None]}
    assert render_value("plain text", ctx) == "plain text"


def test_rendered_values_are_copies_not_the_event_data() -> None:
    ctx = context(nodes=["be1"])
    rendered = render_value("{{ event.data.nodes }}", ctx)
    rendered.append("be2")
    assert ctx["event"]["data"]["nodes"] == ["be1"]


@pytest.mark.parametrize("hostile", ["{{ 7*7 }}", "$(rm -rf /)", "; reboot", "{% raw %}x", "`id`"])
def test_event_data_renders_literally(hostile: str) -> None:
    ctx = context(name=hostile)
    assert render_value("{{ event.data.name }}", ctx) == hostile
    assert render_value("svc-{{ event.data.name }}", ctx) == f"svc-{hostile}"
    assert render_text("{{ event.data.name }}", ctx) == hostile
    assert evaluate_condition("event.data.name == '49'", ctx) is False


def test_keys_are_never_rendered() -> None:
    assert render_value({"{{ event.minion }}": "v"}, context()) == {"{{ event.minion }}": "v"}


def test_single_expression_detection() -> None:
    assert single_expression("{{ event.minion }}") == "event.minion"
    assert single_expression(" {{- event.minion -}} ") == "event.minion"
    assert single_expression("{{ a }}{{ b }}") is None
    assert single_expression("x {{ a }}") is None
    assert single_expression("no template") is None


def test_strict_undefined_is_an_error() -> None:
    with pytest.raises(ExpressionError, match="undefined"):
        render_value("{{ event.data.missing }}", context())
    with pytest.raises(ExpressionError, match="undefined"):
        render_value("x{{ event.data.missing }}", context())
    with pytest.raises(ExpressionError, match="undefined"):
        evaluate_condition("event.data.missing == 1", context())


@pytest.mark.parametrize(
    "source",
    [
        "event.__class__",
        "event.data.__class__.__mro__",
        "view._view",
        "view.latest.__globals__",
    ],
)
def test_sandbox_refuses_internals(source: str) -> None:
    with pytest.raises(ExpressionError):
        render_value("{{ " + source + " }}", context(x=1))


def test_templates_cannot_mutate_event_data() -> None:
    ctx = context(x=1, items=[1])
    with pytest.raises(ExpressionError):
        evaluate_condition("event.data.clear() or true", ctx)
    with pytest.raises(ExpressionError):
        evaluate_condition("event.data['items'].append(2) or true", ctx)
    assert ctx["event"]["data"] == {"x": 1, "items": [1]}


def test_non_data_results_are_refused() -> None:
    with pytest.raises(ExpressionError, match="not data"):
        render_value("{{ event.data.items }}", context())


def test_view_queries_in_conditions() -> None:
    ctx = context()
    assert evaluate_condition("view.members('G@role:backend') == ['be1', 'be2']", ctx)
    assert evaluate_condition("view.online('be1') and not view.online('be2')", ctx)
    assert evaluate_condition("view.latest('be2', 'pg').lag > 600", ctx)
    assert evaluate_condition(
        "view.values('G@role:backend', 'pg', 'lag') == {'be1': 0, 'be2': 900}", ctx
    )
    assert evaluate_condition("view.latest('fe1', 'pg') is none", ctx)


def test_bad_group_in_condition_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="condition failed"):
        evaluate_condition("view.members('G@role:x and')", context())


@pytest.mark.parametrize(
    ("source", "message"),
    [("event.data.x ==", "syntax error"), ("evnt.tag", "unknown name 'evnt'"), ("  ", "empty")],
)
def test_check_condition(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        check_condition(source)


def test_check_condition_accepts_jinja_globals_and_filters() -> None:
    check_condition("event.data.n in range(3) and event.tag | length > 0")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ event.minion ", "syntax error"),
        ("x {{ minion }}", "unknown name 'minion'"),
        ("{% for n in nodes %}{{ n }}{% endfor %}", "unknown name 'nodes'"),
    ],
)
def test_check_template(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        check_template(text)


def test_check_template_knows_loop_variables() -> None:
    check_template("{% for n in event.data.nodes %}{{ n }},{% endfor %}")
