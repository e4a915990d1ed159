"""The one sandboxed Jinja module: what each named environment does, and who uses which."""

from pathlib import Path

import jinja2
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

import reactors.expressions
from master.pillar import PillarCompiler, PillarError
from reactors.runbook import RunbookError, evaluate
from saline.errors import StateError
from saline.templating import (
    FILE_TEMPLATES,
    RULE_TEMPLATES,
    RenderError,
    compile_expression,
    compile_template,
    render,
    sandbox,
)
from states.render import render_jinja


def test_named_environments_and_their_parameters() -> None:
    assert type(FILE_TEMPLATES) is SandboxedEnvironment
    assert isinstance(RULE_TEMPLATES, ImmutableSandboxedEnvironment)
    assert FILE_TEMPLATES.keep_trailing_newline and not RULE_TEMPLATES.keep_trailing_newline
    for env in (FILE_TEMPLATES, RULE_TEMPLATES):
        assert env.undefined is jinja2.StrictUndefined
        assert env.autoescape is False
    # one instance per combination of parameters
    assert sandbox(immutable=True) is RULE_TEMPLATES
    assert sandbox(immutable=False, keep_trailing_newline=True) is FILE_TEMPLATES


def test_every_user_renders_in_the_one_module() -> None:
    assert reactors.expressions._ENV is RULE_TEMPLATES


def test_both_environments_refuse_python_internals() -> None:
    for env in (FILE_TEMPLATES, RULE_TEMPLATES):
        with pytest.raises(jinja2.exceptions.SecurityError):
            compile_template(env, "{{ ''.__class__.__mro__ }}").render()


def test_file_templates_are_strict_keep_newlines_and_do_not_escape() -> None:
    assert render("a <{{ x }}> &\n", name="t", context={"x": "b"}) == "a <b> &\n"
    with pytest.raises(RenderError, match=r"^t:1: undefined in template: 'nope' is undefined"):
        render("{{ nope }}", name="t", context={})
    with pytest.raises(RenderError, match=r"^t:2: template syntax error"):
        render("ok\n{{ x", name="t", context={})


def test_file_templates_may_build_lists_rule_templates_may_not_mutate_data() -> None:
    # state files keep today's mutable sandbox: a template may grow its own list
    out = render("{% set l = [] %}{{ l.append(1) }}{{ l }}", name="t", context={})
    assert out == "None[1]"
    data = {"items": [1]}
    with pytest.raises(jinja2.exceptions.SecurityError):
        compile_expression(RULE_TEMPLATES, "data['items'].append(2)")(data=data)
    assert data == {"items": [1]}


def test_expressions_keep_native_types_and_undefined_raises() -> None:
    assert compile_expression(RULE_TEMPLATES, "[a, a + 1]")(a=1) == [1, 2]
    missing = compile_expression(RULE_TEMPLATES, "missing")()
    assert isinstance(missing, jinja2.StrictUndefined)  # not None: raises once used
    with pytest.raises(jinja2.UndefinedError):
        bool(missing)
    assert compile_template(RULE_TEMPLATES, "x") is compile_template(RULE_TEMPLATES, "x")


def test_functions_raising_on_purpose_pass_through() -> None:
    def boom() -> str:
        raise StateError("f.yaml: saline['x.y'] failed: no")

    with pytest.raises(StateError, match=r"saline\['x.y'\] failed"):
        render("{{ boom() }}", name="f.yaml", context={"boom": boom})


def test_state_files_errors_are_state_errors() -> None:
    with pytest.raises(StateError, match=r"^app\.yaml:1: undefined in template"):
        render_jinja("{{ pillar.nope }}", name="app.yaml", context={"pillar": {}})


def test_pillar_template_errors_are_pillar_errors(tmp_path: Path) -> None:
    (tmp_path / "top.yaml").write_text("'*': [common]\n")
    (tmp_path / "common.yaml").write_text("a: {{ grains.nope }}\n")
    with pytest.raises(PillarError, match=r"^pillar/common\.yaml:1: undefined in template"):
        PillarCompiler([tmp_path]).compile("m1", {})


def test_runbook_expressions_are_immutable() -> None:
    with pytest.raises(RunbookError, match="SecurityError"):
        evaluate("vars.x.append(1)", {"vars": {"x": []}})


def test_an_undefined_name_is_reported_with_its_line() -> None:
    source = "a: 1\nb: 2\nc: {{ pillar.nope }}\n"
    with pytest.raises(RenderError, match=r"^x\.yaml:3: undefined in template: .*nope"):
        render(source, name="x.yaml", context={"pillar": {}})
