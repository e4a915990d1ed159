"""Secrets never leave the minion in clear: state.apply, state.show and compile errors.

``minion/modules/state.py`` runs against a fake channel that answers pillar and file
requests as the master does; the secrets list is the pillar's ``!secret`` values.
"""

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from minion import modules
from minion.config import MinionConfig
from minion.modules import state
from minion.modules.base import Context
from minion.services.supervisor import SupervisorProvider
from saline.errors import ExecutionError
from saline.masking import MASK, Masker

SHORT = "hunter2"
LONG = "hunter2-and-more"  # contains SHORT: must be masked whole


class FakeMaster:
    """Pillar and file replies like the master's, for one minion."""

    def __init__(self, files: dict[str, str], pillar: dict[str, Any], secrets: list[str]) -> None:
        self.files = {k: v.encode() for k, v in files.items()}
        self.pillar = pillar
        self.secrets = secrets

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        if op == "pillar":
            return {"pillar": self.pillar, "secrets": self.secrets}
        data = self.files.get(fields["path"])
        if data is None:
            return {"path": fields["path"], "error": "no such file"}
        return {"path": fields["path"], "sha256": hashlib.sha256(data).hexdigest(), "data": data}


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    config = MinionConfig(id="m1", cachedir=tmp_path / "cache", pki_dir=tmp_path / "pki")
    provider = SupervisorProvider({}, config.cachedir / "services")
    yield Context(
        minion_id="m1",
        config=config,
        grains={"id": "m1"},
        services=provider,
        functions=modules.registry(),
    )


def _master(tmp_path: Path, sls: str) -> FakeMaster:
    pillar = {"db": {"password": LONG, "short": SHORT}}
    target = tmp_path / "out.conf"
    return FakeMaster(
        {"app.yaml": sls.replace("TARGET", str(target))}, pillar, secrets=[SHORT, LONG]
    )


_STATE = """
TARGET:
  file.managed:
    - contents: "password={{ pillar.db.password }} short={{ pillar.db.short }}"
"""


def _no_secret_in(value: Any) -> None:
    text = repr(value)
    assert SHORT not in text and "and-more" not in text, text


def test_show_masks_rendered_secrets(ctx: Context, tmp_path: Path) -> None:
    ctx.channel = _master(tmp_path, _STATE)  # type: ignore[assignment]
    shown = state.show(ctx, "app")
    _no_secret_in(shown)
    assert f"password={MASK} short={MASK}" in repr(shown)


def test_apply_masks_changes_comments_and_nested_values(ctx: Context, tmp_path: Path) -> None:
    ctx.channel = _master(tmp_path, _STATE)  # type: ignore[assignment]
    outcome = state.apply(ctx, "app")
    assert outcome.retcode == 0, outcome.value
    _no_secret_in(outcome.value)
    assert (tmp_path / "out.conf").read_text() == f"password={LONG} short={SHORT}"


def test_compile_errors_mask_secrets(ctx: Context, tmp_path: Path) -> None:
    broken = "{{ pillar.db.password }}:\n  nosuch.state: []\n"
    ctx.channel = _master(tmp_path, broken)  # type: ignore[assignment]
    with pytest.raises(ExecutionError) as info:
        state.show(ctx, "app")
    _no_secret_in(str(info.value))
    assert MASK in str(info.value)


_secret = st.text(alphabet="abcxyz", min_size=1, max_size=6)


@given(st.lists(_secret, min_size=1, max_size=4), st.lists(_secret | st.text(max_size=3)))
def test_no_secret_survives_masking_even_when_secrets_contain_each_other(
    secrets: list[str], parts: list[str]
) -> None:
    # texts built from the secrets themselves and each one with a longer one around it
    text = "|".join(parts + secrets + [s + t for s in secrets for t in secrets])
    masked = Masker(secrets).value({"k": [text, {text: (text,)}]})
    [flat, nested] = masked["k"]
    [(key, [inner])] = nested.items()
    for secret in secrets:
        for out in (flat, key, inner):
            assert secret not in out, (secret, out)
