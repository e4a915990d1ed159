"""The one masking walk (saline.masking), and the cases where the old copies differed.

Before issue 10 there were three: ``Masker`` (pillar secrets, by value, nested, keys too),
``redact_arguments`` (job arguments, by name) and ``chef_server._masked`` (one password, flat
fields, its own ``********`` token). Now each is a use of :class:`Masker`.
"""

from typing import Any

from minion.modules import chef_server
from minion.modules.base import Outcome
from saline.masking import MASK, Masker, is_secret_name, mask, redact_arguments

PW = "hunter2"


def test_one_token_everywhere() -> None:
    # chef_server used "********"; every return now shows the same mask
    assert chef_server.MASK == MASK == "***"


def test_chef_password_masked_in_every_field_like_everywhere_else() -> None:
    outcome = Outcome({"stdout": f"made x with {PW}", "stderr": f"{PW}{PW}"}, 1)
    argv = ["ctl", "user-create", "x", PW, f"--password={PW}"]
    masked = chef_server._masked(outcome, argv, PW)
    assert masked.retcode == 1
    assert masked.value == {
        "stdout": f"made x with {MASK}",
        "stderr": MASK * 2,  # every occurrence
        "retcode": 1,
        "argv": ["ctl", "user-create", "x", MASK, f"--password={MASK}"],
    }
    assert argv[3] == PW  # the caller's argv is left alone


def test_by_value_masks_nested_values_keys_and_longest_secret_first() -> None:
    value = {"a": [f"x{PW}-more", {f"k-{PW}": (PW, {PW})}], "n": 5, "none": None}
    assert Masker([PW, f"{PW}-more", ""]).value(value) == {
        "a": [f"x{MASK}", {f"k-{MASK}": [MASK, [MASK]]}],
        "n": 5,
        "none": None,
    }


def test_nothing_to_mask_returns_the_value_itself() -> None:
    value: dict[str, Any] = {"a": [1]}
    assert mask(value, []) is value
    assert mask(value, [""]) is value


def test_non_string_keys_are_kept() -> None:
    # a tuple key used to be turned into a list (unhashable) by the walk
    assert mask({(1, 2): PW, 3: "x"}, [PW]) == {(1, 2): MASK, 3: "x"}


def test_by_name_replaces_whole_values_at_any_depth() -> None:
    value = {
        "db": {"Password": {"nested": "p"}, "user": "u"},
        "items": ({"api_token": 1}, "plain"),
        7: "seven",
    }
    assert mask(value, by_name=True) == {
        "db": {"Password": MASK, "user": "u"},
        "items": [{"api_token": MASK}, "plain"],
        7: "seven",
    }
    # by value and by name at once: a named secret's value and the secret elsewhere
    assert mask({"password": "x", "note": f"is {PW}"}, [PW], by_name=True) == {
        "password": MASK,
        "note": f"is {MASK}",
    }


def test_secret_names() -> None:
    assert all(is_secret_name(n) for n in ("password", "DB_PASSWORD", "key", "api_token"))
    assert not any(is_secret_name(n) for n in ("keys", "monkey", "tokens", "user"))


def test_redact_arguments_by_name_and_marked() -> None:
    args, kwargs = redact_arguments(
        ["plain", {"db": {"password": "p"}}, "marked", ("t", {"secret": "s"})],
        {"key": "k", "text": "t", "marked_kw": {"a": 1}},
        marked=["2", "marked_kw"],
    )
    assert args == ["plain", {"db": {"password": MASK}}, MASK, ["t", {"secret": MASK}]]
    assert kwargs == {"key": MASK, "text": "t", "marked_kw": MASK}
